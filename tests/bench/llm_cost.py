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

``--corpus realistic`` (issue 10) builds instead a corpus of realistic shape,
deterministic from ``--seed``: one-line notes to long documents (a few over
100 KB), some PDFs and ``.docx``, most files with nothing actionable, marker
lines at random positions (deep inside long files too), in project folders
(named like the app's projects) and loose folders. It runs (a) the first run,
(b) an unchanged re-run, (c) 5% of the files changed, (d) ``--moved`` files
moved or renamed, and reports LLM calls per changed file, prompt tokens as a
ratio to the corpus's own tokens (its extracted text's characters // 4, the
server's estimate), recall (markers that became rows, by title and project)
and duplicates, plus where the first run's prompt tokens go (triage vs
processing; system prompt, tool schemas, file text, framing, earlier turns).

    python tests/bench/llm_cost.py --corpus realistic [--files 300] [--seed 7] [--moved 10]

Targets (issue 10): first run <= 1.5x the corpus's tokens and <= 1.2 LLM calls per
changed file, recall 100%, no duplicates; (b) 0 calls; (c) <= 10% of the first
run's tokens; (d) 0 calls. In both modes the run budget is raised far above what
the run needs (``[runs.budget]``), so the first run is one run.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import

import argparse
import asyncio
import contextlib
import json
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agents.local_dir.extract import extract_text
from daemon.app import Daemon
from daemon.config import ENV_VARS, load_config
from daemon.paths import Paths
from daemon.state import StateStore
from protocol.frames import RunComplete
from protocol.reference import ReferenceClient, SqliteStore
from tests.agents.local_dir.builders import write_docx, write_pdf
from tests.support.agent_model import OfficeModel
from tests.support.llm_server import FakeLLMServer, estimate_prompt_tokens

TARGET_RERUN_CALLS = 0
TARGET_CHANGED_TOKEN_RATIO = 0.10
AGENT_ID = "bench-folder"
# [runs.budget] far above what a run here needs: the first run must be one run
# (the default budget would split a large first run over several runs).
BIG_BUDGET = {
    "runs.budget.max_llm_calls": 1_000_000,
    "runs.budget.max_prompt_tokens": 1_000_000_000,
    "runs.budget.max_cost_usd": 1_000_000.0,
}

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


