"""The agent-setup journey: a short conversation that writes an agent's ``prompt_template``.

Rules (issue 11, protocol.md ``journey_*``):

- A :class:`Journey` is the state of one conversation, in memory only; nothing here
  saves anything (the app saves the agent with ``agents_sync``).
- The first question is fixed by the kind, without a model call: files for
  ``local_directory``, mail for ``gmail``/``outlook``, messages for ``teams``. With
  an existing ``prompt_template`` the model sees it as the starting point and the
  first question asks what should change.
- Each user reply is one model call offering exactly one tool, ``finish_journey``.
  A text answer is the next question. A ``finish_journey`` call ends the journey:
  its arguments are the result, validated like an agent config (the fields of
  ``protocol.agent_config``'s models); an invalid suggestion goes back to the model
  as the tool's error, and it may try again (``max_fixes`` times per reply).
- At most ``max_turns`` user replies: the last one's call forces the finish tool
  (``tool_choice``) with a nudge; a model that still does not finish is a
  :class:`~agents.errors.JourneyError`.
- A reply that fails (model error, cancel) leaves the journey as it was before it,
  so the user may send it again.
- The loop of ``agents.loop`` is not used: it needs a store and cannot force a tool;
  this is its small cousin for a conversation whose only tool ends it.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol.agent_config import (
    DATA_TYPES,
    CloudAgent,
    LocalDirectoryAgent,
    agent_config_adapter,
)

from .errors import JourneyError
from .llm import LLM, Message, Reply
from .loop import assistant_with_calls, until_cancelled

__all__ = [
    "FINISH_TOOL",
    "JOURNEY_KINDS",
    "MAX_TURNS",
    "FinishArgs",
    "Journey",
    "JourneyResult",
    "JourneyStep",
    "validate_result",
]

MAX_TURNS = 5
FINISH_TOOL = "finish_journey"

# What an agent of each kind reads.
JOURNEY_KINDS: dict[str, str] = {
    "local_directory": "files",
    "gmail": "mail",
    "outlook": "mail",
    "teams": "messages",
}

_FIRST_QUESTIONS = {
    "files": (
        "Which files should this agent read, and what should it turn them into? For "
        "example: meeting notes in a project folder become tasks and notes for that project."
    ),
    "mail": (
        "Which emails should this agent read, and what should it do with them? For "
        "example: client requests become tasks with due dates, invoices become notes."
    ),
    "messages": (
        "Which chats or channels should this agent read, and what should it pick out? For "
        "example: requests addressed to you become tasks, decisions become notes."
    ),
}

_REFINE_QUESTION = (
    "This agent's instructions today are:\n\n{template}\n\n"
    "What should it do differently, or what is missing?"
)

_SYSTEM = """You help the user of a freelancer's desktop app set up a background agent. \
The agent runs on a schedule, reads {source} and writes tasks, notes, timelines \
(milestones) and projects into the app. Your job is to write the agent's instructions, \
its prompt_template: what to look for, what to create from it, how to name, date and \
prioritise things, and what to ignore, as short concrete rules addressed to the agent.

Ask one short question at a time, only about what is still unclear; the user answers at \
most {max_turns} times. As soon as you know enough, call {finish} with the \
prompt_template and your suggested settings. {settings}"""

_SETTINGS = {
    "files": (
        "Suggest data_types (a subset of tasks, notes, timelines, projects) and, when the "
        "user named kinds of files, file_extensions (such as .md, .pdf, .docx). Never "
        "send filter_config."
    ),
    "mail": (
        "Suggest data_types (a subset of tasks, notes, timelines, projects) and, when the "
        "user named them, filter_config: labels (Gmail), folders (Outlook), senders, "
        'date_range {{"from", "to"}} as ISO dates. Never send file_extensions.'
    ),
    "messages": (
        "Suggest data_types (a subset of tasks, notes, timelines, projects) and, when the "
        "user named them, filter_config: chats (chat or channel names), senders. Never "
        "send file_extensions."
    ),
}

_EXISTING = """

