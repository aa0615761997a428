"""Benchmark: LLM calls and prompt tokens of a local-directory agent, first run vs later runs.

Builds a corpus of N text files (default 200) spread over ~10 project folders
(some in subfolders) plus loose files at the root; each file holds a few
``TASK:`` / ``NOTE:`` / ``MILESTONE:`` lines (the format of
``tests/support/agent_model.OfficeModel``) among paragraphs of filler prose, so
texts have a realistic size. An app SQLite holds those projects. The daemon runs
in process under a temporary ``TETHER_HOME``, its model pointed at a local
``FakeLLMServer`` answering with ``OfficeModel``; the reference client (with that
SQLite) runs in process too and triggers three manual runs:

    (a) the first run, (b) an unchanged re-run, (c) a run after appending one
    line to 5% of the files.

Calls and prompt tokens come from ``run_complete.usage`` and are cross-checked
with what the server received (request count, and its deterministic token
estimate summed over those requests). The client's SQLite is checked for
duplicates after the last run.

    python tests/bench/llm_cost.py [--files 200] [--projects 10] [--changed 0.05]

Targets (quality.md): (b) 0 LLM calls; (c) <= 10% of the first run's prompt tokens.
Prints a table and a final JSON line; exits 1 if a target or a check is missed.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from daemon.app import Daemon
from daemon.config import ENV_VARS, load_config
from daemon.paths import Paths
from daemon.state import StateStore
from protocol.frames import RunComplete
from protocol.reference import ReferenceClient, SqliteStore
from tests.support.agent_model import OfficeModel
from tests.support.llm_server import FakeLLMServer, estimate_prompt_tokens

TARGET_RERUN_CALLS = 0
TARGET_CHANGED_TOKEN_RATIO = 0.10
AGENT_ID = "bench-folder"

PROJECTS = [
    "Acme Website",
    "Brand Refresh",
    "Quarterly Report",
    "Mobile App",
    "Podcast Launch",
    "Trade Show",
    "Newsletter",
    "Photo Shoot",
    "Client Onboarding",
    "Tax Filing",
    "Office Move",
    "Conference Talk",
    "Grant Proposal",
    "Product Catalog",
    "Video Series",
]
SUBFOLDERS = ["", "", "", "meetings", "drafts", "research"]
WORDS = (
    "the client asked us to revisit the timeline before the next review and we agreed that "
    "the draft needs another pass on tone structure and the figures in the appendix while "
    "budget remains tight the team thinks the scope is realistic if feedback arrives on time "
    "we discussed dependencies on the printer the venue and the external designer notes from "
    "the workshop suggest a simpler layout with fewer pages and clearer calls to action"
).split()


def filler(rng: random.Random, chars: int) -> str:
    """Paragraphs of prose, about ``chars`` characters."""
    paragraphs: list[str] = []
    total = 0
    while total < chars:
        sentences = []
        for _ in range(rng.randint(3, 6)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
            sentences.append(" ".join(words).capitalize() + ".")
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
        total += len(paragraph) + 2
    return "\n\n".join(paragraphs)


@dataclass
class Corpus:
    root: Path
    files: list[Path]
    projects: list[str]
    task_titles: set[str]


def build_corpus(root: Path, n_files: int, n_projects: int, seed: int = 7) -> Corpus:
    """``n_files`` .md/.txt files: ~90% in project folders, the rest loose at the root."""
    rng = random.Random(seed)
    projects = PROJECTS[:n_projects]
    files: list[Path] = []
    titles: set[str] = set()
    for i in range(n_files):
        loose = i % 10 == 9
        project = None if loose else projects[i % len(projects)]
        folder = root if project is None else root / project / rng.choice(SUBFOLDERS)
        ext = ".md" if i % 3 else ".txt"
        path = folder / f"doc-{i:04d}{ext}"
        lines = [f"# {'Loose notes' if project is None else project} - document {i}", ""]
        items: list[str] = []
        for k in range(rng.randint(1, 3)):
            title = f"Task {i}.{k} {rng.choice(WORDS)} {rng.choice(WORDS)}"
            titles.add(title)
            extra = rng.choice(["", " | priority high", f" | due 2026-11-0{rng.randint(1, 9)}"])
            items.append(f"TASK: {title}{extra}")
        if rng.random() < 0.6:
            items.append(f"NOTE: Note {i} | {filler(rng, 120).splitlines()[0][:160]}")
        if project is not None and rng.random() < 0.3:
            items.append(f"MILESTONE: Milestone {i} | 2026-12-{rng.randint(10, 28)}")
        # items scattered between paragraphs of prose, 1-9 KB a file
        body = filler(rng, rng.randint(800, 9000)).split("\n\n")
        for item in items:
            body.insert(rng.randint(0, len(body)), item)
        lines.extend(body)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n\n".join(lines) + "\n", encoding="utf-8")
        files.append(path)
    return Corpus(root, files, projects, titles)


def change_files(corpus: Corpus, fraction: float) -> list[Path]:
    """Append one TASK line to every k-th file (``fraction`` of them)."""
    count = max(1, round(len(corpus.files) * fraction))
    step = len(corpus.files) / count
    # evenly spread, shifted so that loose files (every 10th) are among them too
    chosen = [
        corpus.files[min(len(corpus.files) - 1, int(j * step) + j % 10)] for j in range(count)
    ]
    for n, path in enumerate(chosen):
        title = f"Follow-up {n} from {path.stem}"
        corpus.task_titles.add(title)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"TASK: {title} | priority medium\n")
    return chosen


@dataclass
class Measure:
    label: str
    run: RunComplete
    server_calls: int
    server_prompt_tokens: int
    seconds: float

    def row(self) -> dict[str, Any]:
        u = self.run.usage
        return {
            "run": self.label,
            "status": self.run.status,
            "files_processed": self.run.items_processed,
            "items_created": self.run.items_created,
            "items_updated": self.run.items_updated,
            "llm_calls": u.llm_calls,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "server_calls": self.server_calls,
            "server_prompt_tokens": self.server_prompt_tokens,
            "seconds": round(self.seconds, 2),
        }


async def measure(label: str, client: ReferenceClient, server: FakeLLMServer) -> Measure:
    before = server.calls
    start = time.perf_counter()
    ack = await client.trigger(AGENT_ID)
    assert ack.run_id
    done = await client.wait_run(ack.run_id, timeout=600)
    seconds = time.perf_counter() - start
    new = server.requests[before:]
    tokens = sum(estimate_prompt_tokens(body) for body in new)
    return Measure(label, done, len(new), tokens, seconds)


async def main(args: argparse.Namespace) -> int:
    for var in [*ENV_VARS, "TETHER_TOKEN"]:
        os.environ.pop(var, None)
    work = Path(tempfile.mkdtemp(prefix="tether-llm-cost-"))
    os.environ["TETHER_HOME"] = str(work / "home")
    try:
        return await _bench(args, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


async def _bench(args: argparse.Namespace, work: Path) -> int:
    corpus = build_corpus(work / "corpus", args.files, args.projects)
    db_path = work / "app.db"
    with SqliteStore(db_path) as db:
        for name in corpus.projects:
            db.handle("insert", "projects", data={"name": name})
    corpus_bytes = sum(p.stat().st_size for p in corpus.files)

    office = OfficeModel()
    with FakeLLMServer(responder=office) as server:
        paths = Paths.under(work / "home").ensure()
        config = load_config(
            paths,
            {},
            overrides={
                "port": 0,
                "log_level": "WARNING",
                "llm.model": "openai/office",
                "llm.api_base": server.base_url,
            },
        )
        daemon = Daemon(
            config=config, paths=paths, token="bench", state=StateStore.open(paths.state_db)
        )
        port = await daemon.start()
        agent = {
            "id": AGENT_ID,
            "name": "Bench folder",
            "kind": "local_directory",
            "schedule_cron": "0 */6 * * *",
            "directory_paths": [str(corpus.root)],
            "data_types": ["tasks", "notes", "timelines"],
            "enabled": False,  # runs only when triggered
        }
        url = f"ws://127.0.0.1:{port}/"
        client = ReferenceClient(url, "bench", db=str(db_path), agents=[agent])
        try:
            await client.connect()
            first = await measure("first run", client, server)
            rerun = await measure("unchanged re-run", client, server)
            changed = change_files(corpus, args.changed)
            office.seen_files.clear()
            after = await measure(f"{len(changed)} files changed", client, server)
            task_rows = client.store.rows("tasks")
            other_rows = client.store.rows("notes") + client.store.rows("timelines")
        finally:
            await client.close()
            await daemon.stop()

    base_tokens = first.run.usage.prompt_tokens or 1
    base_calls = first.run.usage.llm_calls or 1
    rows = [m.row() for m in (first, rerun, after)]
    for r in rows:
        r["calls_ratio"] = round(r["llm_calls"] / base_calls, 4)
        r["tokens_ratio"] = round(r["prompt_tokens"] / base_tokens, 4)

    checks: dict[str, bool] = {
        "first run success": first.run.status == "success",
        "first run processed every file": first.run.items_processed == len(corpus.files),
        "re-run: 0 LLM calls": rerun.run.usage.llm_calls == TARGET_RERUN_CALLS
        and rerun.server_calls == 0,
        "changed: <= 10% of first-run prompt tokens": after.run.usage.prompt_tokens
        <= TARGET_CHANGED_TOKEN_RATIO * first.run.usage.prompt_tokens,
        "changed: only the changed files were read": sorted(office.seen_files)
        == sorted(str(p) for p in changed),
        "usage matches the server (calls, tokens)": all(
            m.run.usage.llm_calls == m.server_calls
            and m.run.usage.prompt_tokens == m.server_prompt_tokens
            for m in (first, rerun, after)
        ),
        "every task once, no duplicate notes/timelines": sorted(t["title"] for t in task_rows)
        == sorted(corpus.task_titles)
        and len(other_rows) == len({r["title"] for r in other_rows}),
    }

    print(
        f"corpus: {len(corpus.files)} files, {corpus_bytes // 1024} KiB, "
        f"{len(corpus.projects)} projects; {len(changed)} files changed "
        f"({args.changed:.0%})"
    )
    head = (
        f"{'run':<20} {'status':<8} {'files':>5} {'created':>7} {'updated':>7} "
        f"{'calls':>6} {'srv calls':>9} {'prompt tok':>10} {'srv tok':>9} "
        f"{'calls x':>8} {'tokens x':>8} {'s':>6}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['run']:<20} {r['status']:<8} {r['files_processed']:>5} {r['items_created']:>7} "
            f"{r['items_updated']:>7} {r['llm_calls']:>6} {r['server_calls']:>9} "
            f"{r['prompt_tokens']:>10} {r['server_prompt_tokens']:>9} {r['calls_ratio']:>8} "
            f"{r['tokens_ratio']:>8} {r['seconds']:>6}"
        )
    for name, ok in checks.items():
        print(f"  {'ok    ' if ok else 'MISSED'} {name}")
    print(
        json.dumps(
            {
                "benchmark": "llm_cost",
                "files": len(corpus.files),
                "corpus_bytes": corpus_bytes,
                "changed_files": len(changed),
                "results": rows,
                "targets": {
                    "rerun_calls": TARGET_RERUN_CALLS,
                    "changed_tokens_ratio_max": TARGET_CHANGED_TOKEN_RATIO,
                },
                "checks": checks,
                "met": all(checks.values()),
            }
        )
    )
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--changed", type=float, default=0.05, help="fraction of files changed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    sys.exit(asyncio.run(main(parser.parse_args())))
