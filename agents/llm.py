"""The model interface (:class:`LLM`) and its only implementation, :class:`LiteLLM`.

Rules:

- One method, ``complete(messages, tools, *, stream, on_text, max_tokens) -> Reply``.
  Messages are OpenAI chat-format dicts, tools OpenAI function-tool schemas; what
  comes back is our own frozen types (:class:`Reply`, :class:`ToolCall`,
  :class:`Usage`). Tool-call arguments stay the raw JSON text the model wrote;
  parsing them is the tool loop's job (bad JSON goes back to the model).
- With ``stream=True`` every text delta is awaited on ``on_text`` as it arrives;
  tool-call deltas are assembled by ``index`` into whole calls.
- litellm is imported lazily, on the first ``complete()``, in a worker thread (the
  import takes seconds and must not stall the event loop), after
  ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (otherwise the import fetches prices from
  the internet), with its banners, telemetry and INFO logging off; the objects the
  import made are then frozen (``gc.freeze``) so full collections skip them.
  ``import agents.llm`` never imports litellm.
- Settings are given, never looked up: :class:`LLMSettings` comes from the
  composition root (``daemon.llm`` resolves config, environment and keyring); this
  module reads no ``TETHER_*`` variable and no keyring.
- No model configured: :class:`LLMNotConfigured`, before anything is imported.
- ``embed(texts)`` (``LiteLLM`` only; the ``Embedder`` protocol) calls
  ``litellm.aembedding`` with ``settings.embedding_model``, under the same lazy
  import, timeout, retry and error-sorting rules as ``complete``; one vector per
  text, in order. No embedding model: :class:`LLMNotConfigured`.
- Every call passes ``timeout`` (litellm's default is 6000 s), ``num_retries=0``
  (retries are ours) and ``drop_params=True`` (so ``temperature`` does not break
  models that refuse it).
- Failures are sorted once, at this boundary:

  ===============================================  ==============================
  connection error, timeout, HTTP 408/409/425/429,  retried: full-jitter backoff
  HTTP 5xx                                          (``Retry-After`` honoured),
                                                    then :class:`LLMUnavailable`
  other HTTP 4xx (400, 401, 403, 404, ...)          :class:`LLMRejected` at once
  a 2xx body that is not a completion (not JSON,    :class:`LLMBadResponse` at
  no choices, an empty stream)                      once
  ===============================================  ==============================

  A 200 whose body is not JSON is almost always an ``api_base`` that points at
  something other than an OpenAI-compatible API; retrying cannot fix that, so it
  is :class:`LLMBadResponse` (litellm reports it as a 500 with no HTTP response
  behind it, which is how it is told apart from a real 500).
- ``Retry-After`` / ``retry-after-ms`` (seconds or an HTTP date) is waited as
  given; a wait longer than ``backoff_max_s`` gives up at once with
  :class:`LLMUnavailable` saying so.
- A stream that fails after text was handed to ``on_text`` is not retried (the
  consumer has already shown that text): :class:`LLMUnavailable` at once.
- Error messages name the model and the status and never contain the API key.
- ``asyncio.CancelledError`` and whatever ``on_text`` raises propagate untouched.
- Usage is per successful call: ``llm_calls=1``, tokens from the response (the
  usage chunk when streaming), cost from litellm's local price map or ``None``.

One module, past 500 lines, on purpose: the one model adapter (lazy import, request
shape, streaming, retries and error sorting) — the litellm boundary is kept in one
place so nothing else ever sees a litellm type.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gc
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agents.errors import LLMBadResponse, LLMNotConfigured, LLMRejected, LLMUnavailable

__all__ = [
    "LLM",
    "Embedder",
    "LLMSettings",
    "LiteLLM",
    "Message",
    "Reply",
    "ToolCall",
    "ToolChoice",
    "Usage",
]

Message = dict[str, Any]
# OpenAI's ``tool_choice``: "auto", "required", "none" or {"type": "function", ...}.
ToolChoice = str | dict[str, Any]

# The key sent to an OpenAI-compatible api_base when none is configured: the OpenAI
# client refuses to start without one, and local servers ignore it.
LOCAL_DUMMY_KEY = "sk-local"

NOT_CONFIGURED_MESSAGE = (
    "no model configured: set TETHER_MODEL (e.g. openai/gpt-4o-mini or ollama/llama3.1) "
    "or `model` in config.toml"
)

_TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})


# -- our types --------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """One tool call; ``arguments`` is the raw JSON text the model produced."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Usage:
    """What model calls used. ``cost_usd`` is ``None`` when no price is known."""

    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        if self.cost_usd is None and other.cost_usd is None:
            cost = None
        else:  # a known cost plus an unknown one: the known part is the best total
            cost = (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        return Usage(
            llm_calls=self.llm_calls + other.llm_calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=cost,
        )

    def add(self, other: Usage) -> Usage:
        """``self + other`` (Usage is frozen; this returns the new total)."""
        return self + other


@dataclass(frozen=True)
class Reply:
    """What the model answered to one ``complete()``."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)


class LLM(Protocol):
    """The model, as the tool loop and chat see it."""

    async def complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None = None,
        *,
        stream: bool = False,
        on_text: Callable[[str], Awaitable[None]] | None = None,
        max_tokens: int | None = None,
        tool_choice: ToolChoice | None = None,
    ) -> Reply: ...


class Embedder(Protocol):
    """Turns texts into vectors (one per text, in order)."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


# -- settings ---------------------------------------------------------------------


@dataclass
class LLMSettings:
    """Which model to call and how patiently."""

    model: str | None
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never in logs or reprs
    timeout_s: float = 120.0
    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    temperature: float | None = 0.0
    # The model of ``LiteLLM.embed`` (e.g. openai/text-embedding-3-small); None: no embeddings.
    embedding_model: str | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {self.timeout_s}")


# -- litellm ----------------------------------------------------------------------

_litellm: Any = None


def _import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    # Retries are ours. litellm's embedding path turns max_retries=0 into this default
    # (``max_retries or DEFAULT_MAX_RETRIES``), so the OpenAI client would retry too.
    setattr(litellm, "DEFAULT_MAX_RETRIES", 0)  # noqa: B010 (not exported for typing)
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The import leaves ~300k objects that live as long as the process. Without this,
    # every full collection walks them all: a 130-150 ms stall of the event loop.
    gc.freeze()
    return litellm


async def _load_litellm() -> Any:
    global _litellm
    if _litellm is None:
        _litellm = await asyncio.to_thread(_import_litellm)
    return _litellm


Kind = Literal["transient", "rejected", "bad"]


class _Failure(Exception):
    """One failed attempt, sorted (internal; never leaves this module)."""

    def __init__(
        self,
        kind: Kind,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind: Kind = kind
        self.detail = detail
        self.status = status
        self.retry_after = retry_after
        self.cause = cause


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class LiteLLM:
    """:class:`LLM` over ``litellm.acompletion``; any provider string litellm knows
    (``openai/<name>`` with ``api_base``, ``ollama/<name>``, ...)."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._rng = rng or random.Random()

    async def complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None = None,
        *,
        stream: bool = False,
        on_text: Callable[[str], Awaitable[None]] | None = None,
        max_tokens: int | None = None,
        tool_choice: ToolChoice | None = None,
    ) -> Reply:
        model = self.settings.model
        if not model:
            raise LLMNotConfigured(NOT_CONFIGURED_MESSAGE)
        litellm = await _load_litellm()
        request = self._request(model, messages, tools, stream, max_tokens)
        if tools and tool_choice is not None:
            request["tool_choice"] = tool_choice
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            emitted = [False]  # set once on_text has been given any text
            try:
                if stream:
                    return await self._streamed(litellm, request, on_text, emitted)
                return await self._whole(litellm, request)
            except _Failure as failure:
                self._give_up_unless_retryable(failure, attempt, emitted[0])
                await self._sleep(self._delay(failure, attempt))
        raise AssertionError("unreachable: the last attempt raises or returns")

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order, from ``settings.embedding_model``."""
        model = self.settings.embedding_model
        if not model:
            raise LLMNotConfigured(
                "no embedding model configured: set TETHER_EMBEDDING_MODEL or "
                "[llm] embedding_model in config.toml"
            )
        if not texts:
            return []
        litellm = await _load_litellm()
        request = self._common(model)
        request["input"] = list(texts)
        request["max_retries"] = 0  # the OpenAI client's own retries
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                return await self._embedded(litellm, request, len(texts))
            except _Failure as failure:
                self._give_up_unless_retryable(failure, attempt, False, model=model)
                await self._sleep(self._delay(failure, attempt))
        raise AssertionError("unreachable: the last attempt raises or returns")

    async def _embedded(
        self, litellm: Any, request: dict[str, Any], count: int
    ) -> list[list[float]]:
        try:
            response = await litellm.aembedding(**request)
        except Exception as exc:
            raise self._sort(exc) from exc
        try:
            items = list(response.data)
            ordered: list[list[float]] = [[] for _ in range(count)]
            for position, item in enumerate(items):
                if isinstance(item, dict):
                    index, vector = item.get("index", position), item["embedding"]
                else:
                    index, vector = getattr(item, "index", position), item.embedding
                ordered[int(index)] = [float(x) for x in vector]
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise _Failure("bad", f"the reply is not a list of embeddings ({exc})") from exc
        if len(items) != count or any(not v for v in ordered):
            raise _Failure("bad", f"the reply has {len(items)} embeddings for {count} texts")
        return ordered

    # -- one attempt ------------------------------------------------------------

    def _common(self, model: str) -> dict[str, Any]:
        """What every litellm call carries: the model, the endpoint and key, the timeout,
        and no retries of litellm's own (this adapter retries)."""
        s = self.settings
        api_key = s.api_key
        if not api_key and s.api_base and model.startswith("openai/"):
            api_key = LOCAL_DUMMY_KEY
        return {
            "model": model,
            "timeout": s.timeout_s,
            "num_retries": 0,
            "drop_params": True,
            "api_base": s.api_base,
            "api_key": api_key,
        }

    def _request(
        self,
        model: str,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None,
        stream: bool,
        max_tokens: int | None,
    ) -> dict[str, Any]:
        s = self.settings
        request = self._common(model)
        request["messages"] = list(messages)
        if tools:
            request["tools"] = list(tools)
        if s.temperature is not None:
            request["temperature"] = s.temperature
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        if stream:
            request["stream"] = True
            request["stream_options"] = {"include_usage": True}
        return request

    async def _whole(self, litellm: Any, request: dict[str, Any]) -> Reply:
        try:
            response = await litellm.acompletion(**request)
        except Exception as exc:
            raise self._sort(exc) from exc
        try:
            choice = response.choices[0]
            message = choice.message
            content = message.content
            text = content if isinstance(content, str) else ""
            calls = tuple(
                ToolCall(
                    id=call.id or f"call_{index}",
                    name=call.function.name or "",
                    arguments=_arguments_text(call.function.arguments),
                )
                for index, call in enumerate(message.tool_calls or ())
            )
            finish = choice.finish_reason or ("tool_calls" if calls else "stop")
            usage = getattr(response, "usage", None)
            prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion = int(getattr(usage, "completion_tokens", 0) or 0)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise _Failure("bad", f"the reply has no usable choice ({exc})", cause=exc) from exc
        return Reply(text, calls, finish, self._usage(litellm, prompt, completion))

    async def _streamed(
        self,
        litellm: Any,
        request: dict[str, Any],
        on_text: Callable[[str], Awaitable[None]] | None,
        emitted: list[bool],
    ) -> Reply:
        try:
            response = await litellm.acompletion(**request)
        except Exception as exc:
            raise self._sort(exc) from exc
        text: list[str] = []
        partials: dict[int, _PartialCall] = {}
        finish: str | None = None
        prompt = completion = 0
        saw_usage = False
        iterator = response.__aiter__()
        try:
            while True:
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise self._sort(exc) from exc
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    saw_usage = True
                    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
                    completion = int(getattr(usage, "completion_tokens", 0) or 0)
                for choice in getattr(chunk, "choices", None) or ():
                    finish = getattr(choice, "finish_reason", None) or finish
                    delta = getattr(choice, "delta", None)
                    if delta is None:
                        continue
                    _merge_tool_calls(partials, getattr(delta, "tool_calls", None))
                    piece = getattr(delta, "content", None)
                    if isinstance(piece, str) and piece:
                        text.append(piece)
                        if on_text is not None:
                            emitted[0] = True
                            await on_text(piece)
        finally:
            aclose = getattr(response, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        calls = tuple(
            ToolCall(p.id or f"call_{index}", p.name, "".join(p.arguments))
            for index, p in sorted(partials.items())
        )
        joined = "".join(text)
        if not joined and not calls and not saw_usage:
            raise _Failure("bad", "the stream carried no reply (no text, tool calls or usage)")
        finish = finish or ("tool_calls" if calls else "stop")
        return Reply(joined, calls, finish, self._usage(litellm, prompt, completion))

    def _usage(self, litellm: Any, prompt: int, completion: int) -> Usage:
        cost: float | None = None
        try:
            prompt_cost, completion_cost = litellm.cost_per_token(
                model=self.settings.model, prompt_tokens=prompt, completion_tokens=completion
            )
            cost = float(prompt_cost) + float(completion_cost)
        except Exception:  # model not in the price map (local models, custom names)
            cost = None
        return Usage(1, prompt, completion, cost)

    # -- failures ---------------------------------------------------------------

    def _sort(self, exc: Exception) -> _Failure:
        """Sort a litellm exception into transient / rejected / bad."""
        import httpx
        import openai

        chain = _chain(exc)
        detail = self._redact(_provider_detail(exc))
        if any(
            isinstance(e, openai.APITimeoutError | httpx.TimeoutException | TimeoutError)
            for e in chain
        ):
            return _Failure(
                "transient", f"request timed out (timeout_s={self.settings.timeout_s:g})", cause=exc
            )
        if any(
            isinstance(e, openai.APIConnectionError | httpx.TransportError | ConnectionError)
            for e in chain
        ):
            where = self.settings.api_base or "the provider"
            return _Failure("transient", f"could not connect to {where} ({detail})", cause=exc)
        status = getattr(exc, "status_code", None)
        headers = _response_headers(exc)
        real_http = headers is not None or any(isinstance(e, httpx.HTTPStatusError) for e in chain)
        if isinstance(status, int):
            if status in _TRANSIENT_STATUSES or (status >= 500 and real_http):
                return _Failure(
                    "transient",
                    f"HTTP {status} ({detail})",
                    status=status,
                    retry_after=_retry_after(headers),
                    cause=exc,
                )
            if status >= 500:  # litellm's own 500: the 2xx body was not a completion
                return _Failure("bad", f"the reply is not a chat completion ({detail})", cause=exc)
            if 400 <= status < 500:
                return _Failure("rejected", f"HTTP {status} ({detail})", status=status, cause=exc)
        return _Failure("bad", f"{type(exc).__name__}: {detail}", cause=exc)

    def _give_up_unless_retryable(
        self, failure: _Failure, attempt: int, emitted: bool, *, model: str | None = None
    ) -> None:
        model = model or self.settings.model
        cause = failure.cause
        if failure.kind == "rejected":
            raise LLMRejected(
                f"the model provider rejected the request for model {model}: {failure.detail}"
                f"{_REJECTED_HINTS.get(failure.status or 0, '')}"
            ) from cause
        if failure.kind == "bad":
            raise LLMBadResponse(
                f"the model provider gave an unusable answer for model {model}: "
                f"{failure.detail}; check that api_base points at an OpenAI-compatible API"
            ) from cause
        if emitted:
            raise LLMUnavailable(
                f"the stream from model {model} broke after part of the reply was sent: "
                f"{failure.detail} (not retried)"
            ) from cause
        if attempt >= self.settings.max_attempts:
            raise LLMUnavailable(
                f"the model provider kept failing: {failure.detail} after {attempt} "
                f"attempt{'s' if attempt != 1 else ''} (model {model})"
            ) from cause
        wait = failure.retry_after
        if wait is not None and wait > self.settings.backoff_max_s:
            raise LLMUnavailable(
                f"the model provider asked to wait {wait:.0f} s ({failure.detail}), longer than "
                f"backoff_max_s={self.settings.backoff_max_s:g} s (model {model})"
            ) from cause

    def _delay(self, failure: _Failure, attempt: int) -> float:
        if failure.retry_after is not None:
            return failure.retry_after
        ceiling = min(
            self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1)
        )
        return self._rng.uniform(0.0, ceiling)  # full jitter

    def _redact(self, text: str) -> str:
        key = self.settings.api_key
        if key:
            text = text.replace(key, "***")
        return text


_REJECTED_HINTS = {
    401: "; check the API key (TETHER_API_KEY or the keyring entry tether/llm-api-key)",
    403: "; check the API key and that it may use this model",
    404: "; check the model name and api_base",
}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _provider_detail(exc: Exception) -> str:
    """litellm's message without its ``litellm.X: X: OpenAIException -`` prefix."""
    text = str(getattr(exc, "message", None) or exc)
    head, sep, tail = text.partition(" - ")
    if sep and head.startswith("litellm."):
        text = tail
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _response_headers(exc: Exception) -> Mapping[str, str] | None:
    """The HTTP response headers behind a litellm exception, if there was a response.

    litellm 1.106.2 keeps them on ``litellm_response_headers``; its own
    ``response`` is a synthetic one with no headers.
    """
    candidates = (
        getattr(exc, "litellm_response_headers", None),
        getattr(exc, "headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    )
    for headers in candidates:
        if headers:
            return headers  # type: ignore[no-any-return]
    return None


def _retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(millis) / 1000.0)
    value = lowered.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _arguments_text(arguments: object) -> str:
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments)


def _merge_tool_calls(partials: dict[int, _PartialCall], deltas: object) -> None:
    """Fold streamed tool-call deltas into ``partials``, keyed by their ``index``."""
    for delta in deltas or ():  # type: ignore[attr-defined]
        index = getattr(delta, "index", None)
        call_id = getattr(delta, "id", None)
        if index is None:  # some providers send whole calls without an index
            known = [i for i, p in partials.items() if call_id and p.id == call_id]
            index = known[0] if known else len(partials)
        partial = partials.setdefault(int(index), _PartialCall())
        if call_id:
            partial.id = call_id
        function = getattr(delta, "function", None)
        if function is None:
            continue
        name = getattr(function, "name", None)
        if name:
            partial.name = name
        arguments = getattr(function, "arguments", None)
        if arguments:
            partial.arguments.append(_arguments_text(arguments))