The agent already has these instructions. Refine them rather than start over: keep \
what the user does not change.
<current_prompt>
{template}
</current_prompt>"""

_LAST_TURN = (
    "That was the user's last answer. Call {finish} now with the best prompt_template "
    "you can write from the conversation; do not ask anything more."
)

# The fields of a throwaway agent config that the result is validated in.
_PLACEHOLDER: dict[str, Any] = {"id": "journey", "name": "journey", "schedule_cron": "0 9 * * 1-5"}


class FinishArgs(BaseModel):
    """End the conversation with the agent's instructions and suggested settings."""

    model_config = ConfigDict(extra="forbid")

    prompt_template: str = Field(
        min_length=1,
        max_length=20_000,
        description="The agent's instructions: concrete rules, addressed to the agent.",
    )
    data_types: list[str] | None = Field(
        default=None, description="What the agent may write: " + ", ".join(DATA_TYPES) + "."
    )
    file_extensions: list[str] | None = Field(
        default=None, description="Files agents only: the extensions to read, e.g. .md."
    )
    filter_config: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Mail and message agents only: {labels, senders, folders, chats, "
            "date_range: {from, to}}."
        ),
    )


@dataclass(frozen=True)
class JourneyResult:
    """What the journey wrote: validated, normalised like the agent config would be.
    A setting the model did not suggest is ``None``."""

    prompt_template: str
    data_types: list[str] | None = None
    file_extensions: list[str] | None = None
    filter_config: dict[str, Any] | None = None


@dataclass(frozen=True)
class JourneyStep:
    """One turn of the daemon: a question, or (``done``) the result."""

    message: str
    done: bool = False
    result: JourneyResult | None = None


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] in JOURNEY_KINDS:  # the union's tag ("local_directory") first
            loc.pop(0)
        where = ".".join(loc) or "arguments"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        out.append(f"{where}: {msg}")
    return out


def validate_result(kind: str, raw: Any) -> JourneyResult:
    """The result in ``raw`` (the tool's arguments) for an agent of ``kind``, validated
    by the agent config models; ``ValueError`` says what is wrong, for the model."""
    if kind not in JOURNEY_KINDS:
        raise ValueError(f"unknown kind {kind!r}; allowed: {', '.join(JOURNEY_KINDS)}")
    try:
        args = FinishArgs.model_validate(raw)
    except ValidationError as exc:
        raise ValueError("; ".join(_problems(exc))) from None
    files = JOURNEY_KINDS[kind] == "files"
    wrong = []
    if files and args.filter_config is not None:
        wrong.append("filter_config: only for mail and message agents; leave it out")
    if not files and args.file_extensions is not None:
        wrong.append("file_extensions: only for file agents; leave it out")
    if wrong:
        raise ValueError("; ".join(wrong))
    config: dict[str, Any] = {**_PLACEHOLDER, "kind": kind}
    config["prompt_template"] = args.prompt_template
    if args.data_types is not None:
        config["data_types"] = args.data_types
    if files:
        config["directory_paths"] = [os.path.abspath(os.sep)]
        if args.file_extensions is not None:
            config["file_extensions"] = args.file_extensions
    else:
        config["account"] = "journey"
        if args.filter_config is not None:
            config["filter_config"] = args.filter_config
    try:
        agent = agent_config_adapter.validate_python(config)
    except ValidationError as exc:
        raise ValueError("; ".join(_problems(exc))) from None
    template = agent.prompt_template.strip()
    if not template:
        raise ValueError("prompt_template: must not be blank")
    result = JourneyResult(
        prompt_template=template,
        data_types=list(agent.data_types) if args.data_types is not None else None,
    )
    if isinstance(agent, LocalDirectoryAgent) and args.file_extensions is not None:
        result = replace(result, file_extensions=list(agent.file_extensions))
    if isinstance(agent, CloudAgent) and args.filter_config is not None:
        dumped = agent.filter_config.model_dump(by_alias=True, exclude_defaults=True)
        result = replace(result, filter_config=dumped)
    return result


def finish_tool_schema() -> dict[str, Any]:
    """The OpenAI function-tool schema of ``finish_journey``."""
    schema = FinishArgs.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return {
        "type": "function",
        "function": {
            "name": FINISH_TOOL,
            "description": (FinishArgs.__doc__ or "").strip(),
            "parameters": schema,
        },
    }


