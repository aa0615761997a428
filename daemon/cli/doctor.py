"""``daemon doctor``: check everything the daemon needs and say what to fix.

Rules:

- Each check gives one line: ``ok``, ``note`` (worth knowing, not wrong: the
  file fallback for secrets, autostart not enabled) or ``FAIL`` with what to do.
  Exit 0 only when no check failed, 1 otherwise.
- Checks: the three directories are writable, ``config.toml`` loads, the keyring
  backend (or the 0600 file fallback, said plainly), the token file's mode, the
  port (free, or our daemon running there and answering), the LLM (configured,
  and one tiny real call through the product's adapter), cloud accounts (a stored
  refresh token, and one real refresh at the provider unless ``--no-refresh``; a
  refused one marks the account "needs reconnect" as the next sync would), autostart,
  agents in ``agents.toml`` that are rejected.
- litellm is imported only by the LLM check (through ``agents.llm``), and only
  when a model is configured.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import stat
import tempfile
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from daemon.config import Config
from daemon.errors import ConfigError, DaemonError
from daemon.paths import Paths
from daemon.runtime import read_runtime

from .common import env_token, environment, fetch_status, load, load_paths

if TYPE_CHECKING:
    from daemon.accounts import Accounts

__all__ = ["Checks", "add_arguments", "run"]

LLM_CHECK_TIMEOUT_S = 30.0


@dataclass
class Checks:
    """The results so far; each line is printed as soon as its check is done."""

    lines: list[str] = field(default_factory=list)
    failed: int = 0
    echo: bool = True

    def _add(self, line: str) -> None:
        self.lines.append(line)
        if self.echo:
            print(line, flush=True)

    def ok(self, what: str) -> None:
        self._add(f"ok    {what}")

    def note(self, what: str) -> None:
        self._add(f"note  {what}")

    def fail(self, what: str, fix: str) -> None:
        self.failed += 1
        self._add(f"FAIL  {what}\n      fix: {fix}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-llm-call", action="store_true", help="check the model's settings only")
    p.add_argument(
        "--no-refresh",
        action="store_true",
        help="check that cloud accounts have tokens, without renewing them at the provider",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("tether").addHandler(logging.NullHandler())  # our lines say it all
    paths = load_paths()
    checks = Checks()
    _check_dirs(paths, checks)
    try:
        _, config = load()
    except ConfigError as exc:
        checks.fail(f"config: {exc}", f"edit {paths.config_toml} (or the variable named)")
        config = None
    else:
        checks.ok(
            f"config: {paths.config_toml}"
            + ("" if paths.config_toml.exists() else " (none; defaults)")
        )
    _check_keyring(paths, checks)
    _check_token(paths, checks)
    if config is not None:
        _check_port(paths, config, checks)
        _check_llm(paths, config, checks, call=not args.no_llm_call)
    _check_agents(paths, checks)
    _check_accounts(paths, config, checks, refresh=not args.no_refresh)
    _check_autostart(paths, checks)
    if checks.failed:
        print(f"{checks.failed} problem(s) found")
        return 1
    print("everything looks right")
    return 0


def _check_dirs(paths: Paths, checks: Checks) -> None:
    try:
        paths.ensure()
    except OSError as exc:
        checks.fail(f"directories: cannot create them: {exc}", "check the permissions of your home")
        return
    for name, directory in (
        ("config", paths.config_dir),
        ("state", paths.state_dir),
        ("log", paths.log_dir),
    ):
        try:
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-"):
                pass
        except OSError as exc:
            checks.fail(
                f"{name} dir {directory} is not writable ({exc.strerror})",
                f"make it yours: chmod u+rwx '{directory}'",
            )
        else:
            checks.ok(f"{name} dir {directory}")


def _check_keyring(paths: Paths, checks: Checks) -> None:
    from daemon.secrets import SecretStore

    store = SecretStore(paths)
    try:
        fallback = store.is_fallback()
        name = store.backend_name()
    except Exception as exc:  # a broken keyring plugin must not stop the doctor
        checks.fail(f"keyring: {type(exc).__name__}: {exc}", "fix or remove the keyring plugin")
        return
    if fallback:
        checks.note(
            f"keyring: no OS keyring here; secrets go to {paths.secrets_file} (mode 0600). "
            "Install and unlock a Secret Service (e.g. gnome-keyring) to use the OS keyring"
        )
    else:
        checks.ok(f"keyring: {name}")


def _check_token(paths: Paths, checks: Checks) -> None:
    if env_token():
        checks.ok("pairing token: from the TETHER_TOKEN variable")
        return
    token = paths.token_file
    if not token.exists():
        checks.note(f"pairing token: {token} does not exist yet (the first `daemon run` makes it)")
        return
    if os.name == "posix":
        mode = stat.S_IMODE(token.stat().st_mode)
        if mode & 0o077:
            checks.fail(
                f"pairing token {token} is readable by others (mode {mode:o})",
                f"chmod 600 '{token}' and then `daemon pair --rotate`",
            )
            return
    checks.ok(f"pairing token: {token}")


def _check_port(paths: Paths, config: Config, checks: Checks) -> None:
    info = read_runtime(paths)
    if info is not None:
        try:
            status = asyncio.run(fetch_status(paths))
        except DaemonError as exc:
            checks.fail(
                f"daemon: pid {info.pid} (port {info.port}) does not answer: {exc}",
                "stop it and start again: daemon run",
            )
            return
        agents = len(status.agents)
        checks.ok(f"daemon: running, pid {info.pid}, port {info.port}, {agents} agent(s)")
        rejected = getattr(status, "rejected_agents", None) or []
        for bad in rejected:
            checks.fail(
                f"agent {bad.id or '(no id)'} rejected by the running daemon: {'; '.join(bad.errors)}",
                f"fix it in {paths.agents_toml} (the daemon reloads it on its own)",
            )
        return
    if config.port == 0:
        checks.ok("port: 0 (the OS picks a free one at start)")
        return
    with socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET) as probe:
        try:
            probe.bind((config.host, config.port))
        except OSError as exc:
            checks.fail(
                f"port {config.port} on {config.host} is taken by another program ({exc.strerror})",
                f"set port = <free port> in {paths.config_toml}, or `daemon run --port 0`",
            )
            return
    checks.ok(f"port {config.port} on {config.host} is free (daemon not running)")


def _check_llm(paths: Paths, config: Config, checks: Checks, *, call: bool) -> None:
    from agents.errors import LLMNotConfigured
    from daemon.llm import LLMFactory, stored_api_key
    from daemon.secrets import SecretStore

    secrets = SecretStore(paths)
    factory = LLMFactory(config.llm, stored_key=lambda: stored_api_key(secrets))
    try:
        settings = factory.settings()
    except LLMNotConfigured:
        checks.fail(
            "LLM: no model configured (agent runs and chat will fail)",
            'add `[llm]` with `model = "openai/gpt-4o-mini"` (and `api_key`) or '
            '`model = "ollama/llama3.1"` to config.toml, or set TETHER_MODEL',
        )
        return
    settings = replace(
        settings, max_attempts=1, timeout_s=min(settings.timeout_s, LLM_CHECK_TIMEOUT_S)
    )
    where = f"{settings.model}" + (f" at {settings.api_base}" if settings.api_base else "")
    if not call:
        checks.ok(f"LLM: {where} (not called: --no-llm-call)")
        return
    from agents.errors import LLMError
    from agents.llm import LiteLLM

    llm = LiteLLM(settings)
    messages = [{"role": "user", "content": "Reply with the single word: ok"}]
    try:
        reply = asyncio.run(
            asyncio.wait_for(llm.complete(messages, max_tokens=5), LLM_CHECK_TIMEOUT_S)
        )
    except LLMError as exc:
        checks.fail(
            f"LLM: {where} did not answer: {exc}",
            "check [llm] model, api_base and api_key in config.toml (or TETHER_MODEL, "
            "TETHER_API_BASE, TETHER_API_KEY) and that the server is up",
        )
        return
    except TimeoutError:
        checks.fail(
            f"LLM: {where} did not answer within {LLM_CHECK_TIMEOUT_S:.0f} s",
            "check that the model server is up and api_base is right",
        )
        return
    checks.ok(f"LLM: {where} answered ({reply.usage.total_tokens} tokens)")


def _check_agents(paths: Paths, checks: Checks) -> None:
    from daemon.agent_configs import load_agents_toml

    if not paths.agents_toml.exists():
        checks.ok("agents.toml: none (agents come from the desktop app)")
        return
    try:
        accepted, rejected = load_agents_toml(paths.agents_toml, protected=paths.protected())
    except ConfigError as exc:
        checks.fail(f"agents.toml: {exc}", f"fix {paths.agents_toml}")
        return
    for bad in rejected:
        checks.fail(
            f"agents.toml: agent {bad.id or '(no id)'} is rejected: {'; '.join(bad.errors)}",
            f"fix it in {paths.agents_toml}; check with `daemon agents validate {paths.agents_toml}`",
        )
    checks.ok(f"agents.toml: {len(accepted)} valid agent(s)")


def _check_accounts(
    paths: Paths, config: Config | None, checks: Checks, *, refresh: bool = True
) -> None:
    """Each connected account is not waiting for a new sign-in, has a refresh token,
    and (unless ``refresh`` is off) that token still renews its access: one real
    refresh at the provider's token endpoint, through the daemon's own token manager
    (its file lock and its saving of a rotated refresh token included)."""
    from daemon.accounts import Accounts

    try:
        accounts = Accounts(paths)
        states = accounts.list()
    except Exception as exc:  # a corrupt accounts.json must not stop the doctor
        checks.fail(f"cloud accounts: cannot read them: {exc}", "run `daemon accounts` for details")
        return
    if not states:
        checks.ok("cloud accounts: none connected (connect one with: daemon connect google)")
        return
    renewable = []
    for state in states:
        who = f"cloud account {state.provider} {state.account}"
        reconnect = f"daemon connect {state.provider} --account {state.account}"
        if state.state == "needs_reconnect":
            checks.fail(f"{who} needs a new sign-in ({state.reason or 'refused'})", reconnect)
            continue
        tokens = accounts.load_tokens(state.provider, state.account)
        if tokens is None or not tokens.refresh_token:
            checks.fail(
                f"{who} has no refresh token stored (it cannot renew its access)", reconnect
            )
        elif not refresh or config is None:
            checks.ok(f"{who}: connected, refresh token stored (not tried)")
        else:
            renewable.append((state.provider, state.account, tokens.access_token))
    if renewable and config is not None:
        for (provider, account, _), outcome in zip(
            renewable, asyncio.run(_refresh(paths, config, accounts, renewable)), strict=True
        ):
            _report_refresh(accounts, provider, account, outcome, checks)


async def _refresh(
    paths: Paths, config: Config, accounts: Accounts, renewable: list[tuple[str, str, str]]
) -> list[BaseException | None]:
    """Refresh each account's access once; None or the exception, in order."""
    from agents.cloud.oauth import TokenManager
    from daemon.accounts import cloud_settings

    manager = TokenManager(accounts.vault, cloud_settings(config.cloud), paths.state_dir)
    outcomes: list[BaseException | None] = []
    try:
        for provider, account, access_token in renewable:
            try:
                await manager.account(provider, account).refreshed(access_token)
            except Exception as exc:  # reported by _report_refresh, one line each
                outcomes.append(exc)
            else:
                outcomes.append(None)
    finally:
        await manager.aclose()
    return outcomes


