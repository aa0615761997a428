"""OAuth 2.0 for installed apps: sign-in with PKCE on a loopback redirect, and refresh.

Rules:

- Sign-in (:func:`sign_in`) is the authorization-code flow with PKCE (S256) and a
  random ``state``. The redirect goes to a one-shot HTTP server on a random port:
  ``http://127.0.0.1:PORT`` for Google, ``http://localhost:PORT`` for Microsoft
  (listening on 127.0.0.1 and, when it can, ::1). The reply is accepted by GET
  (query) and by POST (``form_post``). A reply with the wrong ``state`` fails the
  sign-in; a request without ``code`` or ``error`` (a favicon) is answered 404 and
  ignored. The browser is opened through :mod:`webbrowser` (so ``BROWSER`` drives
  it) and the address is printed either way. Nobody signing in within the timeout
  is a :class:`~agents.errors.SignInFailed`.
- Microsoft is a public client: no secret, ``offline_access`` in the scopes. Google
  "desktop" clients send their (non-confidential) secret when one is configured.
- :class:`TokenManager` hands out access tokens per (provider, account). It
  refreshes one ``refresh_margin_s`` before expiry, or when the API said 401, under
  a per-account ``asyncio.Lock`` and a per-account file lock in ``lock_dir`` (two
  daemons, or the daemon and ``daemon connect``). Inside the locks the vault is
  read again, so a token another process refreshed (and a refresh token Microsoft
  rotated) is used instead of refreshing twice.
- A refresh response's new refresh token is saved in the vault **before** the new
  access token is returned to anyone. A response without one keeps the old one.
- Token endpoint errors fall in three kinds: :class:`~agents.errors.NeedsReconnect`
  (``invalid_grant``, ``interaction_required``, AADSTS 70008, 700082, 50173, 65001,
  50076, and any other 4xx) with the provider's reason;
  :class:`~agents.errors.CloudConfigError` (``invalid_client``,
  ``unauthorized_client``, AADSTS 700025, 50011, 7000218);
  :class:`~agents.errors.CloudUnavailable` (5xx, 429, network, timeout: the stored
  token is kept).
- No token, code or verifier is ever logged, printed or put in an error message;
  :class:`TokenBundle`'s repr hides them.

One module, past 500 lines, on purpose: sign-in (PKCE, state, loopback redirect) and
refresh (locks, rotation, the three kinds of failure) share the token endpoints'
error handling.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html
import logging
import re
import secrets
import time
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from agents.cloud.settings import CloudSettings, provider_of
from agents.errors import (
    CloudConfigError,
    CloudError,
    CloudUnavailable,
    NeedsReconnect,
    SignInFailed,
)

__all__ = [
    "GOOGLE_SCOPES",
    "MICROSOFT_SCOPES",
    "AccountTokens",
    "ProviderClient",
    "TokenBundle",
    "TokenManager",
    "TokenVault",
    "account_name",
    "authorization_url",
    "classify_token_error",
    "pkce_challenge",
    "provider_client",
    "sign_in",
]

log = logging.getLogger("tether.cloud.oauth")

GOOGLE_SCOPES = ("https://www.googleapis.com/auth/gmail.readonly",)
MICROSOFT_SCOPES = ("offline_access", "User.Read", "Mail.Read", "Chat.Read")

RECONNECT_ERRORS = frozenset(
    {"invalid_grant", "interaction_required", "consent_required", "login_required"}
)
RECONNECT_AADSTS = frozenset({70008, 700082, 50173, 65001, 50076})
CONFIG_ERRORS = frozenset({"invalid_client", "unauthorized_client", "unsupported_grant_type"})
CONFIG_AADSTS = frozenset({700025, 50011, 7000218, 700016})
_AADSTS = re.compile(r"AADSTS(\d+)")
_MAX_REQUEST_BYTES = 64 * 1024
_LOCK_TIMEOUT_S = 60.0


# --- tokens --------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenBundle:
    """An access token (may be empty: unknown) with its expiry, and the refresh token."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: float  # Unix seconds; 0 = unknown (refresh before use)
    token_type: str = "Bearer"
    scope: str | None = None

    def fresh(self, now: float, margin_s: float) -> bool:
        """True when the access token is known and does not expire within ``margin_s``."""
        return bool(self.access_token) and self.expires_at - margin_s > now

    @classmethod
    def from_secret(cls, secret: Mapping[str, Any]) -> TokenBundle:
        """The bundle a ``credentials_put`` carries; ValueError naming the bad field."""
        if not isinstance(secret, Mapping):
            raise ValueError("secret must be an object with access_token and refresh_token")
        access = secret.get("access_token", "")
        refresh = secret.get("refresh_token")
        expires_at = secret.get("expires_at", 0)
        if not isinstance(access, str):
            raise ValueError("secret.access_token must be a string")
        if refresh is not None and (not isinstance(refresh, str) or not refresh):
            raise ValueError("secret.refresh_token must be a non-empty string")
        if not access and not refresh:
            raise ValueError("secret needs an access_token or a refresh_token")
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
            raise ValueError("secret.expires_at must be a number (Unix seconds)")
        token_type = secret.get("token_type") or "Bearer"
        scope = secret.get("scope")
        if not isinstance(token_type, str) or (scope is not None and not isinstance(scope, str)):
            raise ValueError("secret.token_type and secret.scope must be strings")
        return cls(access, refresh, float(expires_at), token_type, scope)

    @classmethod
    def from_response(
        cls, data: Mapping[str, Any], now: float, previous_refresh: str | None = None
    ) -> TokenBundle:
        """The bundle from a token endpoint's JSON; keeps ``previous_refresh`` if none came."""
        access = data.get("access_token")
        if not isinstance(access, str) or not access:
            raise CloudUnavailable("the token endpoint answered without an access token")
        refresh = data.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            refresh = previous_refresh
        try:
            expires_in = float(data.get("expires_in", 3600))
        except (TypeError, ValueError):
            expires_in = 3600.0
        scope = data.get("scope")
        token_type = data.get("token_type")
        return cls(
            access,
            refresh,
            now + expires_in,
            token_type if isinstance(token_type, str) and token_type else "Bearer",
            scope if isinstance(scope, str) else None,
        )


