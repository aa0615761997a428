"""Errors raised inside agent runs and chat.

The tree::

    AgentError
    ├── LLMError                    the model could not give an answer
    │   ├── LLMNotConfigured        no model set (the user must configure one)
    │   ├── LLMUnavailable          transient failures outlasted the retries (429, 5xx, network)
    │   ├── LLMRejected             the provider refused the request (4xx other than 429)
    │   └── LLMBadResponse          the provider answered something we cannot use
    ├── ToolError                   a tool could not do what the model asked (goes back to the model)
    ├── PathOutsideRoots            a file path resolves outside the agent's roots
    ├── ExtractError                a file's text could not be extracted
    ├── StoreError                  the client store failed (base of the Store interface's errors)
    │   ├── DeviceOffline           the device session went away
    │   ├── ToolCallTimeout         the client did not answer a tool_call in time
    │   └── ToolCallError           the client answered tool_result ok=false (has .code)
    ├── RunCancelled                the run or chat request was cancelled
    └── JourneyError                an agent-setup journey could not go on (message for the user)

Lower-layer exceptions (litellm, httpx, OSError) are translated into these at the
boundary, so the loop only ever sees this tree.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "DeviceOffline",
    "ExtractError",
    "JourneyError",
    "LLMBadResponse",
    "LLMError",
    "LLMNotConfigured",
    "LLMRejected",
    "LLMUnavailable",
    "PathOutsideRoots",
    "RunCancelled",
    "StoreError",
    "ToolCallError",
    "ToolCallTimeout",
    "ToolError",
]


class AgentError(Exception):
    """Base of every error raised by the agents package."""


class LLMError(AgentError):
    """The model could not give an answer."""


class LLMNotConfigured(LLMError):
    """No model is configured."""


class LLMUnavailable(LLMError):
    """Transient failures (429, 5xx, connection, timeout) outlasted the retries."""


class LLMRejected(LLMError):
    """The provider refused the request (authentication, bad request, unknown model)."""


class LLMBadResponse(LLMError):
    """The provider answered with something that is not a usable reply."""


class ToolError(AgentError):
    """A tool could not do what the model asked; the message goes back to the model."""


class PathOutsideRoots(ToolError):
    """A path resolves (after symlinks and ``..``) outside the agent's roots."""


class ExtractError(AgentError):
    """The text of a file could not be extracted (unsupported, unreadable, corrupt)."""


class StoreError(AgentError):
    """The client store failed."""


class DeviceOffline(StoreError):
    """The device session that owns the store went away."""


class ToolCallTimeout(StoreError):
    """The client did not answer a tool_call in time."""


class ToolCallError(StoreError):
    """The client answered a tool_call with ``ok: false``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RunCancelled(AgentError):
    """The run or chat request was cancelled."""


class JourneyError(AgentError):
    """An agent-setup journey could not go on; the message says why, for the user."""
