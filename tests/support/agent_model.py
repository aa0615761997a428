"""A deterministic model for end-to-end agent tests (a ``FakeLLMServer`` responder).

It reads the prompts the local-directory agent really sends and answers like a
careful model would, so runs are reproducible:

- Triage (system prompt "You sort files into the user's projects"): a file goes to
  the project whose name appears as a folder on its path, else ``standalone``.
  A file shown whole (``"complete": true``) without any item line goes to ``skip``.
  ``triage_mode`` can make it answer prose, or name a project id that does not
  exist, to exercise validation.
- Processing (system prompt "You keep a freelancer's work organised"): the file's
  text between ``<untrusted_content>`` tags is read line by line:

      TASK: <title> [| due <YYYY-MM-DD>] [| priority <high|medium|low>]
      MILESTONE: <title> | <YYYY-MM-DD>
      NOTE: <title> | <content>

  On the first step it calls ``create_task`` / ``create_timeline`` /
  ``create_note`` for each line (with the prompt's ``project_id``; milestones
  need one: for standalone files they are reported with ``report_unplaced``), asking for ``isApproved: 1``
  to prove the daemon overrides it. After tool results arrive it answers a short
  sentence.
- Messages (the cloud agents' prompts say "messages" and ``Message: <id>``): triage
  puts a message in the project whose name appears in its subject or sender, else
  ``standalone``; processing reads the same item lines from the message's text.
  ``seen_messages`` lists the message ids processed, in order.
- Anything else (chat): a short text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tests.support.llm_server import Call, Reply, Text, ToolCalls

__all__ = ["OfficeModel", "parse_items"]

_PROJECT = re.compile(r"\(project_id ([^)]+)\)")
_MARKER = re.compile(r"(?:^|\s)(?:TASK|MILESTONE|NOTE)\s*:", re.I)


def parse_items(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(tool name, arguments) for each item line of a file's text."""
    calls: list[tuple[str, dict[str, Any]]] = []
    for line in text.splitlines():
        kind, _, rest = line.partition(":")
        parts = [p.strip() for p in rest.split("|")]
        kind = kind.strip().upper()
        if kind == "TASK" and parts[0]:
            args: dict[str, Any] = {"title": parts[0]}
            for extra in parts[1:]:
                key, _, value = extra.partition(" ")
                if key == "due":
                    args["due_date"] = value.strip()
                elif key == "priority":
                    args["priority"] = value.strip()
            calls.append(("create_task", args))
        elif kind == "MILESTONE" and len(parts) >= 2:
            calls.append(("create_timeline", {"title": parts[0], "date": parts[1]}))
        elif kind == "NOTE" and len(parts) >= 2:
            calls.append(("create_note", {"title": parts[0], "content": parts[1]}))
    return calls


@dataclass
class OfficeModel:
    triage_mode: str = "folders"  # folders | prose | unknown_id
    triage_calls: int = 0
    process_calls: int = 0
    seen_files: list[str] = field(default_factory=list)
    seen_messages: list[str] = field(default_factory=list)
    contents: list[str] = field(default_factory=list)  # every request's text (leak checks)

    def __call__(self, body: dict[str, Any]) -> Reply:
        messages = body.get("messages", [])
        system = messages[0].get("content", "") if messages else ""
        self.contents.append(json.dumps(body))
        if "You sort messages into the user's projects" in system:
            self.triage_calls += 1
            return self._triage_messages(messages)
        if "You sort files into the user's projects" in system:
            self.triage_calls += 1
            return self._triage(messages)
        if "You keep a freelancer's work organised" in system:
            self.process_calls += 1
            return self._process(messages)
        return Text("Nothing to do here.")

    def _triage(self, messages: list[dict[str, Any]]) -> Reply:
        if self.triage_mode == "prose":
            return Text("I think these files mostly belong to the website project.")
        user = messages[1]["content"]
        projects = dict(re.findall(r"^- ([^:]+): (.*)$", user, re.M))
        files = [json.loads(line) for line in user.splitlines() if line.startswith('{"path"')]
        answer: dict[str, list[str]] = {}
        for f in files:
            target = "standalone"
            for pid, name in projects.items():
                if name.strip().lower() in f["folder"].lower().split("/"):
                    target = pid
            if f.get("complete") and not _MARKER.search(f["snippet"]):
                target = "skip"  # the whole text was shown and holds nothing to record
            if self.triage_mode == "unknown_id" and target == "standalone":
                target = "p-does-not-exist"
            answer.setdefault(target, []).append(f["path"])
        return Text(json.dumps(answer))

    def _triage_messages(self, messages: list[dict[str, Any]]) -> Reply:
        user = messages[1]["content"]
        projects = dict(re.findall(r"^- ([^:]+): (.*)$", user, re.M))
        lines = [json.loads(line) for line in user.splitlines() if line.startswith('{"id"')]
        answer: dict[str, list[str]] = {}
        for line in lines:
            target = "standalone"
            where = f"{line.get('subject', '')} {line.get('from', '')}".lower()
            for pid, name in projects.items():
                if name.strip().lower() in where:
                    target = pid
            if line.get("complete") and not _MARKER.search(line["snippet"]):
                target = "skip"
            answer.setdefault(target, []).append(line["id"])
        return Text(json.dumps(answer))

    def _process(self, messages: list[dict[str, Any]]) -> Reply:
        if messages[-1].get("role") == "tool":
            return Text("Recorded the items from the file.")
        user = messages[1]["content"]
        # one file, or several small files of one project, each in its own block
        self.seen_files.extend(re.findall(r"^File: (.*?)(?: \(part \d+ of \d+\))?$", user, re.M))
        self.seen_messages.extend(
            re.findall(r"^Message: (.*?)(?: \(part \d+ of \d+\))?$", user, re.M)
        )
        project = _PROJECT.search(user)
        text = "\n".join(
            block.split("</untrusted_content>", 1)[0]
            for block in user.split("<untrusted_content>")[1:]
        )
        calls = []
        for name, args in parse_items(text):
            if project:
                args["project_id"] = project.group(1)
            elif name == "create_timeline":
                # a careful model reports what it cannot place instead of dropping it
                calls.append(
                    Call(
                        "report_unplaced",
                        {
                            "kind": "timeline",
                            "title": args["title"],
                            "date": args["date"],
                            "reason": "the file belongs to no project",
                        },
                    )
                )
                continue
            if name in ("create_task", "create_note"):
                args["isApproved"] = 1  # the daemon must ignore this
            calls.append(Call(name, args))
        if not calls:
            return Text("This file holds nothing to record.")
        return ToolCalls(calls)