class TokenVault(Protocol):
    """Where token bundles live, per (provider, account). The daemon implements it."""

    async def load(self, provider: str, account: str) -> TokenBundle | None: ...

    async def save(self, provider: str, account: str, bundle: TokenBundle) -> None: ...


# --- providers -----------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderClient:
    """One provider's OAuth endpoints and client as configured."""

    provider: str
    auth_url: str
    token_url: str
    client_id: str
    client_secret: str | None = field(repr=False)
    scopes: tuple[str, ...]
    redirect_host: str  # 127.0.0.1 (Google) or localhost (Microsoft)


def provider_client(settings: CloudSettings, provider: str) -> ProviderClient:
    """The configured client for ``provider`` (aliases allowed); CloudConfigError if none."""
    provider = provider_of(provider)
    if provider == "google":
        if not settings.google_client_id:
            raise CloudConfigError(
                "no Google OAuth client configured: set [cloud] google_client_id "
                "(TETHER_GOOGLE_CLIENT_ID) and google_client_secret"
            )
        return ProviderClient(
            "google",
            settings.google_auth_url,
            settings.google_token_url,
            settings.google_client_id,
            settings.google_client_secret,
            GOOGLE_SCOPES,
            "127.0.0.1",
        )
    if not settings.microsoft_client_id:
        raise CloudConfigError(
            "no Microsoft OAuth client configured: set [cloud] microsoft_client_id "
            "(TETHER_MICROSOFT_CLIENT_ID)"
        )
    return ProviderClient(
        "microsoft",
        settings.microsoft_auth_url,
        settings.microsoft_token_url,
        settings.microsoft_client_id,
        None,  # public client: never a secret
        MICROSOFT_SCOPES,
        "localhost",
    )


def classify_token_error(
    provider: str, account: str, status: int, body: Mapping[str, Any] | None
) -> CloudError:
    """The error for a token endpoint's refusal (see the module rules)."""
    body = body or {}
    error = body.get("error")
    error = error if isinstance(error, str) else ""
    description = body.get("error_description")
    description = description if isinstance(description, str) else ""
    codes: set[int] = set()
    raw_codes = body.get("error_codes")
    if isinstance(raw_codes, list):
        codes.update(c for c in raw_codes if isinstance(c, int) and not isinstance(c, bool))
    codes.update(int(m) for m in _AADSTS.findall(description))
    first_line = description.strip().splitlines()[0] if description.strip() else ""
    reason = f"{error}: {first_line}" if error and first_line else error or first_line
    reason = reason[:300] or f"HTTP {status}"
    if status >= 500 or status == 429:
        return CloudUnavailable(f"the {provider} token endpoint is unavailable (HTTP {status})")
    if codes & CONFIG_AADSTS or error in CONFIG_ERRORS:
        return CloudConfigError(
            f"the {provider} OAuth client is misconfigured ({reason}); check the client id"
        )
    return NeedsReconnect(provider, account, reason)


