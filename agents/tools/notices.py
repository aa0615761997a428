"""Tools that tell the user something instead of writing: what the model could not place.

Rules:

- ``report_unplaced`` is how a background run says "I found this but cannot record
  it" (a milestone in a file that belongs to no project: a timeline needs one). The
  notice reaches ``run_complete.errors`` with the item it came from, and the run is
  ``partial``: an item is never dropped silently.
- It writes nothing and the model needs no answer from it (``informs=False``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .args import Args, IsoDate, Text
from .base import Tool, ToolContext, ToolOutcome, tool

__all__ = ["NOTICE_TOOLS", "UnplacedArgs"]


class UnplacedArgs(Args):
    kind: Literal["task", "note", "timeline"] = Field(description="What the item would be")
    title: Text = Field(description="The item's title")
    date: IsoDate | None = Field(None, description="Its date, if it has one")
    reason: Text = Field(description="Why it cannot be recorded (e.g. no project)")


@tool("notices", informs=False)
async def report_unplaced(ctx: ToolContext, a: UnplacedArgs) -> ToolOutcome:
    """Report an item you cannot record (e.g. a milestone with no project) so the user sees it."""
    when = f" ({a.date})" if a.date else ""
    notice = f"{a.kind} {a.title!r}{when} was not recorded: {a.reason}"
    return ToolOutcome("noted: the user will see this in the run's report", notices=[notice])


NOTICE_TOOLS: tuple[Tool, ...] = (report_unplaced,)
