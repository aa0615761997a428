"""The ``daemon`` command: ``main(argv) -> int``, one module per verb.

Rules (operations.md "The CLI"):

- Each verb module has ``add_arguments(parser)`` and ``run(args) -> int``; its name
  and one-line help are in :data:`VERBS`. Only the verb being run is imported (as pip
  loads its commands), so ``daemon status`` does not pay for ``daemon doctor``'s
  imports; ``daemon --help`` imports none.
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
import importlib
import os
import sys
from collections.abc import Iterable, Sequence

from agents.errors import AgentError
from daemon import __version__
from daemon.errors import AlreadyRunning, ConfigError, DaemonError, NotRunning
from protocol.errors import ConnectionLost, HandshakeRefused, ProtocolError, RequestFailed

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

# verb -> (module in daemon.cli, one-line help); the order is --help's.
VERBS: dict[str, tuple[str, str]] = {
    "run": ("run", "run the daemon in the foreground"),
    "status": ("status", "is the daemon running; agents with next/last run"),
    "trigger": ("trigger", "start an agent's run now"),
    "cancel": ("cancel", "stop a running run (by run id or agent id)"),
    "estimate": ("estimate", "what a run would read and cost (no LLM call)"),
    "chat": ("chat", "ask the home chat a question (the app must be connected)"),
    "agents": ("agents", "list, show or validate agent configurations"),
    "runs": ("runs", "recent runs from the journal"),
    "logs": ("logs", "show the daemon's log, readable; --follow for new lines"),
    "pair": ("pair", "show the pairing token's location, or make a new one"),
    "connect": ("connect", "sign in to a Google or Microsoft account"),
    "accounts": ("accounts", "list or remove connected Google/Microsoft accounts"),
    "autostart": ("autostart", "start the daemon with your session (opt-in)"),
    "doctor": ("doctor", "check paths, keyring, token, port, LLM, cloud accounts, autostart"),
    "schema": ("schema", "print the protocol's JSON Schema"),
    "dev-client": ("dev_client", "run the reference client against the running daemon"),
}


def _chosen_verb(argv: Sequence[str]) -> str | None:
    """The verb on the command line: the first word that is not an option (the
    top-level options take no value), or None (``daemon --help``)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(verbs: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; only ``verbs`` (default: all) get their arguments,
    which imports their modules. The others are listed with their help."""
    wanted = set(VERBS if verbs is None else verbs)
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
    for name, (module, help_text) in VERBS.items():
        verb_parser = sub.add_parser(name, help=help_text)
        if name in wanted:
            importlib.import_module(f"{__name__}.{module}").add_arguments(verb_parser)
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
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser([verb] if (verb := _chosen_verb(argv)) in VERBS else [])
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
