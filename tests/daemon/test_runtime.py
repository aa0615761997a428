"""daemon.runtime: the runtime file (pid, port) and the single-instance lock."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from daemon.errors import AlreadyRunning
from daemon.paths import Paths
from daemon.runtime import (
    InstanceLock,
    RuntimeInfo,
    pid_alive,
    read_runtime,
    remove_runtime,
    write_runtime,
)

REPO = Path(__file__).resolve().parents[2]
POSIX = os.name == "posix"
posix_only = pytest.mark.skipif(not POSIX, reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def info_for(pid: int, port: int = 43210) -> RuntimeInfo:
    return RuntimeInfo(
        pid=pid,
        port=port,
        host="127.0.0.1",
        version="0.1.0",
        protocol=1,
        started_at="2025-01-01T00:00:00Z",
    )


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runtime_write_read_remove(paths: Paths) -> None:
    assert read_runtime(paths) is None
    info = RuntimeInfo.for_this_process(port=43210, host="127.0.0.1", version="0.1.0", protocol=1)
    write_runtime(paths, info)
    if POSIX:
        assert mode(paths.runtime_file) == 0o600
    assert read_runtime(paths) == info
    assert json.loads(paths.runtime_file.read_text())["port"] == 43210
    assert remove_runtime(paths) is True
    assert not paths.runtime_file.exists()
    assert remove_runtime(paths) is False  # idempotent


def test_runtime_stale_corrupt_and_foreign(paths: Paths) -> None:
    pid = dead_pid()
    assert not pid_alive(pid) and pid_alive(os.getpid()) and not pid_alive(0)
    write_runtime(paths, info_for(pid))
    assert read_runtime(paths) is None  # stale: ignored
    assert paths.runtime_file.exists()  # ... but a reader deletes nothing
    assert remove_runtime(paths) is False  # not ours
    assert paths.runtime_file.exists()
    for junk in ("{not json", "[]", '{"pid": "1"}', ""):
        paths.runtime_file.write_text(junk)
        assert read_runtime(paths) is None
    paths.runtime_file.write_text(json.dumps({**info_for(os.getpid()).__dict__, "pid": True}))
    assert read_runtime(paths) is None


PROBE = """
import json, os, sys
from daemon.config import paths_from_env
from daemon.errors import AlreadyRunning
from daemon.runtime import InstanceLock
try:
    InstanceLock(paths_from_env(os.environ)).acquire()
except AlreadyRunning as exc:
    print(json.dumps({"pid": exc.pid, "port": exc.port, "message": str(exc)}))
    sys.exit(3)
print("acquired")
"""


def probe_lock(home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TETHER_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_second_instance_in_subprocess_names_pid_and_port(home: Path, paths: Paths) -> None:
    with InstanceLock(paths) as lock:
        assert lock.held
        write_runtime(paths, info_for(os.getpid(), port=43210))
        result = probe_lock(home)
        assert result.returncode == 3, result.stderr
        seen = json.loads(result.stdout)
        assert (seen["pid"], seen["port"]) == (os.getpid(), 43210)
        assert f"pid {os.getpid()}, port 43210" in seen["message"]
        remove_runtime(paths)
    assert not lock.held
    lock.release()  # idempotent
    result = probe_lock(home)
    assert (result.returncode, result.stdout.strip()) == (0, "acquired"), result.stderr


def test_lock_holder_without_runtime_file(paths: Paths) -> None:
    first = InstanceLock(paths)
    first.acquire()
    first.acquire()  # idempotent while held
    try:
        with pytest.raises(AlreadyRunning) as info:
            InstanceLock(paths, runtime_wait_s=0.1).acquire()
        assert (info.value.pid, info.value.port) == (None, None)
        # a stale runtime file from an earlier crash must not be reported as the holder
        write_runtime(paths, info_for(dead_pid()))
        with pytest.raises(AlreadyRunning) as info:
            InstanceLock(paths, runtime_wait_s=0.1).acquire()
        assert info.value.pid is None
    finally:
        first.release()
    with InstanceLock(paths):
        pass


def test_loser_waits_briefly_for_the_holders_runtime_file(paths: Paths) -> None:
    # The holder takes the lock first and writes daemon.json only once it listens.
    with InstanceLock(paths):
        timer = threading.Timer(0.2, write_runtime, (paths, info_for(os.getpid(), port=45678)))
        timer.start()
        try:
            with pytest.raises(AlreadyRunning) as info:
                InstanceLock(paths, runtime_wait_s=5.0).acquire()
        finally:
            timer.join()
        assert (info.value.pid, info.value.port) == (os.getpid(), 45678)
