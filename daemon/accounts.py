"""Cloud accounts on the daemon side: their tokens, and what the user can see about them.

Rules:

- :class:`DaemonVault` is the :class:`~agents.cloud.oauth.TokenVault` the cloud
  agents get. The refresh token (with scope and token type) lives in the keyring
  through :class:`~daemon.secrets.SecretStore` under ``oauth:<provider>:<account>``
  (``#`` in an account is written ``%23``: the store reserves it). Access tokens
  live in this process's memory only; a new process refreshes once. Every token
  is registered with the log redaction filter.
- Per-account bookkeeping (connected / needs reconnect and why / throttled until /
  last successful sync / messages taken in) is in ``<state dir>/accounts.json``
  (mode 0600, atomic replace, a cross-process file lock around read-modify-write).
  It never holds a token. It also lists the accounts, which a keyring cannot.
- Providers are ``google`` and ``microsoft``; ``gmail`` and ``outlook``/``teams``
  are accepted as aliases everywhere (:func:`agents.cloud.settings.provider_of`).
- :class:`AccountBook` is what a cloud run tells about its account
  (:class:`~agents.cloud.source.AccountEvents`): needs reconnect, throttled until,
  a successful sync and the messages it took in.
- Methods are synchronous (keyring and file I/O): call them from a thread in the
  event loop, except the vault's, which are async and do that themselves.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agents.cloud.oauth import TokenBundle
from agents.cloud.settings import CloudSettings, provider_of
from daemon.config import CloudConfig
from daemon.errors import ConfigError
from daemon.logs import register_secret
from daemon.paths import Paths, write_private_file
from daemon.secrets import SecretStore

__all__ = ["AccountBook", "AccountState", "Accounts", "DaemonVault", "cloud_settings"]

FILE_VERSION = 1
LOCK_TIMEOUT_S = 10.0
STATES = ("connected", "needs_reconnect")


def cloud_settings(config: CloudConfig) -> CloudSettings:
    """The agents-side settings from the ``[cloud]`` table."""
    return CloudSettings(
        gmail_api_base=config.gmail_api_base,
        graph_api_base=config.graph_api_base,
        google_auth_url=config.google_auth_url,
        google_token_url=config.google_token_url,
        microsoft_auth_url=config.microsoft_auth_url,
        microsoft_token_url=config.microsoft_token_url,
        google_client_id=config.google_client_id,
        google_client_secret=config.google_client_secret,
        microsoft_client_id=config.microsoft_client_id,
        timeout_s=config.timeout_s,
    )


def secret_key(provider: str, account: str) -> str:
    return f"oauth:{provider_of(provider)}:{account.replace('%', '%25').replace('#', '%23')}"


@dataclass(frozen=True)
class AccountState:
    """What ``daemon accounts`` and ``status`` show about one account. No tokens."""

    provider: str
    account: str
    state: str = "connected"  # connected | needs_reconnect
    reason: str | None = None
    throttled_until: float | None = None  # Unix s
    last_sync: float | None = None  # Unix s of the last successful sync
    messages_taken: int = 0
    connected_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Accounts:
    """The connected accounts: credentials in the keyring, bookkeeping in a JSON file."""

    def __init__(self, paths: Paths, secrets: SecretStore | None = None) -> None:
        self._paths = paths
        self._secrets = secrets or SecretStore(paths)
        self._lock = threading.RLock()
        self.vault = DaemonVault(self)
        self._access: dict[tuple[str, str], tuple[str, float]] = {}

    @property
    def file(self) -> Path:
        return self._paths.state_dir / "accounts.json"

    # -- credentials -------------------------------------------------------------------

    def put_credentials(
        self, provider: str, account: str, secret: Mapping[str, Any] | str
    ) -> AccountState:
        """Store a ``credentials_put`` bundle; ValueError naming what is wrong with it."""
        provider = provider_of(provider)
        if not isinstance(account, str) or not account.strip():
            raise ValueError("account must be a non-empty string")
        if isinstance(secret, str):
            try:
                secret = json.loads(secret)
            except ValueError:
                raise ValueError("secret must be a JSON object of tokens") from None
        if not isinstance(secret, Mapping):
            raise ValueError("secret must be an object with access_token and refresh_token")
        bundle = TokenBundle.from_secret(secret)
        self.store_tokens(provider, account.strip(), bundle)
        return self.get(provider, account.strip()) or AccountState(provider, account.strip())

    def store_tokens(self, provider: str, account: str, bundle: TokenBundle) -> None:
        """Save a bundle (refresh token to the keyring first) and mark the account connected."""
        provider = provider_of(provider)
        register_secret(bundle.access_token)
        register_secret(bundle.refresh_token)
        stored = {
            "refresh_token": bundle.refresh_token,
            "token_type": bundle.token_type,
            "scope": bundle.scope,
        }
        self._secrets.set(secret_key(provider, account), json.dumps(stored))
        with self._lock:
            self._access[(provider, account)] = (bundle.access_token, bundle.expires_at)
        now = time.time()

        def connected(state: AccountState | None) -> AccountState:
            base = state or AccountState(provider, account, connected_at=now)
            return AccountState(
                provider,
                account,
                "connected",
                None,
                base.throttled_until,
                base.last_sync,
                base.messages_taken,
                base.connected_at or now,
            )

        self._update(provider, account, connected)

    def load_tokens(self, provider: str, account: str) -> TokenBundle | None:
        provider = provider_of(provider)
        raw = self._secrets.get(secret_key(provider, account))
        if raw is None:
            return None
        try:
            stored = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(stored, dict):
            return None
        refresh = stored.get("refresh_token")
        with self._lock:
            access, expires_at = self._access.get((provider, account), ("", 0.0))
        register_secret(access)
        return TokenBundle(
            access,
            refresh if isinstance(refresh, str) and refresh else None,
            expires_at,
            str(stored.get("token_type") or "Bearer"),
            stored.get("scope") if isinstance(stored.get("scope"), str) else None,
        )

    # -- bookkeeping -------------------------------------------------------------------

    def list(self) -> list[AccountState]:
        return sorted(self._load().values(), key=lambda s: (s.provider, s.account))

    def get(self, provider: str, account: str) -> AccountState | None:
        return self._load().get(f"{provider_of(provider)}:{account}")

    def find(self, account: str, provider: str | None = None) -> builtins.list[AccountState]:
        """Accounts named ``account`` (of ``provider`` when given)."""
        wanted = provider_of(provider) if provider else None
        return [s for s in self.list() if s.account == account and wanted in (None, s.provider)]

    def remove(self, provider: str, account: str) -> bool:
        """Forget the account's tokens and bookkeeping. True if it was known."""
        provider = provider_of(provider)
        self._secrets.delete(secret_key(provider, account))
        with self._lock:
            self._access.pop((provider, account), None)
        return self._update(provider, account, lambda _: None)

    def mark_needs_reconnect(self, provider: str, account: str, reason: str) -> None:
        self._change(provider, account, state="needs_reconnect", reason=reason)

    def mark_throttled(self, provider: str, account: str, until: float) -> None:
        self._change(provider, account, throttled_until=until)

    def record_sync(
        self, provider: str, account: str, messages: int, at: float | None = None
    ) -> None:
        """A successful sync that took ``messages`` in: clears throttling and reconnect."""

        def apply(state: AccountState | None) -> AccountState:
            base = state or AccountState(provider_of(provider), account)
            return AccountState(
                base.provider,
                account,
                "connected",
                None,
                None,
                at if at is not None else time.time(),
                base.messages_taken + max(0, messages),
                base.connected_at,
            )

        self._update(provider, account, apply)

    def _change(self, provider: str, account: str, **changes: Any) -> None:
        def apply(state: AccountState | None) -> AccountState:
            base = state or AccountState(provider_of(provider), account)
            return AccountState(**{**base.to_dict(), **changes})

        self._update(provider, account, apply)

    # -- the file ----------------------------------------------------------------------

    def _load(self) -> dict[str, AccountState]:
        try:
            raw = json.loads(self.file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{self.file}: accounts file is unreadable ({type(exc).__name__}); "
                "move it aside and connect the accounts again"
            ) from None
        out: dict[str, AccountState] = {}
        entries = raw.get("accounts") if isinstance(raw, dict) else None
        for key, value in (entries or {}).items():
            if not isinstance(value, dict):
                continue
            try:
                out[key] = AccountState(**value)
            except TypeError:
                continue  # an entry written by a newer version: skip it
        return out

    def _update(self, provider: str, account: str, apply: Any) -> bool:
        import filelock

        provider = provider_of(provider)
        key = f"{provider}:{account}"
        self._paths.state_dir.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.file) + ".lock", timeout=LOCK_TIMEOUT_S)
        try:
            with self._lock, lock:
                entries = self._load()
                existed = key in entries
                new = apply(entries.get(key))
                if new is None:
                    if not existed:
                        return False
                    del entries[key]
                else:
                    entries[key] = new
                payload = {
                    "version": FILE_VERSION,
                    "accounts": {k: v.to_dict() for k, v in sorted(entries.items())},
                }
                write_private_file(self.file, (json.dumps(payload, indent=2) + "\n").encode())
                return existed
        except filelock.Timeout:
            raise ConfigError(f"{self.file} is locked by another process; try again") from None


class DaemonVault:
    """The TokenVault over :class:`Accounts` (keyring + memory); async via threads."""

    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    async def load(self, provider: str, account: str) -> TokenBundle | None:
        return await asyncio.to_thread(self._accounts.load_tokens, provider, account)

    async def save(self, provider: str, account: str, bundle: TokenBundle) -> None:
        await asyncio.to_thread(self._accounts.store_tokens, provider, account, bundle)


class AccountBook:
    """The cloud runs' :class:`~agents.cloud.source.AccountEvents` over :class:`Accounts`."""

    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    async def needs_reconnect(self, provider: str, account: str, reason: str) -> None:
        await asyncio.to_thread(self._accounts.mark_needs_reconnect, provider, account, reason)

    async def throttled(self, provider: str, account: str, until: float) -> None:
        await asyncio.to_thread(self._accounts.mark_throttled, provider, account, until)

    async def synced(self, provider: str, account: str, messages: int) -> None:
        await asyncio.to_thread(self._accounts.record_sync, provider, account, messages)
