"""Errors of the daemon process.

The tree::

    DaemonError                     something the daemon process cannot do
    ├── ConfigError                 config.toml / agents.toml / env values are invalid
    ├── AlreadyRunning              another daemon holds the instance lock (has pid, port)
    ├── NotRunning                  a CLI verb needs a running daemon and found none
    ├── StateError                  the state store cannot be opened, migrated or written
    │   └── DiskFull                the state store's disk is full (SQLITE_FULL, ENOSPC)
    └── RunRefused                  the run manager will not start a run (has .code:
                                    unknown_agent, already_running, device_offline, busy)

Errors from agents (``agents.errors``) and the protocol (``protocol.errors``) keep
their own trees; the CLI's single handler turns all of them into a message and an
exit code. ``RunRefused`` becomes a wire ``error`` frame with its code in
``daemon.handlers``; the scheduler gets the code as its answer.
"""

from __future__ import annotations

__all__ = [
    "AlreadyRunning",
    "ConfigError",
    "DaemonError",
    "DiskFull",
    "NotRunning",
    "RunRefused",
    "StateError",
]


class DaemonError(Exception):
    """Base of the daemon's own errors."""


class ConfigError(DaemonError):
    """A configuration value is invalid; the message names the file or variable."""


class AlreadyRunning(DaemonError):
    """Another daemon already runs with this state directory."""

    def __init__(self, pid: int | None, port: int | None) -> None:
        where = f"pid {pid}" if pid else "another process"
        if port:
            where += f", port {port}"
        super().__init__(f"tether daemon is already running ({where})")
        self.pid = pid
        self.port = port


class NotRunning(DaemonError):
    """No running daemon was found (no runtime file, or its process is gone)."""


class StateError(DaemonError):
    """The state store cannot be opened, migrated or written."""


class DiskFull(StateError):
    """A state store write failed because its disk is full; the message says
    ``disk full (...)`` with the file and what to free."""


class RunRefused(DaemonError):
    """The run manager refused to start a run; ``code`` is the wire error code.

    ``run_id`` names the run already there for ``already_running``.
    """

    def __init__(self, code: str, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.run_id = run_id