class Journey:
    """One agent-setup conversation (see the module rules)."""

    def __init__(
        self,
        kind: str,
        *,
        existing_template: str | None = None,
        max_turns: int = MAX_TURNS,
        max_fixes: int = 2,
    ) -> None:
        if kind not in JOURNEY_KINDS:
            raise JourneyError(
                f"no journey for agents of kind {kind!r}; kinds: {', '.join(JOURNEY_KINDS)}"
            )
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, not {max_turns}")
        self.kind = kind
        self.existing_template = (existing_template or "").strip() or None
        self.max_turns = max_turns
        self.max_fixes = max_fixes
        self.turns = 0
        self.done = False
        source = JOURNEY_KINDS[kind]
        system = _SYSTEM.format(
            source={"files": "files in folders", "mail": "email", "messages": "chat messages"}[
                source
            ],
            max_turns=max_turns,
            finish=FINISH_TOOL,
            settings=_SETTINGS[source],
        )
        if self.existing_template:
            system += _EXISTING.format(template=self.existing_template)
        self.first_question = (
            _REFINE_QUESTION.format(template=self.existing_template)
            if self.existing_template
            else _FIRST_QUESTIONS[source]
        )
        self.messages: list[Message] = [
            {"role": "system", "content": system},
            {"role": "assistant", "content": self.first_question},
        ]
        self._tools = [finish_tool_schema()]

    def start(self) -> JourneyStep:
        """The first question (no model call)."""
        return JourneyStep(self.first_question)

    @property
    def turns_left(self) -> int:
        return max(0, self.max_turns - self.turns)

    async def reply(
        self, llm: LLM, text: str, *, cancel: asyncio.Event | None = None
    ) -> JourneyStep:
        """The user's answer: the next question, or the result. On any failure the
        journey is left as it was, so the same answer may be sent again."""
        if self.done:
            raise JourneyError("this journey is finished; start a new one to change the prompt")
        if self.turns >= self.max_turns:
            raise JourneyError(f"this journey already had its {self.max_turns} answers")
        saved = len(self.messages)
        try:
            self.turns += 1
            self.messages.append({"role": "user", "content": text})
            return await self._answer(llm, cancel)
        except BaseException:
            self.turns -= 1
            del self.messages[saved:]
            raise

    async def _answer(self, llm: LLM, cancel: asyncio.Event | None) -> JourneyStep:
        last = self.turns >= self.max_turns
        for _ in range(self.max_fixes + 1):
            messages = list(self.messages)
            if last:
                messages.append({"role": "user", "content": _LAST_TURN.format(finish=FINISH_TOOL)})
            reply = await until_cancelled(
                llm.complete(
                    messages,
                    self._tools,
                    tool_choice=(
                        {"type": "function", "function": {"name": FINISH_TOOL}} if last else None
                    ),
                ),
                cancel,
            )
            if not reply.tool_calls:
                if last:
                    continue  # it must finish: ask again
                question = reply.text.strip() or "Could you tell me a little more?"
                self.messages.append({"role": "assistant", "content": question})
                return JourneyStep(question)
            step = self._finish(reply)
            if step is not None:
                return step
        raise JourneyError(
            "the model did not finish the agent's instructions; please start the journey again"
        )

    def _finish(self, reply: Reply) -> JourneyStep | None:
        """Record the calls of ``reply``; the result when one of them is valid."""
        self.messages.append(assistant_with_calls(reply))
        result: JourneyResult | None = None
        for call in reply.tool_calls:
            if result is not None:
                outcome = "ignored: the journey is already finished"
            elif call.name != FINISH_TOOL:
                outcome = f"error: unknown tool {call.name!r}; the only tool is {FINISH_TOOL}"
            else:
                try:
                    raw = json.loads(call.arguments.strip() or "{}")
                    result = validate_result(self.kind, raw)
                    outcome = "saved"
                except ValueError as exc:  # json.JSONDecodeError is one too
                    outcome = f"error: invalid {FINISH_TOOL} arguments: {exc}; fix and call again"
            self.messages.append({"role": "tool", "tool_call_id": call.id, "content": outcome})
        if result is None:
            return None
        self.done = True
        message = reply.text.strip() or (
            "Here are the agent's instructions. Review them, then save to apply."
        )
        return JourneyStep(message, done=True, result=result)
