"""The ``daemon`` command: ``main(argv) -> int``, one module per verb.

Rules (operations.md "The CLI"):

- Each verb module has ``add_parser(subparsers)`` and ``run(args) -> int``.
- ``main`` is the one place that turns errors into a message on stderr and an exit
  code: 0 success, 1 failure the user can fix (the message says how), 2 usage,
  3 the daemon is not running (for verbs that need it), 130 interrupted.
- No verb imports litellm (the LLM adapter imports it on the first model call).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agents.errors import AgentError
from daemon import __version__
from daemon.errors import ConfigError, DaemonError, NotRunning
from protocol.errors import ConnectionLost, ProtocolError, RequestFailed

from . import (
    accounts,
    agents,
    cancel,
    chat,
    connect,
    dev_client,
    estimate,
    pair,
    run,
    runs,
    schema,
    status,
    trigger,
)

__all__ = ["entry", "main"]

VERBS = (
    run,
    status,
    trigger,
    cancel,
    estimate,
    chat,
    agents,
    runs,
    pair,
    schema,
    dev_client,
    connect,
    accounts,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daemon",
        description="Tether: the desktop app's local agent daemon.",
    )
    parser.add_argument("--version", action="version", version=f"tether {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        verb.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except KeyboardInterrupt:
        return 130
    except NotRunning as exc:
        print(f"daemon: {exc}", file=sys.stderr)
        return 3
    except ConfigError as exc:
        print(f"daemon: configuration error: {exc}", file=sys.stderr)
        return 1
    except (DaemonError, ProtocolError, AgentError, RequestFailed, ConnectionLost) as exc:
        print(f"daemon: {exc}", file=sys.stderr)
        return 1


def entry() -> None:
    sys.exit(main())
