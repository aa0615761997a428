"""``daemon accounts [list | remove A [--provider P]]``: connected cloud accounts."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when the verb runs: httpx is not for every verb's start-up
    from daemon.accounts import AccountState

from .common import load


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=("list", "remove"), default="list")
    p.add_argument("account", nargs="?", help="the account to remove")
    p.add_argument("--provider", help="google or microsoft, when an address has both")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(handler=run)


def _when(at: float | None) -> str:
    if at is None:
        return "never"
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe(state: AccountState, now: float) -> str:
    if state.state == "needs_reconnect":
        status = f"needs reconnect ({state.reason or 'sign-in refused'})"
    else:
        status = "connected"
    if state.throttled_until and state.throttled_until > now:
        status += f", throttled until {_when(state.throttled_until)}"
    return (
        f"{state.provider:<10} {state.account:<32} {status}; last sync {_when(state.last_sync)}, "
        f"{state.messages_taken} messages taken in"
    )


def run(args: argparse.Namespace) -> int:
    paths, _ = load()
    from daemon.accounts import Accounts

    accounts = Accounts(paths)
    if args.action == "remove":
        if not args.account:
            print("daemon: accounts remove needs the account's address")
            return 2
        try:
            found = accounts.find(args.account, args.provider)
        except ValueError as exc:
            print(f"daemon: {exc}")
            return 2
        if not found:
            print(f"daemon: no connected account {args.account}")
            return 1
        if len(found) > 1:
            print(f"daemon: {args.account} is connected for google and microsoft; add --provider")
            return 2
        accounts.remove(found[0].provider, found[0].account)
        print(f"removed {found[0].provider} account {found[0].account} (its tokens are deleted)")
        return 0
    states = accounts.list()
    if args.json:
        print(json.dumps([s.to_dict() for s in states], indent=2))
        return 0
    if not states:
        print("no accounts connected (daemon connect google|microsoft)")
        return 0
    import time

    now = time.time()
    for state in states:
        print(describe(state, now))
    return 0