async def _token_request(
    http: httpx.AsyncClient,
    client: ProviderClient,
    account: str,
    form: dict[str, str],
    *,
    timeout_s: float,
) -> dict[str, Any]:
    form = {**form, "client_id": client.client_id}
    if client.client_secret:
        form["client_secret"] = client.client_secret
    try:
        resp = await http.post(
            client.token_url,
            data=form,
            headers={"Accept": "application/json"},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        raise CloudUnavailable(
            f"cannot reach the {client.provider} token endpoint ({type(exc).__name__})"
        ) from None
    try:
        data = resp.json()
    except ValueError:
        data = None
    if resp.status_code != 200:
        raise classify_token_error(
            client.provider, account, resp.status_code, data if isinstance(data, dict) else None
        )
    if not isinstance(data, dict):
        raise CloudUnavailable(f"the {client.provider} token endpoint answered non-JSON")
    return data


# --- refresh -------------------------------------------------------------------------


class AccountTokens(Protocol):
    """What the HTTP client needs: a current access token, and a new one after a 401."""

    async def access_token(self) -> str: ...

    async def refreshed(self, stale: str) -> str: ...


class TokenManager:
    """Access tokens for every account, refreshed under per-account locks."""

    def __init__(
        self,
        vault: TokenVault,
        settings: CloudSettings,
        lock_dir: Path,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._vault = vault
        self._settings = settings
        self._lock_dir = Path(lock_dir)
        self._http = http
        self._clock = clock
        self._accounts: dict[tuple[str, str], _Account] = {}

    def account(self, provider: str, account: str) -> AccountTokens:
        """The token source of one account (``provider`` may be an alias)."""
        key = (provider_of(provider), account)
        found = self._accounts.get(key)
        if found is None:
            found = self._accounts[key] = _Account(self, *key)
        return found

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._settings.timeout_s)
        return self._http


class _Account:
    def __init__(self, manager: TokenManager, provider: str, account: str) -> None:
        self._m = manager
        self.provider = provider
        self.account = account
        self._lock = asyncio.Lock()
        self._bundle: TokenBundle | None = None
        digest = hashlib.sha256(f"{provider}\0{account}".encode()).hexdigest()[:16]
        self._lock_path = manager._lock_dir / f"oauth-{provider}-{digest}.lock"

    async def access_token(self) -> str:
        bundle = self._bundle
        if bundle is None:
            bundle = self._bundle = await self._m._vault.load(self.provider, self.account)
        if bundle is not None and bundle.fresh(
            self._m._clock(), self._m._settings.refresh_margin_s
        ):
            return bundle.access_token
        return await self._refresh(bundle.access_token if bundle else "")

    async def refreshed(self, stale: str) -> str:
        return await self._refresh(stale)

    async def _refresh(self, stale: str) -> str:
        margin = self._m._settings.refresh_margin_s
        async with self._lock:
            current = self._bundle
            if current is not None and current.access_token != stale:
                if current.fresh(self._m._clock(), margin):
                    return current.access_token  # another task refreshed meanwhile
            async with self._file_lock():
                bundle = await self._m._vault.load(self.provider, self.account)
                if bundle is None:
                    raise NeedsReconnect(self.provider, self.account, "not connected")
                if bundle.access_token != stale and bundle.fresh(self._m._clock(), margin):
                    self._bundle = bundle  # another process refreshed meanwhile
                    return bundle.access_token
                if not bundle.refresh_token:
                    raise NeedsReconnect(self.provider, self.account, "no refresh token stored")
                client = provider_client(self._m._settings, self.provider)
                form = {"grant_type": "refresh_token", "refresh_token": bundle.refresh_token}
                if self.provider == "microsoft":
                    form["scope"] = " ".join(client.scopes)
                data = await _token_request(
                    self._m._client(),
                    client,
                    self.account,
                    form,
                    timeout_s=self._m._settings.timeout_s,
                )
                new = TokenBundle.from_response(data, self._m._clock(), bundle.refresh_token)
                # Save first: Microsoft has rotated the refresh token; losing it is a re-sign-in.
                await self._m._vault.save(self.provider, self.account, new)
                self._bundle = new
                rotated = new.refresh_token != bundle.refresh_token
                log.info(
                    "refreshed the %s access token of %s%s",
                    self.provider,
                    self.account,
                    " (refresh token rotated and saved)" if rotated else "",
                )
                return new.access_token

    @contextlib.asynccontextmanager
    async def _file_lock(self) -> Any:
        import filelock

        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self._lock_path), timeout=_LOCK_TIMEOUT_S, thread_local=False)
        try:
            await asyncio.to_thread(lock.acquire)
        except filelock.Timeout:
            raise CloudUnavailable(
                f"another process holds the token lock of {self.account} ({self._lock_path})"
            ) from None
        try:
            yield
        finally:
            await asyncio.to_thread(lock.release)


