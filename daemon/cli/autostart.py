"""``daemon autostart enable|disable|status``: start with the user's session (opt-in).

Rules:

- Nothing registers without this verb; nothing re-registers on upgrade (``enable``
  writes what the running install needs at that moment; run it again after moving
  the install).
- The files and commands come from :mod:`daemon.autostart` (pure); this module
  writes, removes and runs them through a :data:`Runner`, so tests inject one and
  never touch the real user's service manager.
- Linux: the unit goes to ``$XDG_CONFIG_HOME/systemd/user/tether.service``;
  ``systemctl --user daemon-reload`` and ``enable --now`` run only when the user's
  systemd is reachable (its private socket under ``$XDG_RUNTIME_DIR``); otherwise
  the unit is written and the output says what to run.
- ``disable`` really removes: the unit/plist file or the ``Run`` value.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon import autostart as gen
from daemon.paths import Paths

from .common import environment, load_paths

__all__ = ["Host", "Report", "add_arguments", "disable", "enable", "run", "status"]

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a service-manager command; a missing program is exit code 127."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(list(argv), 127, "", str(exc))
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(argv), 124, "", "timed out after 30 s")


@dataclass
class Host:
    """Where autostart is registered: the OS, the user's home and environment, and
    how commands run. :meth:`current` is this process; tests build their own."""

    platform: str
    env: Mapping[str, str]
    home: Path
    uid: int
    command: list[str]
    paths: Paths
    run: Runner = run_command
    which: Callable[[str], str | None] = shutil.which
    tether_home: Path | None = None  # set when the paths come from TETHER_HOME

    @classmethod
    def current(cls, paths: Paths, env: Mapping[str, str]) -> Host:
        executable = sys.executable
        frozen = bool(getattr(sys, "frozen", False))
        if sys.platform == "win32" and not frozen:
            gui = Path(executable).with_name("pythonw.exe")  # no console window at login
            if gui.exists():
                executable = str(gui)
        home = paths.config_dir.parent
        moved = paths == Paths.under(home) and paths != Paths.default()
        return cls(
            platform=sys.platform,
            env=dict(env),
            home=Path.home(),
            uid=os.getuid() if hasattr(os, "getuid") else 0,
            command=gen.launch_command(executable, frozen=frozen),
            paths=paths,
            tether_home=home if moved else None,
        )

    @property
    def kind(self) -> str:
        if self.platform.startswith("linux"):
            return "systemd"
        if self.platform == "darwin":
            return "launchd"
        if self.platform == "win32":
            return "windows"
        return "unsupported"

    @property
    def unit_path(self) -> Path:
        return gen.systemd_unit_dir(self.env, self.home) / gen.SYSTEMD_UNIT_NAME

    @property
    def plist_path(self) -> Path:
        return gen.launchd_plist_path(self.home)

    def systemd_reachable(self) -> bool:
        runtime = self.env.get("XDG_RUNTIME_DIR", "").strip()
        if not runtime or self.which("systemctl") is None:
            return False
        return (Path(runtime) / "systemd" / "private").exists()


@dataclass
class Report:
    """What a verb did: lines for the user and the exit code."""

    code: int = 0
    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)

    def fail(self, line: str) -> None:
        self.lines.append(line)
        self.code = 1


def _systemctl(host: Host, report: Report, *args: str) -> bool:
    argv = ["systemctl", "--user", *args]
    done = host.run(argv)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        report.fail(f"`{' '.join(argv)}` failed: {detail[-1] if detail else done.returncode}")
        return False
    return True


def _model_note(host: Host, report: Report) -> None:
    """At login only config.toml counts: say so when it sets no model."""
    from daemon.config import load_config
    from daemon.errors import ConfigError

    try:
        config = load_config(host.paths, {})
    except ConfigError as exc:
        report.say(f"warning: the daemon will not start with this config.toml: {exc}")
        return
    if not config.llm.model:
        report.say(
            f"note: {host.paths.config_toml} sets no model, so runs started at login fail; "
            'add `[llm]` with `model = "..."` there (see `daemon doctor`)'
        )


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _env_note(host: Host, report: Report) -> None:
    """Settings this shell's variables change do not apply at login: name them."""
    from daemon.config import load_config
    from daemon.errors import ConfigError

    try:
        with_env = _flat(load_config(host.paths, host.env).model_dump())
        file_only = _flat(load_config(host.paths, {}).model_dump())
    except ConfigError:
        return  # _model_note says what is wrong with the file
    changed = sorted(k for k in with_env if with_env[k] != file_only.get(k))
    if changed:
        report.say(
            f"note: variables in this shell set {', '.join(changed)}, which will not apply at "
            f"login; autostart reads settings from {host.paths.config_toml}"
        )


