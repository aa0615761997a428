"""The ``daemon`` command: ``main(argv) -> int``, one module per verb.

Rules (operations.md "The CLI"):

- Each verb module has ``add_parser(subparsers)`` and ``run(args) -> int``.
- ``main`` is the one place that turns errors into one line on stderr (what went
  wrong and what to do) and an exit code. No traceback reaches a user; set
  ``daemon --debug VERB`` to see one.
- Exit codes:

  ===  ==========================================================================
  0    success
  1    a failure the user can fix (the message says how)
  2    usage (argparse)
  3    the daemon is not running (for verbs that need it)
  4    ``trigger --wait`` timed out; the run goes on in the daemon
  70   an unexpected error (a bug: the message says where the log is)
  130  interrupted (Ctrl-C)
  141  the output was closed early (``daemon runs | head -1``)
  ===  ==========================================================================

- No verb imports litellm (the LLM adapter imports it on the first model call;
  ``daemon doctor`` makes one call on purpose).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence

from agents.errors import AgentError
from daemon import __version__
from daemon.errors import AlreadyRunning, ConfigError, DaemonError, NotRunning
from protocol.errors import ConnectionLost, HandshakeRefused, ProtocolError, RequestFailed

from . import (
    accounts,
    agents,
    autostart,
    cancel,
    chat,
    connect,
    dev_client,
    doctor,
    estimate,
    logs,
    pair,
    run,
    runs,
    schema,
    status,
    trigger,
)

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILURE",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_TIMED_OUT",
    "entry",
    "main",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_NOT_RUNNING = 3
EXIT_TIMED_OUT = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

VERBS = (
    run,
    status,
    trigger,
    cancel,
    estimate,
    chat,
    agents,
    runs,
    logs,
    pair,
    connect,
    accounts,
    autostart,
    doctor,
    schema,
    dev_client,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daemon",
        description="Tether: the desktop app's local agent daemon.",
    )
    parser.add_argument("--version", action="version", version=f"tether {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an unexpected error"
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        verb.add_parser(sub)
    return parser


def _say(message: str) -> None:
    try:
        print(f"daemon: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr is gone too: nothing left to tell
        pass


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at devnull so the exit flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _os_error(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}: check that the file or directory is yours"
    if exc.errno == errno.ENOSPC:
        return f"the disk is full{where}: free some space and try again"
    return f"{exc.strerror or exc}{where}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(args.debug)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        _say("the output was closed before everything was written (e.g. `| head`)")
        return EXIT_BROKEN_PIPE
    except NotRunning as exc:
        _say(str(exc))
        return EXIT_NOT_RUNNING
    except AlreadyRunning as exc:
        stop = f"stop it with `kill {exc.pid}`" if exc.pid else "stop it first"
        _say(f"{exc}; `daemon status` shows it; {stop} to start another")
        return EXIT_FAILURE
    except ConfigError as exc:
        _say(f"configuration error: {exc}")
        return EXIT_FAILURE
    except HandshakeRefused as exc:
        if exc.code == 4401:
            _say(
                "the daemon refused the pairing token; use the token in the token file "
                "(`daemon pair` shows where) or the TETHER_TOKEN the app gave the daemon"
            )
        else:
            _say(f"the daemon refused the connection: {exc}")
        return EXIT_FAILURE
    except (DaemonError, ProtocolError, AgentError, RequestFailed, ConnectionLost) as exc:
        _say(str(exc))
        return EXIT_FAILURE
    except OSError as exc:
        if debug:
            raise
        _say(_os_error(exc))
        return EXIT_FAILURE
    except Exception as exc:
        if debug:
            raise
        _say(
            f"unexpected error: {type(exc).__name__}: {exc}. This is a bug; run it again as "
            "`daemon --debug ...` to see the traceback, and report it"
        )
        return EXIT_INTERNAL


def entry() -> None:
    sys.exit(main())
