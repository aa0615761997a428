"""Benchmark: what the cloud clients fetch, per kind, over a mailbox of N messages.

Usage: ``python tests/bench/cloud_fetch.py [--messages N] [--latency S]``
(default 1000 messages, 2 ms of server latency per request).

For gmail, outlook and teams against the local fakes, drives the client as the
pipeline will (a ledger of processed ids; the cursor stored after processing):
first run, unchanged re-run, 10 new messages, then a forced resync (expired
history id / delta link; a lost Teams cursor) with 1 new message. Prints requests,
bodies fetched and wall time of each step, the time as a ratio to the first run of
the same kind measured in the same process, and the most requests in flight.
Targets: re-run 0 bodies; 10 new: 10 bodies; resync: 1 body; never > 4 in flight.
Exits 1 when a target is missed. The final line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agents.cloud.clients import open_client
from agents.cloud.oauth import TokenBundle, TokenManager
from agents.cloud.settings import CloudSettings
from tests.support.fake_cloud import MemoryVault
from tests.support.fake_google import FakeGmail
from tests.support.fake_microsoft import FakeGraph


async def run_once(
    kind: str, account: str, settings: CloudSettings, manager: TokenManager, ledger: dict[str, Any]
) -> tuple[int, float]:
    started = time.perf_counter()
    async with open_client(kind, account, settings, manager) as client:
        changes = await client.list_changes(ledger["cursor"])
        todo = [r for r in changes.refs if r.id not in ledger["done"]]
        refs = await client.refs_with_headers(todo)
        messages = await asyncio.gather(*(client.get_message(r) for r in refs))
        ledger["done"].update(m.ref.id for m in messages)
        ledger["cursor"] = changes.cursor
        return client.bodies_fetched, time.perf_counter() - started


async def bench(kind: str, n: int, latency: float) -> list[dict[str, Any]]:
    server: FakeGmail | FakeGraph
    with FakeGmail() if kind == "gmail" else FakeGraph() as server:  # type: ignore[attr-defined]
        chat = server.add_chat("Bench") if isinstance(server, FakeGraph) else ""

        def add(count: int, prefix: str) -> None:
            for i in range(count):
                if isinstance(server, FakeGmail):
                    server.add_message(subject=f"{prefix} {i}", text=f"{prefix} body {i}")
                elif kind == "outlook":
                    server.add_mail(f"{prefix} {i}", text=f"{prefix} body {i}")
                else:
                    server.add_chat_message(chat, f"<p>{prefix} body {i}</p>")

        def expire(ledger: dict[str, Any]) -> None:
            if isinstance(server, FakeGmail):
                server.expire_history()
            elif kind == "outlook":
                server.expire_delta()
            else:
                ledger["cursor"] = None

        settings = CloudSettings(
            gmail_api_base=f"{server.url}/gmail/v1",
            graph_api_base=f"{server.url}/v1.0",
            google_token_url=server.url + server.token_path,
            microsoft_token_url=server.url + server.token_path,
            google_client_id=server.client_id,
            microsoft_client_id=server.client_id,
        )
        vault = MemoryVault()
        account = server.signed_in_account
        provider = "google" if kind == "gmail" else "microsoft"
        vault.bundles[(provider, account)] = TokenBundle.from_response(
            server.issue_tokens(), time.time()
        )
        server.latency_s = latency
        add(n, "First")
        ledger: dict[str, Any] = {"done": set(), "cursor": None}
        rows: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory() as locks:
            manager = TokenManager(vault, settings, Path(locks))
            steps = [
                ("first run", lambda: None),
                ("unchanged re-run", lambda: None),
                ("10 new", lambda: add(10, "New")),
                ("forced resync + 1 new", lambda: (expire(ledger), add(1, "Late"))),
            ]
            for name, before in steps:
                before()
                count = len(server.requests)
                bodies, seconds = await run_once(kind, account, settings, manager, ledger)
                rows.append(
                    {
                        "kind": kind,
                        "step": name,
                        "requests": len(server.requests) - count,
                        "bodies": bodies,
                        "seconds": seconds,
                    }
                )
            await manager.aclose()
        for row in rows:
            row["time_ratio"] = row["seconds"] / rows[0]["seconds"]
            row["max_in_flight"] = server.max_in_flight
        return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.002)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for kind in ("gmail", "outlook", "teams"):
        rows.extend(asyncio.run(bench(kind, args.messages, args.latency)))
    print(f"{'kind':<8} {'step':<24} {'requests':>9} {'bodies':>7} {'seconds':>8} {'x first':>8}")
    for r in rows:
        print(
            f"{r['kind']:<8} {r['step']:<24} {r['requests']:>9} {r['bodies']:>7} {r['seconds']:>8.2f} {r['time_ratio']:>8.3f}"
        )
    expected = {
        "first run": args.messages,
        "unchanged re-run": 0,
        "10 new": 10,
        "forced resync + 1 new": 1,
    }
    ok = all(r["bodies"] == expected[r["step"]] and r["max_in_flight"] <= 4 for r in rows)
    print(json.dumps({"ok": ok, "rows": rows}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
