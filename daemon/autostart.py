"""Autostart files and commands, as data: the systemd unit, the LaunchAgent, the Run value.

Rules (operations.md "Autostart and packaging"):

- Pure functions only: every generator takes what it needs (the command, paths,
  the uid) and returns text, bytes or an argv list. Writing files and running
  ``systemctl``/``launchctl``/``reg`` is ``daemon.cli.autostart``'s job.
- The command points at the executable actually running: the frozen build's own
  binary, or ``<python> -m daemon run`` for a venv or pipx install (the venv's
  ``python`` path as invoked, not resolved: resolving a venv's symlink would lose
  the venv).
- Settings come from ``config.toml`` at start: no ``TETHER_MODEL``/``TETHER_API_KEY``
  or other setting is written into a unit. ``TETHER_HOME`` is the one exception:
  it says *which* ``config.toml`` to read, so it is kept when it was set.
- Linux: ``Restart=on-failure``; ``systemctl --user reload tether`` sends SIGHUP
  (the daemon re-reads ``config.toml`` and ``agents.toml``). macOS: ``RunAtLoad`` and ``KeepAlive`` on failure
  (``SuccessfulExit = false``). Windows: the per-user ``Run`` value ``Tether``.
"""

from __future__ import annotations

import os
import plistlib
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "LAUNCHD_LABEL",
    "SYSTEMD_UNIT_NAME",
    "WINDOWS_RUN_KEY",
    "WINDOWS_VALUE_NAME",
    "baked_env",
    "launch_command",
    "launchctl_disable",
    "launchctl_enable",
    "launchd_plist",
    "launchd_plist_path",
    "systemd_quote",
    "systemd_unit",
    "systemd_unit_dir",
    "windows_reg_add",
    "windows_reg_delete",
    "windows_reg_query",
    "windows_run_value",
]

SYSTEMD_UNIT_NAME = "tether.service"
LAUNCHD_LABEL = "dev.tether.daemon"
WINDOWS_RUN_KEY = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run"
WINDOWS_VALUE_NAME = "Tether"
MARKER = "Written by `daemon autostart enable`; remove it with `daemon autostart disable`."


def launch_command(executable: str, *, frozen: bool) -> list[str]:
    """The argv that starts ``daemon run`` with the running install."""
    exe = os.path.abspath(executable)  # absolute, symlinks kept (a venv's python is one)
    if frozen:
        return [exe, "run"]
    return [exe, "-m", "daemon", "run"]


def baked_env(tether_home: Path | None) -> dict[str, str]:
    """What goes into the autostart entry's environment: the ``TETHER_HOME`` in use, if
    any (it says which ``config.toml`` to read), and nothing else."""
    from daemon.config import HOME_VAR

    return {HOME_VAR: str(tether_home)} if tether_home is not None else {}


# --- Linux: systemd --user ----------------------------------------------------------


def systemd_unit_dir(env: Mapping[str, str], home: Path) -> Path:
    """``$XDG_CONFIG_HOME/systemd/user`` (``~/.config/systemd/user`` by default)."""
    base = env.get("XDG_CONFIG_HOME", "").strip()
    return (Path(base) if base else home / ".config") / "systemd" / "user"


def systemd_quote(arg: str) -> str:
    """One word of ``ExecStart=``: ``%`` specifiers and ``$`` expansion escaped, and
    double quotes (with C escapes) around words that need them."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and not any(c in text for c in " \t\"'\\;"):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def systemd_unit(command: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The ``tether.service`` user unit that runs ``command``."""
    lines = [
        f"# {MARKER}",
        "[Unit]",
        "Description=Tether agent daemon (desktop app companion)",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(systemd_quote(a) for a in command),
    ]
    for key, value in sorted((env or {}).items()):
        lines.append("Environment=" + systemd_quote(f"{key}={value}"))
    lines += [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5",
        "# The daemon binds loopback only; it needs no privileges.",
        "NoNewPrivileges=true",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


# --- macOS: LaunchAgent ---------------------------------------------------------------


def launchd_plist_path(home: Path) -> Path:
    return home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"


def launchd_plist(
    command: Sequence[str], *, log_file: Path, env: Mapping[str, str] | None = None
) -> bytes:
    """The LaunchAgent: start at login, restart only after a failure."""
    plist: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(command),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Background",
        "StandardErrorPath": str(log_file),
    }
    if env:
        plist["EnvironmentVariables"] = dict(sorted(env.items()))
    return plistlib.dumps(plist, sort_keys=False)


def launchctl_enable(uid: int, plist_path: Path) -> list[str]:
    return ["launchctl", "bootstrap", f"gui/{uid}", str(plist_path)]


def launchctl_disable(uid: int) -> list[str]:
    return ["launchctl", "bootout", f"gui/{uid}/{LAUNCHD_LABEL}"]


# --- Windows: the per-user Run value ----------------------------------------------------


def windows_run_value(command: Sequence[str]) -> str:
    """The ``Run`` value's data: the command line, quoted the Windows way."""
    return subprocess.list2cmdline(list(command))


def windows_reg_add(command: Sequence[str]) -> list[str]:
    value = windows_run_value(command)
    return [
        "reg",
        "add",
        WINDOWS_RUN_KEY,
        "/v",
        WINDOWS_VALUE_NAME,
        "/t",
        "REG_SZ",
        "/d",
        value,
        "/f",
    ]


def windows_reg_delete() -> list[str]:
    return ["reg", "delete", WINDOWS_RUN_KEY, "/v", WINDOWS_VALUE_NAME, "/f"]


def windows_reg_query() -> list[str]:
    return ["reg", "query", WINDOWS_RUN_KEY, "/v", WINDOWS_VALUE_NAME]
