"""What the cloud clients hand to the pipeline: message refs, messages, changes.

Rules:

- Plain frozen dataclasses, no I/O. Ids are the provider's stable ids (Gmail message
  ids, Graph immutable ids, Teams message ids within their chat).
- ``fingerprint`` changes when the provider's copy changes (Teams edits); for mail it
  is the id (mail does not change).
- ``Changes.cursor`` is an opaque string the pipeline stores once the refs were
  processed; ``resynced`` says the old cursor had expired and the refs may include
  messages already processed (the ledger dedupes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from agents.cloud.text import clip

__all__ = ["Attachment", "Changes", "Message", "MessageRef"]


@dataclass(frozen=True)
class MessageRef:
    """A message's identity and headers: enough to triage it, not its body."""

    provider: str  # gmail | outlook | teams
    id: str
    thread_id: str | None = None
    sender: str = ""
    subject: str = ""
    received_at: datetime | None = None
    snippet: str = ""
    container: str | None = None  # Outlook folder or Teams chat id
    fingerprint: str = ""
    has_headers: bool = True  # False: Gmail list results; fetch them with ``refs_with_headers``


@dataclass(frozen=True)
class Attachment:
    """An attachment; ``text`` when it was extracted, else ``skipped`` says why not."""

    filename: str
    mime_type: str
    size: int
    text: str | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class Message:
    """A message with its body as plain text, quoted reply history removed."""

    ref: MessageRef
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()

    def as_text(self, max_chars: int = 8000) -> tuple[str, bool]:
        """Headers, body and attachment texts as one text of at most ``max_chars``,
        and whether anything was cut. This is untrusted content: the caller marks it so.
        """
        lines = [f"{name}: {value}" for name, value in self.headers.items() if value]
        parts = ["\n".join(lines), self.body.strip()]
        for att in self.attachments:
            if att.text and att.text.strip():
                parts.append(f"[attachment {att.filename}]\n{att.text.strip()}")
            else:
                parts.append(f"[attachment {att.filename}: {att.skipped or 'no text'}]")
        return clip("\n\n".join(p for p in parts if p), max_chars)


@dataclass(frozen=True)
class Changes:
    """New message refs since a cursor, and the cursor that follows them."""

    refs: list[MessageRef]
    cursor: str
    resynced: bool = False
