"""Autostart: the generated unit, plist and Run command as data, and the verb's logic
with a recording runner (never the real user's systemd, launchd or registry)."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import autostart as gen
from daemon.cli.autostart import Host, disable, enable, status
from daemon.paths import Paths
from tests.support.commands import RecordingRunner

VENV_PY = "/home/me/.local/pipx/venvs/tether/bin/python"


def test_launch_command_for_a_venv_keeps_the_symlinked_python() -> None:
    assert gen.launch_command(VENV_PY, frozen=False) == [VENV_PY, "-m", "daemon", "run"]


def test_launch_command_for_the_frozen_build_is_the_binary() -> None:
    assert gen.launch_command("/opt/Tether/daemon", frozen=True) == ["/opt/Tether/daemon", "run"]


def test_only_tether_home_is_baked_into_an_entry() -> None:
    assert gen.baked_env(Path("/h")) == {"TETHER_HOME": "/h"}
    assert gen.baked_env(None) == {}


def test_systemd_unit_restarts_on_failure_and_bakes_no_settings() -> None:
    unit = gen.systemd_unit([VENV_PY, "-m", "daemon", "run"])
    lines = unit.splitlines()
    assert f"ExecStart={VENV_PY} -m daemon run" in lines
    assert "Restart=on-failure" in lines
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines  # systemctl --user reload tether
    assert "WantedBy=default.target" in lines
    assert not any(ln.startswith("Environment=") for ln in lines)


def test_systemd_quoting_of_spaces_percent_and_dollar() -> None:
    assert gen.systemd_quote("/a b/python") == '"/a b/python"'
    assert gen.systemd_quote("50%") == "50%%"
    assert gen.systemd_quote("$HOME") == "$$HOME"
    unit = gen.systemd_unit(["/x y/py", "run"], {"TETHER_HOME": "/my home"})
    assert 'ExecStart="/x y/py" run' in unit.splitlines()
    assert 'Environment="TETHER_HOME=/my home"' in unit.splitlines()


def test_launchd_plist_as_data(tmp_path: Path) -> None:
    data = gen.launchd_plist(
        ["/Applications/Tether.app/daemon", "run"],
        log_file=tmp_path / "launchd.log",
        env={"TETHER_HOME": "/h"},
    )
    plist = plistlib.loads(data)
    assert plist["Label"] == "dev.tether.daemon"
    assert plist["ProgramArguments"] == ["/Applications/Tether.app/daemon", "run"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["EnvironmentVariables"] == {"TETHER_HOME": "/h"}
    assert plist["StandardErrorPath"] == str(tmp_path / "launchd.log")
    assert gen.launchd_plist_path(Path("/Users/me")) == Path(
        "/Users/me/Library/LaunchAgents/dev.tether.daemon.plist"
    )
    assert gen.launchctl_enable(501, Path("/p.plist")) == [
        "launchctl",
        "bootstrap",
        "gui/501",
        "/p.plist",
    ]
    assert gen.launchctl_disable(501) == ["launchctl", "bootout", "gui/501/dev.tether.daemon"]


def test_windows_run_value_and_reg_commands_as_data() -> None:
    command = [r"C:\Program Files\Tether\daemon.exe", "run"]
    value = gen.windows_run_value(command)
    assert value == r'"C:\Program Files\Tether\daemon.exe" run'
    assert gen.windows_reg_add(command) == [
        "reg",
        "add",
        r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run",
        "/v",
        "Tether",
        "/t",
        "REG_SZ",
        "/d",
        value,
        "/f",
    ]
    assert gen.windows_reg_delete()[:2] == ["reg", "delete"]
    assert "/f" in gen.windows_reg_delete()
    assert gen.windows_reg_query()[:2] == ["reg", "query"]


# --- the verb's logic, with a recording runner -------------------------------------------


def _host(tmp_path: Path, platform: str, runner: RecordingRunner, **env: str) -> Host:
    base = {"XDG_CONFIG_HOME": str(tmp_path / "xdg-config"), **env}
    return Host(
        platform=platform,
        env=base,
        home=tmp_path / "home",
        uid=1000,
        command=[sys.executable, "-m", "daemon", "run"],
        paths=Paths.under(tmp_path / "tether"),
        run=runner,
        which=lambda name: f"/usr/bin/{name}",
    )


def test_linux_without_systemd_writes_the_unit_and_says_what_to_run(tmp_path: Path) -> None:
    runner = RecordingRunner()
    host = _host(tmp_path, "linux", runner, XDG_RUNTIME_DIR=str(tmp_path / "no-runtime"))
    report = enable(host)
    assert report.code == 0
    unit = tmp_path / "xdg-config" / "systemd" / "user" / "tether.service"
    assert unit.exists()
    assert runner.calls == []  # systemctl never called when systemd is not reachable
    text = "\n".join(report.lines)
    assert "systemctl --user enable --now tether.service" in text
    assert status(host).code == 0
    assert disable(host).code == 0
    assert not unit.exists()
    assert runner.calls == []
    assert status(host).code == 1


def test_linux_with_systemd_reloads_and_enables_now(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    (runtime / "systemd").mkdir(parents=True)
    (runtime / "systemd" / "private").touch()
    runner = RecordingRunner(answers={"systemctl": (0, "active\n", "")})
    host = _host(tmp_path, "linux", runner, XDG_RUNTIME_DIR=str(runtime), TETHER_MODEL="openai/x")
    report = enable(host)
    assert report.code == 0, report.lines
    assert runner.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "tether.service"],
    ]
    assert any("llm.model" in ln and "config.toml" in ln for ln in report.lines)
    unit = host.unit_path.read_text(encoding="utf-8")
    assert "openai/x" not in unit and "TETHER_MODEL" not in unit
    runner.calls.clear()
    assert "active" in "\n".join(status(host).lines)
    runner.calls.clear()
    assert disable(host).code == 0
    assert runner.calls == [
        ["systemctl", "--user", "disable", "--now", "tether.service"],
        ["systemctl", "--user", "daemon-reload"],
    ]
    assert not host.unit_path.exists()


def test_linux_systemctl_failure_is_reported(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    (runtime / "systemd").mkdir(parents=True)
    (runtime / "systemd" / "private").touch()
    runner = RecordingRunner(answers={"systemctl": (1, "", "Failed to connect to bus")})
    report = enable(_host(tmp_path, "linux", runner, XDG_RUNTIME_DIR=str(runtime)))
    assert report.code == 1
    assert any("Failed to connect to bus" in ln for ln in report.lines)


def test_status_flags_a_unit_whose_executable_is_gone(tmp_path: Path) -> None:
    runner = RecordingRunner()
    host = _host(tmp_path, "linux", runner)
    host.command = [str(tmp_path / "old-venv" / "bin" / "python"), "-m", "daemon", "run"]
    enable(host)
    report = status(host)
    assert report.code == 1
    assert any("no longer exists" in ln for ln in report.lines)


def test_macos_writes_and_loads_the_plist(tmp_path: Path) -> None:
    runner = RecordingRunner()
    host = _host(tmp_path, "darwin", runner)
    assert enable(host).code == 0
    plist = plistlib.loads(host.plist_path.read_bytes())
    assert plist["ProgramArguments"] == host.command
    assert ["launchctl", "bootstrap", "gui/1000", str(host.plist_path)] in runner.calls
    assert status(host).code == 0
    assert disable(host).code == 0
    assert not host.plist_path.exists()
    assert runner.calls[-1] == ["launchctl", "bootout", "gui/1000/dev.tether.daemon"]


def test_windows_adds_queries_and_deletes_the_run_value(tmp_path: Path) -> None:
    runner = RecordingRunner()
    host = _host(tmp_path, "win32", runner)
    assert enable(host).code == 0
    assert runner.calls == [gen.windows_reg_add(host.command)]
    assert status(host).code == 0
    assert disable(host).code == 0
    assert runner.calls[-1] == gen.windows_reg_delete()
    not_there = RecordingRunner(answers={"reg": (1, "", "unable to find")})
    assert status(_host(tmp_path, "win32", not_there)).code == 1


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_generated_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "tether.service"
    unit.write_text(
        gen.systemd_unit(gen.launch_command(sys.executable, frozen=False), {"TETHER_HOME": "/a b"}),
        encoding="utf-8",
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""


def test_enable_says_when_config_toml_sets_no_model(tmp_path: Path) -> None:
    host = _host(tmp_path, "linux", RecordingRunner())
    assert any("sets no model" in ln for ln in enable(host).lines)
    host.paths.ensure()
    host.paths.config_toml.write_text('[llm]\nmodel = "ollama/llama3.1"\n')
    assert not any("sets no model" in ln for ln in enable(host).lines)
    host.paths.config_toml.write_text("prot = 1\n")
    assert any("will not start" in ln and "prot" in ln for ln in enable(host).lines)