# --- sign-in -------------------------------------------------------------------------


def pkce_verifier() -> str:
    """A PKCE code verifier: 64 URL-safe characters (RFC 7636 allows 43-128)."""
    return secrets.token_urlsafe(48)


def pkce_challenge(verifier: str) -> str:
    """The S256 challenge of ``verifier``: base64url(sha256), no padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Tether</title></head>"
    "<body style='font-family:sans-serif'><p>{}</p></body></html>"
)


class _Redirect:
    """The loopback server's state: it resolves ``result`` with the code or an error."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.result: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def consider(self, params: Mapping[str, list[str]]) -> tuple[int, str]:
        """The HTTP status and message for one request, resolving ``result`` when final."""

        def one(name: str) -> str:
            values = params.get(name) or [""]
            return values[0]

        code, error = one("code"), one("error")
        if not code and not error:
            return 404, "Waiting for the sign-in reply."
        if self.result.done():
            return 409, "This sign-in is already finished; you can close this window."
        if not secrets.compare_digest(one("state").encode(), self.state.encode()):
            self.result.set_exception(
                SignInFailed(
                    "the sign-in reply carried the wrong state (not the one this sign-in "
                    "sent); nothing was stored: run the sign-in again"
                )
            )
            return 400, "The sign-in reply did not match this sign-in. Nothing was stored."
        if error:
            description = one("error_description").strip().splitlines()
            detail = f"{error}: {description[0]}" if description else error
            self.result.set_exception(SignInFailed(f"the provider refused the sign-in ({detail})"))
            return 400, "The sign-in was refused. You can close this window."
        self.result.set_result(code)
        return 200, "Signed in to Tether. You can close this window."

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, message = 400, "Bad request."
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            split = urlsplit(target)
            params = parse_qs(split.query)
            if method == "POST":
                length = int(headers.get("content-length", "0"))
                if length > _MAX_REQUEST_BYTES:
                    raise ValueError("body too large")
                body = await asyncio.wait_for(reader.readexactly(length), 10)
                if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                    params = {**params, **parse_qs(body.decode("utf-8", "replace"))}
            if method not in ("GET", "POST") or split.path not in ("", "/"):
                status, message = 404, "Not found."
            else:
                status, message = self.consider(params)
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except OSError:
            writer.close()
            return
        payload = _PAGE.format(html.escape(message)).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 409: "Conflict"}[status]
        with contextlib.suppress(OSError):
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n"
                "Cache-Control: no-store\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        writer.close()


async def _listen(redirect: _Redirect, host: str) -> tuple[list[asyncio.Server], int]:
    """Servers on 127.0.0.1 (and ::1 for ``localhost``) on one random port."""
    first = await asyncio.start_server(redirect.handle, "127.0.0.1", 0)
    port = int(first.sockets[0].getsockname()[1])
    servers = [first]
    if host == "localhost":
        with contextlib.suppress(OSError):  # no IPv6, or the port is taken there
            servers.append(await asyncio.start_server(redirect.handle, "::1", port))
    return servers, port