@contextlib.asynccontextmanager
async def bench_daemon(
    work: Path, server: FakeLLMServer, root: Path, db_path: Path
) -> AsyncIterator[ReferenceClient]:
    """The daemon in process under ``work/home`` (its model: ``server``; a budget that
    never splits a run) and the reference client as the app, with the bench's agent."""
    paths = Paths.under(work / "home").ensure()
    config = load_config(
        paths,
        {},
        overrides={
            "port": 0,
            "log_level": "WARNING",
            "llm.model": "openai/office",
            "llm.api_base": server.base_url,
            **BIG_BUDGET,
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
        "directory_paths": [str(root)],
        "data_types": ["tasks", "notes", "timelines"],
        "enabled": False,  # runs only when triggered
    }
    client = ReferenceClient(f"ws://127.0.0.1:{port}/", "bench", db=str(db_path), agents=[agent])
    try:
        await client.connect()
        yield client
    finally:
        await client.close()
        await daemon.stop()


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
        if args.corpus == "realistic":
            return await _bench_realistic(args, work)
        return await _bench(args, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


async def _bench(args: argparse.Namespace, work: Path) -> int:
    corpus = build_corpus(work / "corpus", args.files or 200, args.projects)
    db_path = work / "app.db"
    with SqliteStore(db_path) as db:
        for name in corpus.projects:
            db.handle("insert", "projects", data={"name": name})
    corpus_bytes = sum(p.stat().st_size for p in corpus.files)

    office = OfficeModel()
    with FakeLLMServer(responder=office) as server:
        async with bench_daemon(work, server, corpus.root, db_path) as client:
            first = await measure("first run", client, server)
            rerun = await measure("unchanged re-run", client, server)
            changed = change_files(corpus, args.changed)
            office.seen_files.clear()
            after = await measure(f"{len(changed)} files changed", client, server)
            task_rows = client.store.rows("tasks")
            other_rows = client.store.rows("notes") + client.store.rows("timelines")

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


# -- the realistic corpus (issue 10) ----------------------------------------------------

TARGET_FIRST_TOKENS_X_CORPUS = 1.5
TARGET_CALLS_PER_FILE = 1.2
LOOSE_FOLDERS = ["", "", "Downloads", "Personal", "Scans/2026"]
PROJECT_SUBFOLDERS = ["", "", "", "meetings", "drafts", "research", "admin/2026"]
PROSE = (
    WORDS
    + (
        "invoice contract supplier schedule meeting minutes agenda review report budget quarter "
        "launch proposal feedback colleague deadline brief sketch photo catalogue print order "
        "shipping weather lunch parking permit insurance receipt travel hotel train ticket "
        "summary chapter introduction conclusion method results discussion interview survey"
    ).split()
)
ONE_LINERS = [
    "call the garage about the winter tyres",
    "wifi password is on the back of the router",
    "ideas for the blog: slow mornings, desk plants, the new lamp",
    "parking permit renewed until March",
    "remember the umbrella is in the car",
    "lunch with Sam was fun, try the noodle place again",
    "the printer needs cyan toner soon",
    "book recommendations from Kim: three novels and a cookbook",
]
VERBS = ["Send", "Review", "Draft", "Book", "Call", "Update", "Print", "Check", "Order", "Plan"]
OBJECTS = [
    "the revised quote",
    "the venue contract",
    "the photo selection",
    "the invoice for March",
    "the shipping labels",
    "the press kit",
    "the speaker notes",
    "the budget sheet",
    "the client survey",
    "the onboarding checklist",
]
# (share of files, min chars, max chars) of the extracted text
SIZES = [
    ("one-line", 0.25, 15, 160),
    ("small", 0.35, 300, 3_000),
    ("medium", 0.24, 3_000, 15_000),
    ("long", 0.13, 15_000, 60_000),
    ("huge", 0.03, 100_000, 180_000),
]
KIND_NAMES = {
    "task": ("tasks", "TASK"),
    "note": ("notes", "NOTE"),
    "timeline": ("timelines", "MILESTONE"),
}


@dataclass
class Marker:
    kind: str  # task | note | timeline
    title: str
    project: str | None
    line: str


@dataclass
class Doc:
    path: Path
    project: str | None
    size_class: str
    blocks: list[str]  # paragraphs; a marker line is a block of its own
    markers: list[Marker]

    def render(self) -> None:
        """Write the file: a text file, a PDF (one page a block) or a .docx (one
        paragraph a block)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ext = self.path.suffix
        if ext == ".pdf":
            write_pdf(self.path, self.blocks)
        elif ext == ".docx":
            body = "".join(
                f'<w:p><w:r><w:t xml:space="preserve">{xml_escape(b)}</w:t></w:r></w:p>'
                for b in self.blocks
            )
            write_docx(self.path, body)
        else:
            self.path.write_text("\n\n".join(self.blocks) + "\n", encoding="utf-8")


@dataclass
class RealCorpus:
    root: Path
    docs: list[Doc]
    projects: list[str]

    def markers(self) -> list[Marker]:
        return [m for d in self.docs for m in d.markers]


def prose_blocks(rng: random.Random, chars: int) -> list[str]:
    """Paragraphs (with the odd heading and bullet list) of about ``chars`` characters."""
    blocks: list[str] = []
    total = 0
    while total < chars:
        roll = rng.random()
        if roll < 0.08:
            block = f"## {' '.join(rng.choice(PROSE) for _ in range(3)).capitalize()}"
        elif roll < 0.18:
            block = "\n".join(
                f"- {' '.join(rng.choice(PROSE) for _ in range(rng.randint(3, 9)))}"
                for _ in range(rng.randint(2, 5))
            )
        else:
            sentences = [
                " ".join(rng.choice(PROSE) for _ in range(rng.randint(8, 18))).capitalize() + "."
                for _ in range(rng.randint(2, 6))
            ]
            block = " ".join(sentences)
        blocks.append(block)
        total += len(block) + 2
    return blocks


def _marker(rng: random.Random, kind: str, project: str | None, tag: str) -> Marker:
    if kind == "task":
        title = f"{rng.choice(VERBS)} {rng.choice(OBJECTS)} ({tag})"
        extra = rng.choice(["", "", " | priority high", f" | due 2026-12-{rng.randint(10, 28)}"])
        return Marker("task", title, project, f"TASK: {title}{extra}")
    if kind == "note":
        title = f"Decision on {rng.choice(OBJECTS)} ({tag})"
        content = " ".join(rng.choice(PROSE) for _ in range(rng.randint(6, 16)))
        return Marker("note", title, project, f"NOTE: {title} | {content}")
    title = f"{rng.choice(['Launch', 'Delivery', 'Review', 'Sign-off'])} of {rng.choice(OBJECTS)} ({tag})"
    return Marker("timeline", title, project, f"MILESTONE: {title} | 2027-01-{rng.randint(10, 28)}")


def build_realistic(root: Path, n_files: int, n_projects: int, seed: int) -> RealCorpus:
    """A deterministic corpus of realistic shape (see the module docstring)."""
    rng = random.Random(seed)
    projects = PROJECTS[:n_projects]
    n_huge = max(3, round(n_files * 0.03))
    classes: list[str] = ["huge"] * n_huge
    weights = [s[1] for s in SIZES if s[0] != "huge"]
    names = [s[0] for s in SIZES if s[0] != "huge"]
    classes += rng.choices(names, weights=weights, k=n_files - n_huge)
    rng.shuffle(classes)
    bounds = {s[0]: (s[2], s[3]) for s in SIZES}
    docs: list[Doc] = []
    for i, size_class in enumerate(classes):
        loose = rng.random() < 0.2
        project = None if loose else rng.choice(projects)
        sub = rng.choice(LOOSE_FOLDERS if loose else PROJECT_SUBFOLDERS)
        folder = root / sub if loose else root / str(project) / sub
        lo, hi = bounds[size_class]
        roll = rng.random()
        if size_class == "one-line":
            ext = ".txt"
        elif size_class in ("small", "medium", "long") and roll < 0.12:
            ext = ".pdf"
        elif size_class != "one-line" and roll < 0.24:
            ext = ".docx"
        else:
            ext = rng.choice([".md", ".md", ".txt"])
        stem = rng.choice(["notes", "minutes", "draft", "report", "brief", "scan", "memo", "plan"])
        path = folder / f"{stem}-{i:04d}{ext}"
        # most files hold nothing actionable; long ones hold a few markers more often
        has_items = rng.random() < (0.3 if size_class in ("one-line", "small") else 0.45)
        n_items = rng.choice([1, 1, 1, 2, 2, 3, 4]) if has_items else 0
        if size_class == "one-line":
            n_items = min(n_items, 1)
        markers = []
        for k in range(n_items):
            kind = rng.choices(["task", "note", "timeline"], weights=[6, 2.5, 1.5])[0]
            if kind == "timeline" and project is None:
                kind = "task"  # a milestone needs a project (else a notice, not a row)
            markers.append(_marker(rng, kind, project, f"r{i}.{k}"))
        if size_class == "one-line":
            blocks = [markers[0].line if markers else rng.choice(ONE_LINERS)]
        else:
            title = f"# {stem.capitalize()} {i}" + (f" - {project}" if project else "")
            blocks = [title, *prose_blocks(rng, rng.randint(lo, hi))]
            for n, m in enumerate(markers):
                if n == 0 and size_class in ("long", "huge"):
                    at = rng.randint(len(blocks) * 2 // 3, len(blocks))  # deep inside
                else:
                    at = rng.randint(1, len(blocks))
                blocks.insert(at, m.line)
        doc = Doc(path, project, size_class, blocks, markers)
        doc.render()
        docs.append(doc)
    return RealCorpus(root, docs, projects)


def corpus_tokens(corpus: RealCorpus) -> tuple[int, int]:
    """(characters, tokens) of the corpus's extracted text, as the daemon extracts it."""
    chars = sum(len(extract_text(d.path)) for d in corpus.docs)
    return chars, chars // 4


def change_docs(corpus: RealCorpus, fraction: float, rng: random.Random) -> list[Doc]:
    """Insert one new TASK line at a random place in ``fraction`` of the files."""
    count = max(1, round(len(corpus.docs) * fraction))
    chosen = sorted(rng.sample(range(len(corpus.docs)), count))
    changed = []
    for n in chosen:
        doc = corpus.docs[n]
        m = _marker(rng, "task", doc.project, f"c{n}")
        doc.markers.append(m)
        doc.blocks.insert(rng.randint(len(doc.blocks) // 2, len(doc.blocks)), m.line)
        doc.render()
        changed.append(doc)
    return changed


def move_docs(corpus: RealCorpus, count: int, rng: random.Random) -> list[tuple[Path, Path]]:
    """Move ``count`` files: half renamed in place, half moved to another folder of the
    same project (or another loose folder); content unchanged."""
    moves = []
    for k, n in enumerate(sorted(rng.sample(range(len(corpus.docs)), count))):
        doc = corpus.docs[n]
        old = doc.path
        if k % 2 == 0:
            new = old.with_name(f"renamed-{old.name}")
        else:
            base = corpus.root / str(doc.project) if doc.project else corpus.root
            new = base / "moved" / old.name
        new.parent.mkdir(parents=True, exist_ok=True)
        old.rename(new)
        doc.path = new
        moves.append((old, new))
    return moves


def recall(corpus: RealCorpus, store: SqliteStore) -> dict[str, Any]:
    """Markers that became rows (title and project), duplicates and extra rows."""
    project_ids = {r["name"]: r["id"] for r in store.rows("projects")}
    found = missing = wrong_project = duplicates = extra = 0
    missing_titles: list[str] = []
    expected_by_table: dict[str, list[Marker]] = {}
    for m in corpus.markers():
        expected_by_table.setdefault(KIND_NAMES[m.kind][0], []).append(m)
    for table in ("tasks", "notes", "timelines"):
        rows = store.rows(table)
        by_title: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_title.setdefault(str(row["title"]), []).append(row)
        duplicates += sum(len(v) - 1 for v in by_title.values() if len(v) > 1)
        expected = expected_by_table.get(table, [])
        titles = {m.title for m in expected}
        extra += sum(len(v) for t, v in by_title.items() if t not in titles)
        for m in expected:
            got = by_title.get(m.title)
            if not got:
                missing += 1
                missing_titles.append(m.title)
                continue
            found += 1
            want = project_ids.get(m.project) if m.project else None
            if got[0].get("projectId") != want:
                wrong_project += 1
    total = found + missing
    return {
        "markers": total,
        "found": found,
        "recall": round(found / total, 4) if total else 1.0,
        "missing": missing_titles[:10],
        "wrong_project": wrong_project,
        "duplicates": duplicates,
        "extra_rows": extra,
    }


_UNTRUSTED = re.compile(r"<untrusted_content>\n?(.*?)\n?</untrusted_content>", re.S)


def breakdown(requests: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Where the prompt tokens of ``requests`` go: per kind of call (triage, processing
    first step, processing follow-up step, other), the server's token estimate split
    into system prompt, tool schemas, file text (inside ``<untrusted_content>``), the
    project's existing records listed with the file, the rest (project line, headers,
    JSON framing) and earlier turns (assistant tool calls and tool results)."""
    out: dict[str, dict[str, int]] = {}
    for body in requests:
        messages = body.get("messages", [])
        system = (
            messages[0].get("content", "") if messages and messages[0]["role"] == "system" else ""
        )
        if "You sort files into the user's projects" in system:
            kind = "triage"
        elif "You keep a freelancer's work organised" in system:
            kind = (
                "process: 1st step" if messages[-1].get("role") == "user" else "process: follow-up"
            )
        else:
            kind = "other"
        total = len(json.dumps([messages, body.get("tools") or []], sort_keys=True))
        tools = len(json.dumps(body.get("tools") or [], sort_keys=True))
        sys_c = len(json.dumps(system)) if system else 0
        file_c = user_c = turns_c = existing_c = 0
        for msg in messages[1:]:
            content = msg.get("content") or ""
            if msg.get("role") == "user" and isinstance(content, str):
                inner = sum(len(json.dumps(t)) - 2 for t in _UNTRUSTED.findall(content))
                file_c += inner
                start = content.find("Existing records of this project:")
                if start >= 0:
                    end = content.find("\nFile: ", start)
                    end = content.find("<untrusted_content>", start) if end < 0 else end
                    existing_c += len(json.dumps(content[start:end])) - 2
                user_c += len(json.dumps(msg, sort_keys=True)) - inner
            else:
                turns_c += len(json.dumps(msg, sort_keys=True))
        row = out.setdefault(
            kind,
            {
                "calls": 0,
                "tokens": 0,
                "system": 0,
                "tools": 0,
                "file_text": 0,
                "existing": 0,
                "framing": 0,
                "turns": 0,
                "parts": 0,
            },
        )
        row["calls"] += 1
        row["tokens"] += total // 4
        row["system"] += sys_c // 4
        row["tools"] += tools // 4
        row["file_text"] += file_c // 4
        row["turns"] += turns_c // 4
        row["existing"] += existing_c // 4
        row["framing"] += (total - sys_c - tools - file_c - existing_c - turns_c) // 4
        if kind == "process: 1st step" and re.search(r"\(part \d+ of \d+\)", str(messages[1:2])):
            row["parts"] += 1
    return out


_FILE = re.compile(r"^File: (.*?)(?: \(part \d+ of \d+\))?$", re.M)


def per_size_class(
    corpus: RealCorpus, requests: list[dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """Processing calls and their prompt tokens per size class of file, by the ``File:``
    headers of each call's user message: a call that carries k files (a batch of small
    files) counts 1/k call and 1/k of its tokens for each; triage calls are not included.
    ``batched_files`` counts the files that went to the model in a batch."""
    cls = {str(d.path): d.size_class for d in corpus.docs}
    out: dict[str, dict[str, float]] = {
        name: {
            "files": sum(1 for d in corpus.docs if d.size_class == name),
            "with_markers": sum(1 for d in corpus.docs if d.size_class == name and d.markers),
            "batched_files": 0,
            "calls": 0.0,
            "tokens": 0.0,
        }
        for name, *_ in SIZES
    }
    for body in requests:
        messages = body.get("messages", [])
        if len(messages) < 2 or "You keep a freelancer's work organised" not in str(
            messages[0].get("content")
        ):
            continue
        files = _FILE.findall(str(messages[1].get("content"))) or [""]
        tokens = estimate_prompt_tokens(body)
        for path in files:
            row = out.setdefault(
                cls.get(path, "unknown"),
                {"files": 0, "with_markers": 0, "batched_files": 0, "calls": 0.0, "tokens": 0.0},
            )
            row["calls"] += 1 / len(files)
            row["tokens"] += tokens / len(files)
            if len(files) > 1 and messages[-1].get("role") == "user":
                row["batched_files"] += 1
    for row in out.values():
        row["calls"] = round(row["calls"], 2)
        row["tokens"] = round(row["tokens"])
    return out


async def _bench_realistic(args: argparse.Namespace, work: Path) -> int:
    n_files = args.files or 300
    build_start = time.perf_counter()
    corpus = build_realistic(work / "corpus", n_files, args.projects, args.seed)
    build_s = time.perf_counter() - build_start
    text_chars, text_tokens = corpus_tokens(corpus)
    corpus_bytes = sum(d.path.stat().st_size for d in corpus.docs)
    db_path = work / "app.db"
    with SqliteStore(db_path) as db:
        for name in corpus.projects:
            db.handle("insert", "projects", data={"name": name})
    rng = random.Random(args.seed + 1)

    office = OfficeModel()
    with FakeLLMServer(responder=office) as server:
        async with bench_daemon(work, server, corpus.root, db_path) as client:
            first = await measure("first run", client, server)
            first_requests = server.requests
            first_recall = recall(corpus, client.store)
            kinds = {k: sum(1 for m in corpus.markers() if m.kind == k) for k in KIND_NAMES}
            with_items = sum(1 for d in corpus.docs if d.markers)
            by_class = per_size_class(corpus, server.requests)
            rerun = await measure("unchanged re-run", client, server)
            changed = change_docs(corpus, args.changed, rng)
            want_seen = sorted(str(d.path) for d in changed)
            office.seen_files.clear()
            after = await measure(f"{len(changed)} files changed", client, server)
            changed_seen = sorted(set(office.seen_files))
            changed_recall = recall(corpus, client.store)
            moves = move_docs(corpus, args.moved, rng)
            office.seen_files.clear()
            moved = await measure(f"{len(moves)} files moved", client, server)
            final_recall = recall(corpus, client.store)

    n = len(corpus.docs)
    u1 = first.run.usage
    calls_per_file = u1.llm_calls / n
    tokens_x_corpus = u1.prompt_tokens / max(1, text_tokens)
    base_tokens = u1.prompt_tokens or 1
    base_calls = u1.llm_calls or 1
    measures = (first, rerun, after, moved)
    rows = [m.row() for m in measures]
    for r in rows:
        r["calls_ratio"] = round(r["llm_calls"] / base_calls, 4)
        r["tokens_ratio"] = round(r["prompt_tokens"] / base_tokens, 4)
    rows[0]["calls_per_changed_file"] = round(calls_per_file, 4)
    rows[0]["tokens_x_corpus"] = round(tokens_x_corpus, 4)
    rows[2]["calls_per_changed_file"] = round(after.run.usage.llm_calls / len(changed), 4)

    checks: dict[str, bool] = {
        f"first run: <= {TARGET_FIRST_TOKENS_X_CORPUS}x the corpus's tokens": tokens_x_corpus
        <= TARGET_FIRST_TOKENS_X_CORPUS,
        f"first run: <= {TARGET_CALLS_PER_FILE} LLM calls per changed file": calls_per_file
        <= TARGET_CALLS_PER_FILE,
        "first run: one run, success, every file processed": first.run.status == "success"
        and first.run.items_processed == n,
        "first run: recall 100% (titles), right projects": first_recall["recall"] == 1.0
        and first_recall["wrong_project"] == 0,
        "first run: no duplicates, no extra rows": first_recall["duplicates"] == 0
        and first_recall["extra_rows"] == 0,
        "re-run: 0 LLM calls": rerun.run.usage.llm_calls == 0 and rerun.server_calls == 0,
        "changed: <= 10% of first-run prompt tokens": after.run.usage.prompt_tokens
        <= TARGET_CHANGED_TOKEN_RATIO * u1.prompt_tokens,
        "changed: only the changed files were read": changed_seen == want_seen,
        "changed: recall 100%, no duplicates": changed_recall["recall"] == 1.0
        and changed_recall["duplicates"] == 0
        and changed_recall["extra_rows"] == 0,
        "moved: 0 LLM calls": moved.run.usage.llm_calls == 0 and moved.server_calls == 0,
        "moved: success, rows unchanged": moved.run.status == "success"
        and final_recall == changed_recall,
        "usage matches the server (calls, tokens)": all(
            m.run.usage.llm_calls == m.server_calls
            and m.run.usage.prompt_tokens == m.server_prompt_tokens
            for m in measures
        ),
    }

    sizes = {s[0]: sum(1 for d in corpus.docs if d.size_class == s[0]) for s in SIZES}
    exts = {
        e: sum(1 for d in corpus.docs if d.path.suffix == e)
        for e in (".md", ".txt", ".pdf", ".docx")
    }
    print(
        f"corpus (realistic, seed {args.seed}): {n} files, {corpus_bytes // 1024} KiB on disk, "
        f"{text_chars} chars extracted = {text_tokens} tokens; built in {build_s:.1f} s"
    )
    print(
        f"  sizes {sizes}; types {exts}; {with_items} files with markers "
        f"({n - with_items} with nothing actionable); first-run markers {kinds}; "
        f"{sum(1 for d in corpus.docs if d.project is None)} loose files; "
        f"{len(corpus.projects)} projects"
    )
    print(
        f"  run budget raised to {BIG_BUDGET['runs.budget.max_llm_calls']} calls / "
        f"{BIG_BUDGET['runs.budget.max_prompt_tokens']} prompt tokens: the first run is one run"
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
    print(
        f"first run: {calls_per_file:.3f} LLM calls per changed file "
        f"(target <= {TARGET_CALLS_PER_FILE}); prompt tokens {tokens_x_corpus:.3f}x the corpus's "
        f"{text_tokens} (target <= {TARGET_FIRST_TOKENS_X_CORPUS}); recall "
        f"{first_recall['found']}/{first_recall['markers']}, duplicates "
        f"{first_recall['duplicates']}, extra rows {first_recall['extra_rows']}, wrong project "
        f"{first_recall['wrong_project']}"
    )
    print(
        f"changed run: {after.run.usage.llm_calls} calls for {len(changed)} files "
        f"({rows[2]['calls_per_changed_file']} per changed file), "
        f"{rows[2]['tokens_ratio']:.2%} of the first run's tokens (target <= "
        f"{TARGET_CHANGED_TOKEN_RATIO:.0%}); moved run: {moved.run.usage.llm_calls} calls"
    )
    if changed_seen != want_seen:
        print(f"  changed run read {sorted(set(changed_seen) - set(want_seen))} beyond the changed")
        print(f"  changed run did not read {sorted(set(want_seen) - set(changed_seen))}")
    if first_recall["missing"]:
        print(f"  missing (first 10): {first_recall['missing']}")
    split = breakdown(first_requests)
    cols = ["calls", "tokens", "system", "tools", "file_text", "existing", "framing", "turns"]
    print(
        "first run's prompt tokens by kind of call (server estimate; x corpus = / corpus tokens):"
    )
    print(f"  {'kind':<20} " + " ".join(f"{c:>10}" for c in cols) + f" {'x corpus':>9}")
    total_row = {c: sum(r[c] for r in split.values()) for c in cols}
    for kind, r in [*sorted(split.items()), ("total", total_row)]:
        print(
            f"  {kind:<20} "
            + " ".join(f"{r[c]:>10}" for c in cols)
            + f" {r['tokens'] / max(1, text_tokens):>9.3f}"
        )
    print("first run's processing calls by size class of file:")
    print(
        f"  {'class':<10} {'files':>6} {'w/ marker':>9} {'batched':>8} {'calls':>7} "
        f"{'calls/file':>10} {'tokens':>10}"
    )
    for name, r in by_class.items():
        per = r["calls"] / r["files"] if r["files"] else 0.0
        print(
            f"  {name:<10} {r['files']:>6} {r['with_markers']:>9} {r['batched_files']:>8} "
            f"{r['calls']:>7.1f} {per:>10.2f} {r['tokens']:>10.0f}"
        )
    for kind, r in sorted(split.items()):
        c = r["calls"] or 1
        print(
            f"  per {kind} call: {r['tokens'] // c} tokens = system {r['system'] // c} + "
            f"tools {r['tools'] // c} + file text {r['file_text'] // c} + existing records "
            f"{r['existing'] // c} + framing "
            f"{r['framing'] // c} + turns {r['turns'] // c}"
        )
    parts = sum(r.get("parts", 0) for r in split.values())
    print(f"  (processing first steps on a part of a chunked file: {parts})")
    for name, ok in checks.items():
        print(f"  {'ok    ' if ok else 'MISSED'} {name}")
    print(
        json.dumps(
            {
                "benchmark": "llm_cost",
                "corpus": "realistic",
                "seed": args.seed,
                "files": n,
                "corpus_bytes": corpus_bytes,
                "corpus_chars": text_chars,
                "corpus_tokens": text_tokens,
                "changed_files": len(changed),
                "moved_files": len(moves),
                "results": rows,
                "recall": {"first": first_recall, "changed": changed_recall, "moved": final_recall},
                "first_run_breakdown": split,
                "first_run_by_size_class": by_class,
                "targets": {
                    "first_tokens_x_corpus_max": TARGET_FIRST_TOKENS_X_CORPUS,
                    "first_calls_per_changed_file_max": TARGET_CALLS_PER_FILE,
                    "rerun_calls": TARGET_RERUN_CALLS,
                    "changed_tokens_ratio_max": TARGET_CHANGED_TOKEN_RATIO,
                    "moved_calls": 0,
                },
                "checks": checks,
                "met": all(checks.values()),
            }
        )
    )
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=["uniform", "realistic"], default="uniform")
    parser.add_argument(
        "--files", type=int, default=None, help="200 (uniform) or 300 (realistic) unless given"
    )
    parser.add_argument("--seed", type=int, default=7, help="realistic corpus: its seed")
    parser.add_argument("--moved", type=int, default=10, help="realistic: files moved/renamed")
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--changed", type=float, default=0.05, help="fraction of files changed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    sys.exit(asyncio.run(main(parser.parse_args())))