def enable(host: Host) -> Report:
    report = Report()
    env = gen.baked_env(host.tether_home)
    if host.kind == "systemd":
        path = host.unit_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(gen.systemd_unit(host.command, env), encoding="utf-8")
        report.say(f"wrote {path}")
        report.say(f"it runs: {' '.join(host.command)}")
        if host.systemd_reachable():
            if _systemctl(host, report, "daemon-reload") and _systemctl(
                host, report, "enable", "--now", gen.SYSTEMD_UNIT_NAME
            ):
                report.say("enabled and started: tether starts with your session")
        else:
            report.say(
                "systemd --user is not reachable from here (no user session bus); to start it "
                f"now and at every login run: systemctl --user daemon-reload && "
                f"systemctl --user enable --now {gen.SYSTEMD_UNIT_NAME}"
            )
    elif host.kind == "launchd":
        path = host.plist_path
        path.parent.mkdir(parents=True, exist_ok=True)
        log_file = host.paths.log_dir / "launchd.log"
        path.write_bytes(gen.launchd_plist(host.command, log_file=log_file, env=env))
        report.say(f"wrote {path}")
        host.run(gen.launchctl_disable(host.uid))  # not loaded yet is fine
        done = host.run(gen.launchctl_enable(host.uid, path))
        if done.returncode != 0:
            report.fail(
                f"launchctl could not load it ({(done.stderr or '').strip()}); "
                f"log out and in, or run: {' '.join(gen.launchctl_enable(host.uid, path))}"
            )
        else:
            report.say("loaded: tether starts at every login")
    elif host.kind == "windows":
        done = host.run(gen.windows_reg_add(host.command))
        if done.returncode != 0:
            report.fail(f"could not write the Run value: {(done.stderr or '').strip()}")
        else:
            report.say(f"added {gen.WINDOWS_RUN_KEY}\\{gen.WINDOWS_VALUE_NAME}")
            report.say("tether starts at your next sign-in")
        if env:
            report.say("note: TETHER_HOME is not carried by the Run value; set it for your user")
    else:
        report.fail(f"autostart is not supported on {host.platform}; start `daemon run` yourself")
        return report
    _env_note(host, report)
    _model_note(host, report)
    return report


def disable(host: Host) -> Report:
    report = Report()
    if host.kind == "systemd":
        path = host.unit_path
        if host.systemd_reachable():
            _systemctl(host, report, "disable", "--now", gen.SYSTEMD_UNIT_NAME)
        if path.exists():
            path.unlink()
            report.say(f"removed {path}")
        else:
            report.say(f"autostart was not enabled ({path} does not exist)")
        if host.systemd_reachable():
            _systemctl(host, report, "daemon-reload")
    elif host.kind == "launchd":
        path = host.plist_path
        host.run(gen.launchctl_disable(host.uid))
        if path.exists():
            path.unlink()
            report.say(f"removed {path}")
        else:
            report.say(f"autostart was not enabled ({path} does not exist)")
    elif host.kind == "windows":
        done = host.run(gen.windows_reg_delete())
        if done.returncode == 0:
            report.say(f"removed {gen.WINDOWS_RUN_KEY}\\{gen.WINDOWS_VALUE_NAME}")
        else:
            report.say("autostart was not enabled (no Run value)")
    else:
        report.fail(f"autostart is not supported on {host.platform}")
    return report


def status(host: Host) -> Report:
    """Enabled or not, where, and whether it still points at an existing executable.
    Exit code 0 when enabled and sound, 1 when not enabled or broken."""
    report = Report()
    if host.kind == "systemd":
        path = host.unit_path
        if not path.exists():
            report.fail("autostart: not enabled (enable with: daemon autostart enable)")
            return report
        report.say(f"autostart: enabled ({path})")
        exec_line = next(
            (
                ln
                for ln in path.read_text(encoding="utf-8").splitlines()
                if ln.startswith("ExecStart=")
            ),
            "",
        )
        report.say(f"  {exec_line}")
        _check_executable(host, report, exec_line)
        if host.systemd_reachable():
            done = host.run(["systemctl", "--user", "is-active", gen.SYSTEMD_UNIT_NAME])
            report.say(f"  systemd: {done.stdout.strip() or 'unknown'}")
        else:
            report.say("  systemd --user is not reachable from here; state unknown")
    elif host.kind == "launchd":
        path = host.plist_path
        if not path.exists():
            report.fail("autostart: not enabled (enable with: daemon autostart enable)")
            return report
        report.say(f"autostart: enabled ({path})")
    elif host.kind == "windows":
        done = host.run(gen.windows_reg_query())
        if done.returncode != 0:
            report.fail("autostart: not enabled (enable with: daemon autostart enable)")
        else:
            report.say(f"autostart: enabled ({gen.WINDOWS_RUN_KEY}\\{gen.WINDOWS_VALUE_NAME})")
    else:
        report.fail(f"autostart: not supported on {host.platform}")
    return report


def _check_executable(host: Host, report: Report, exec_line: str) -> None:
    first = exec_line.removeprefix("ExecStart=").strip()
    exe = first[1:].split('"', 1)[0] if first.startswith('"') else first.split(" ", 1)[0]
    exe = exe.replace("%%", "%").replace("$$", "$")
    if exe and not Path(exe).exists():
        report.fail(
            f"  {exe} no longer exists (the install moved?); run `daemon autostart enable` again"
        )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("enable", "disable", "status"))
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    host = Host.current(load_paths(), environment())
    verb = {"enable": enable, "disable": disable, "status": status}[args.action]
    report = verb(host)
    for line in report.lines:
        print(line)
    return report.code