def authorization_url(
    client: ProviderClient,
    redirect_uri: str,
    state: str,
    challenge: str,
    *,
    login_hint: str | None = None,
    response_mode: str | None = None,
) -> str:
    """The address the user opens to sign in."""
    params = {
        "client_id": client.client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": " ".join(client.scopes),
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if client.provider == "google":
        params.update(access_type="offline", prompt="consent")
    else:
        params["prompt"] = "select_account"
        if response_mode:
            params["response_mode"] = response_mode
    if login_hint:
        params["login_hint"] = login_hint
    sep = "&" if urlsplit(client.auth_url).query else "?"
    return f"{client.auth_url}{sep}{urlencode(params)}"


def _open_with_webbrowser(url: str) -> bool:
    try:
        return bool(webbrowser.open(url))
    except Exception:  # webbrowser.Error or a broken BROWSER command: the URL is printed
        return False


async def sign_in(
    provider: str,
    settings: CloudSettings,
    *,
    timeout_s: float = 300.0,
    login_hint: str | None = None,
    response_mode: str | None = None,
    out: Callable[[str], None] = print,
    open_browser: Callable[[str], bool] = _open_with_webbrowser,
    http: httpx.AsyncClient | None = None,
    clock: Callable[[], float] = time.time,
) -> TokenBundle:
    """Run the interactive sign-in and return the new tokens (see the module rules).

    Raises :class:`SignInFailed` (wrong state, refused, timeout),
    :class:`CloudConfigError` or :class:`CloudUnavailable`.
    """
    client = provider_client(settings, provider)
    state = secrets.token_urlsafe(24)
    verifier = pkce_verifier()
    redirect = _Redirect(state)
    servers, port = await _listen(redirect, client.redirect_host)
    redirect_uri = f"http://{client.redirect_host}:{port}"
    url = authorization_url(
        client,
        redirect_uri,
        state,
        pkce_challenge(verifier),
        login_hint=login_hint,
        response_mode=response_mode,
    )
    try:
        out(f"Sign in to your {client.provider.title()} account in the browser. If no browser")
        out(f"opened, open this address:\n\n  {url}\n")
        opener = asyncio.ensure_future(asyncio.to_thread(open_browser, url))
        try:
            code = await asyncio.wait_for(asyncio.shield(redirect.result), timeout_s)
        except TimeoutError:
            raise SignInFailed(
                f"nobody signed in within {timeout_s:g} s; nothing was stored (run it again)"
            ) from None
        finally:
            if opener.done() and not opener.cancelled() and opener.exception() is None:
                if not opener.result():
                    log.info("no browser could be opened; the address was printed")
    finally:
        for server in servers:
            server.close()
        if not redirect.result.done():
            redirect.result.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*(s.wait_closed() for s in servers))
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    if client.provider == "microsoft":
        form["scope"] = " ".join(client.scopes)
    own = http is None
    session = http or httpx.AsyncClient(timeout=settings.timeout_s)
    try:
        try:
            data = await _token_request(session, client, "", form, timeout_s=settings.timeout_s)
        except NeedsReconnect as exc:
            raise SignInFailed(f"the provider refused the sign-in code ({exc.reason})") from None
    finally:
        if own:
            await session.aclose()
    bundle = TokenBundle.from_response(data, clock())
    if not bundle.refresh_token:
        raise SignInFailed(
            f"{client.provider} returned no refresh token; the client must allow offline access"
        )
    return bundle


async def account_name(
    provider: str,
    settings: CloudSettings,
    access_token: str,
    *,
    http: httpx.AsyncClient | None = None,
) -> str:
    """The signed-in user's address: Gmail's profile, or Graph's ``me`` (mail, else UPN)."""
    provider = provider_of(provider)
    fields: tuple[str, ...]
    if provider == "google":
        url, fields = f"{settings.gmail_api_base}/users/me/profile", ("emailAddress",)
    else:
        url, fields = f"{settings.graph_api_base}/me", ("mail", "userPrincipalName")
    own = http is None
    session = http or httpx.AsyncClient(timeout=settings.timeout_s)
    try:
        resp = await session.get(url, headers={"Authorization": f"Bearer {access_token}"})
    except httpx.HTTPError as exc:
        raise CloudUnavailable(f"cannot reach the {provider} API ({type(exc).__name__})") from None
    finally:
        if own:
            await session.aclose()
    data = resp.json() if resp.status_code == 200 else {}
    for name in fields:
        value = data.get(name) if isinstance(data, dict) else None
        if isinstance(value, str) and value:
            return value
    raise SignInFailed(
        f"could not tell which {provider} account signed in (HTTP {resp.status_code}); "
        "pass --account"
    )