def _report_refresh(
    accounts: Accounts, provider: str, account: str, outcome: BaseException | None, checks: Checks
) -> None:
    from agents.errors import CloudConfigError, CloudUnavailable, NeedsReconnect

    who = f"cloud account {provider} {account}"
    if outcome is None:
        checks.ok(f"{who}: connected, its refresh token renewed the access just now")
    elif isinstance(outcome, NeedsReconnect):
        # What the next sync would find: say it in `daemon status` and `accounts` too.
        accounts.mark_needs_reconnect(provider, account, outcome.reason)
        checks.fail(
            f"{who}: the provider refused its refresh token ({outcome.reason})",
            f"daemon connect {provider} --account {account}",
        )
    elif isinstance(outcome, CloudConfigError):
        checks.fail(f"{who}: {outcome}", "set the client id in the [cloud] table of config.toml")
    elif isinstance(outcome, CloudUnavailable):
        checks.fail(
            f"{who}: could not renew its access: {outcome}",
            "check the network connection and try `daemon doctor` again later",
        )
    else:
        checks.fail(
            f"{who}: could not renew its access: {type(outcome).__name__}: {outcome}",
            "see `daemon logs` and try again; if it persists, reconnect the account",
        )


def _check_autostart(paths: Paths, checks: Checks) -> None:
    from .autostart import Host, status

    report = status(Host.current(paths, environment()))
    first = report.lines[0] if report.lines else "autostart: unknown"
    if report.code == 0:
        checks.ok(first)
    elif "not enabled" in first:
        checks.note(first)
    else:
        checks.fail(
            " ".join(ln.strip() for ln in report.lines), "run `daemon autostart enable` again"
        )
