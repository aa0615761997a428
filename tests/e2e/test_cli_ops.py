"""Living on the user's machine, over real processes: ``daemon run`` says where it is,
reloads on SIGHUP and on an ``agents.toml`` change, shows rejected agents; autostart
enable/status/disable on Linux; ``daemon doctor``; ``--parent-pid``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import REPO, Cli, cli_harness
from tests.support.llm_server import FakeLLMServer

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
pytestmark = pytest.mark.timeout(90)

GOOD_AGENT = (
    '[[agents]]\nid = "notes"\nname = "Notes"\nkind = "local_directory"\n'
    'schedule_cron = "0 9 * * *"\ndirectory_paths = ["{root}"]\n'
)
BAD_AGENT = GOOD_AGENT.replace('"0 9 * * *"', '"0 9 * * 8"')  # no weekday 8


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    with cli_harness(tmp_path) as harness:
        yield harness


def agents_toml(cli: Cli, text: str) -> Path:
    path = cli.home / "config" / "agents.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.format(root=cli.tmp / "notes"), encoding="utf-8")
    return path


def status_json(cli: Cli) -> dict[str, object]:
    result = cli.run("status", "--json")
    assert result.returncode == 0, result.stderr
    frame: dict[str, object] = json.loads(result.stdout)
    return frame


def wait_for(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# --- daemon run says where it is --------------------------------------------------------


@posix_only
def test_run_in_a_terminal_says_where_it_is_on_stderr(cli: Cli) -> None:
    stderr_path = cli.tmp / "run.stderr"
    with stderr_path.open("w") as stderr:
        popen = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--port", "0"],
            cwd=REPO,
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    cli.procs.append(popen)
    wait_for(lambda: "listening" in stderr_path.read_text(), 20, "the where-line")
    line = stderr_path.read_text().strip()
    assert len(line.splitlines()) == 1
    runtime = json.loads(cli.runtime_file.read_text())
    assert f"ws://127.0.0.1:{runtime['port']}/" in line
    assert str(cli.home / "config") in line
    assert str(cli.home / "log" / "daemon.log") in line
    assert str(cli.token_file) in line
    popen.send_signal(signal.SIGTERM)
    assert popen.wait(10) == 0
    assert popen.stdout is not None and popen.stdout.read() == ""  # stdout stays clean


@posix_only
def test_quiet_and_ready_json_print_no_where_line(cli: Cli) -> None:
    proc = cli.start()  # --ready-json
    assert "listening" not in proc.stderr()
    assert proc.stop() == 0


# --- reload: SIGHUP and agents.toml on disk ------------------------------------------------


@posix_only
def test_invalid_agent_shows_in_status_and_sighup_makes_it_valid(cli: Cli) -> None:
    path = agents_toml(cli, BAD_AGENT)
    proc = cli.start()
    frame = status_json(cli)
    assert frame["agents"] == []
    rejected = frame["rejected_agents"]
    assert isinstance(rejected, list) and len(rejected) == 1
    assert rejected[0]["id"] == "notes"
    errors = rejected[0]["errors"]
    assert any("schedule_cron" in e and "weekday" in e for e in errors)
    text = cli.run("status")
    assert text.returncode == 0
    assert "REJECTED notes: schedule_cron" in text.stdout
    listed = cli.run("agents", "list")
    assert "notes" in listed.stdout and "REJECTED: schedule_cron" in listed.stdout

    # Fix the file and send SIGHUP at once (before the stat poll could see it).
    before = path.stat()
    agents_toml(cli, GOOD_AGENT)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # hide it from the poll
    proc.popen.send_signal(signal.SIGHUP)
    wait_for(lambda: status_json(cli)["agents"] != [], 10, "the reload after SIGHUP")
    frame = status_json(cli)
    assert [a["id"] for a in frame["agents"]] == ["notes"]
    assert frame["rejected_agents"] == []
    assert proc.popen.poll() is None  # SIGHUP did not kill it
    assert cli.runtime_file.exists()
    assert proc.stop() == 0
    assert not cli.runtime_file.exists()


@posix_only
def test_agents_toml_change_on_disk_is_noticed_without_a_signal(cli: Cli) -> None:
    agents_toml(cli, GOOD_AGENT)
    proc = cli.start()
    assert [a["id"] for a in status_json(cli)["agents"]] == ["notes"]
    agents_toml(cli, GOOD_AGENT + "\n" + GOOD_AGENT.replace('"notes"', '"more"'))
    wait_for(lambda: len(status_json(cli)["agents"]) == 2, 15, "agents.toml to be re-read")
    # a broken file keeps the agents and says why
    agents_toml(cli, "[[agents]\n")
    wait_for(lambda: status_json(cli)["rejected_agents"] != [], 15, "the broken file reported")
    frame = status_json(cli)
    assert len(frame["agents"]) == 2
    rejected = frame["rejected_agents"][0]
    assert rejected["id"] is None and "not valid TOML" in rejected["errors"][0]
    assert proc.popen.poll() is None
    assert proc.stop() == 0


@posix_only
def test_sighup_reloads_config_toml(cli: Cli, tmp_path: Path) -> None:
    proc = cli.start()
    config = cli.home / "config" / "config.toml"
    config.write_text('log_level = "DEBUG"\n[llm]\nmodel = "openai/after-reload"\n')
    proc.popen.send_signal(signal.SIGHUP)
    log = cli.home / "log" / "daemon.log"
    wait_for(lambda: "config.toml reloaded" in log.read_text(), 10, "the config reload")
    config.write_text("prot = 1\n")  # a typo: the running settings stay
    proc.popen.send_signal(signal.SIGHUP)
    wait_for(lambda: "config.toml not reloaded" in log.read_text(), 10, "the refused reload")
    assert "did you mean 'port'" in log.read_text()
    assert proc.popen.poll() is None
    assert proc.stop() == 0


# --- --parent-pid ------------------------------------------------------------------------

_PARENT = """
import subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-m", "daemon", "run", "--port", "0", "--ready-json", "--quiet",
     "--parent-pid", str(__import__("os").getpid())],
    stdout=subprocess.DEVNULL,
)
print(child.pid, flush=True)
time.sleep(600)
"""


@posix_only
def test_daemon_exits_within_2s_of_its_parent_dying_even_as_a_zombie(cli: Cli) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], cwd=REPO, env=cli.env, stdout=subprocess.PIPE, text=True
    )
    cli.procs.append(parent)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    wait_for(cli.runtime_file.exists, 20, "the daemon to listen")
    assert json.loads(cli.runtime_file.read_text())["pid"] == child_pid
    parent.kill()  # not reaped yet: the parent's pid lives on as a zombie
    killed = time.monotonic()
    while cli.runtime_file.exists():
        assert time.monotonic() - killed < 2.0, "the daemon outlived its parent by 2 s"
        time.sleep(0.05)
    parent.wait(10)


# --- autostart -----------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the systemd unit is Linux's")
def test_autostart_enable_status_disable_on_linux(cli: Cli) -> None:
    unit = cli.tmp / "xdg-config" / "systemd" / "user" / "tether.service"
    assert cli.run("autostart", "status").returncode == 1
    enabled = cli.run("autostart", "enable")
    assert enabled.returncode == 0, enabled.stderr
    assert unit.exists()
    assert str(unit) in enabled.stdout
    # systemd --user is not reachable in the isolated XDG_RUNTIME_DIR: it says what to run
    assert "systemctl --user enable --now tether.service" in enabled.stdout
    text = unit.read_text()
    assert f"ExecStart={sys.executable} -m daemon run" in text.splitlines()
    assert "Restart=on-failure" in text.splitlines()
    assert f"Environment=TETHER_HOME={cli.home}" in text.splitlines()
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
        )
        assert verify.returncode == 0, verify.stderr
        assert verify.stderr.strip() == ""
    status = cli.run("autostart", "status")
    assert status.returncode == 0
    assert f"enabled ({unit})" in status.stdout
    disabled = cli.run("autostart", "disable")
    assert disabled.returncode == 0
    assert not unit.exists()
    assert "not enabled" in cli.run("autostart", "status").stdout


# --- doctor ------------------------------------------------------------------------------


def test_doctor_without_a_model_says_so_and_how_to_fix_it(cli: Cli) -> None:
    result = cli.run("doctor")
    assert result.returncode == 1
    assert "FAIL  LLM: no model configured" in result.stdout
    assert "config.toml" in result.stdout and "TETHER_MODEL" in result.stdout
    assert "Traceback" not in result.stderr


@posix_only
def test_doctor_with_everything_right_exits_0(cli: Cli) -> None:
    with FakeLLMServer() as llm:
        cli.env.update(
            TETHER_MODEL="openai/fake", TETHER_API_BASE=llm.base_url, TETHER_API_KEY="sk-test-1234"
        )
        proc = cli.start()
        result = cli.run("doctor", timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"daemon: running, pid {proc.pid}, port {proc.port}" in result.stdout
        assert "ok    LLM: openai/fake" in result.stdout and "answered" in result.stdout
        assert llm.calls == 1  # one tiny real call
        assert "everything looks right" in result.stdout
        assert "sk-test-1234" not in result.stdout

        # a rejected agent is a problem the doctor names
        agents_toml(cli, BAD_AGENT)
        bad = cli.run("doctor", "--no-llm-call", timeout=60)
        assert bad.returncode == 1
        assert "agent notes is rejected: schedule_cron" in bad.stdout
        assert proc.stop() == 0


def test_doctor_reports_an_unreachable_model_as_a_failure(cli: Cli) -> None:
    with FakeLLMServer() as llm:
        base = llm.base_url
    cli.env.update(TETHER_MODEL="openai/fake", TETHER_API_BASE=base, TETHER_API_KEY="k" * 12)
    result = cli.run("doctor", timeout=90)
    assert result.returncode == 1
    assert "FAIL  LLM: openai/fake" in result.stdout
    assert "fix:" in result.stdout
    assert "Traceback" not in result.stderr


# --- daemon logs -------------------------------------------------------------------------


def _record(msg: str, level: str = "INFO", **fields: str) -> str:
    line = {"ts": "2026-01-02T03:04:05.678Z", "level": level, "logger": "tether.runs", "msg": msg}
    return json.dumps({**line, **fields})


def test_logs_pretty_prints_and_filters(cli: Cli) -> None:
    log = cli.home / "log" / "daemon.log"
    log.parent.mkdir(parents=True)
    run_id = "a" * 32
    log.with_name("daemon.log.1").write_text(_record("older, rotated") + "\n")
    log.write_text(
        "\n".join(
            [
                _record("listening"),
                _record("run started", run_id=run_id, agent_id="notes"),
                _record("model slow", level="WARNING", run_id=run_id, attempt="2"),
                "not json at all",
                _record("other run", run_id="b" * 32),
            ]
        )
        + "\n"
    )
    everything = cli.run("logs")
    assert everything.returncode == 0
    lines = everything.stdout.splitlines()
    assert "older, rotated" in lines[0]  # backups first, oldest first
    assert "not json at all" in lines
    started = next(ln for ln in lines if "run started" in ln)
    assert " INFO " in started and "runs: run started" in started
    assert f"run={run_id[:12]}" in started and "agent=notes" in started
    one_run = cli.run("logs", "--run", run_id[:8]).stdout.splitlines()
    assert [ln.split(": ", 1)[1].split("  ")[0] for ln in one_run] == ["run started", "model slow"]
    warnings = cli.run("logs", "--level", "warning").stdout.splitlines()
    assert len(warnings) == 1 and "model slow" in warnings[0] and "attempt=2" in warnings[0]
    assert len(cli.run("logs", "-n", "2").stdout.splitlines()) == 2
    raw = cli.run("logs", "--json", "--run", run_id).stdout.splitlines()
    assert [json.loads(ln)["msg"] for ln in raw] == ["run started", "model slow"]
    missing = cli.run("logs", "--run", "c" * 32)
    assert missing.returncode == 1 and "daemon runs" in missing.stderr


@posix_only
def test_logs_follow_prints_new_lines_across_a_rotation(cli: Cli) -> None:
    log = cli.home / "log" / "daemon.log"
    log.parent.mkdir(parents=True)
    log.write_text(_record("before") + "\n")
    popen = subprocess.Popen(
        [sys.executable, "-m", "daemon", "logs", "--follow"],
        cwd=REPO,
        env=cli.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    cli.procs.append(popen)
    assert popen.stdout is not None
    assert "before" in popen.stdout.readline()
    with log.open("a") as fp:
        fp.write(_record("appended") + "\n")
    assert "appended" in popen.stdout.readline()
    log.rename(log.with_name("daemon.log.1"))
    log.write_text(_record("after rotation") + "\n")
    assert "after rotation" in popen.stdout.readline()
    popen.send_signal(signal.SIGINT)
    assert popen.wait(10) == 130


def test_doctor_checks_cloud_accounts(cli: Cli) -> None:
    import time

    import keyring
    from keyring.backends import fail

    from daemon.accounts import Accounts
    from daemon.paths import Paths

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]  # the 0600 file
    try:
        accounts = Accounts(Paths.under(cli.home).ensure())
        bundle = {"access_token": "at-" + "a" * 20, "expires_at": time.time() + 3600}
        accounts.put_credentials("gmail", "me@example.com", {**bundle, "refresh_token": "r" * 24})
        accounts.put_credentials("teams", "me@contoso.com", {**bundle, "refresh_token": "r" * 24})
        accounts.mark_needs_reconnect("microsoft", "me@contoso.com", "invalid_grant")
    finally:
        keyring.set_keyring(previous)
    cli.env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    result = cli.run("doctor", "--no-llm-call", "--no-refresh")
    assert (
        "ok    cloud account google me@example.com: connected, refresh token stored (not tried)"
        in (result.stdout)
    )
    assert "FAIL  cloud account microsoft me@contoso.com needs a new sign-in (invalid_grant)" in (
        result.stdout
    )
    assert "fix: daemon connect microsoft --account me@contoso.com" in result.stdout
    assert "r" * 24 not in result.stdout
    assert result.returncode == 1


def test_doctor_renews_each_account_once_at_the_provider(cli: Cli) -> None:
    """The refresh really runs (fake Google and Microsoft token endpoints): a rotated
    Microsoft refresh token is saved (a second doctor works with it), a revoked one is
    a FAIL that marks the account, an endpoint that is down is a FAIL that does not."""
    from daemon.accounts import Accounts
    from daemon.paths import Paths
    from tests.support.fake_google import FakeGmail
    from tests.support.fake_microsoft import FakeGraph

    with FakeGmail() as google, FakeGraph() as microsoft:
        cli.env.update(
            {
                "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",  # the 0600 file
                "TETHER_GOOGLE_TOKEN_URL": google.url + google.token_path,
                "TETHER_GOOGLE_CLIENT_ID": google.client_id,
                "TETHER_MICROSOFT_TOKEN_URL": microsoft.url + microsoft.token_path,
                "TETHER_MICROSOFT_CLIENT_ID": microsoft.client_id,
            }
        )
        # Stored as `daemon connect` would (the file fallback, as in the doctor's process).
        code = (
            "import json, sys\n"
            "from pathlib import Path\n"
            "from daemon.accounts import Accounts\n"
            "from daemon.paths import Paths\n"
            "accounts = Accounts(Paths.under(Path(sys.argv[1])).ensure())\n"
            "for kind, account, tokens in json.loads(sys.argv[2]):\n"
            "    accounts.put_credentials(kind, account, tokens)\n"
        )
        google_tokens = google.issue_tokens("me@example.com")
        microsoft_tokens = microsoft.issue_tokens("me@contoso.com")
        bundles = [
            ["gmail", "me@example.com", google_tokens],
            ["outlook", "me@contoso.com", microsoft_tokens],
        ]
        stored = cli.python(code, str(cli.home), json.dumps(bundles))
        assert stored.returncode == 0, stored.stderr

        first = cli.run("doctor", "--no-llm-call", timeout=60)
        assert (
            "ok    cloud account google me@example.com: connected, its refresh token renewed"
            in (first.stdout)
        )
        assert (
            "ok    cloud account microsoft me@contoso.com: connected, its refresh token renewed"
            in (first.stdout)
        )
        assert (google.refresh_count, microsoft.refresh_count) == (1, 1)
        # Microsoft rotated the refresh token: the old one is dead, the saved one works.
        second = cli.run("doctor", "--no-llm-call", timeout=60)
        assert "microsoft me@contoso.com: connected, its refresh token renewed" in second.stdout
        assert microsoft.refresh_count == 2

        google.revoke()
        microsoft.fail(
            microsoft.token_path, 503, {"error": "temporarily_unavailable"}, method="POST"
        )
        third = cli.run("doctor", "--no-llm-call", timeout=60)
        assert third.returncode == 1
        assert (
            "FAIL  cloud account google me@example.com: the provider refused its refresh token "
            "(invalid_grant)" in third.stdout
        )
        assert "fix: daemon connect google --account me@example.com" in third.stdout
        assert (
            "FAIL  cloud account microsoft me@contoso.com: could not renew its access: the "
            "microsoft token endpoint is unavailable (HTTP 503)" in third.stdout
        )
        for tokens in (google_tokens, microsoft_tokens):
            assert tokens["refresh_token"] not in third.stdout + first.stdout + second.stdout
        states = {s.provider: s for s in Accounts(Paths.under(cli.home)).list()}
        assert states["google"].state == "needs_reconnect"
        assert states["microsoft"].state != "needs_reconnect"  # down is not refused
