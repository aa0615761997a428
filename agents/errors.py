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
    ├── CloudError                  a cloud account (Google, Microsoft) could not be used
    │   ├── NeedsReconnect          the provider refused the sign-in; the user must connect again (.reason)
    │   ├── SignInFailed            an interactive sign-in did not complete (state, timeout, denied)
    │   ├── CloudConfigError        the OAuth client is misconfigured (client id or secret)
    │   ├── CloudRejected           the API refused a request (4xx other than auth and throttling)
    │   └── CloudUnavailable        transient failures outlasted the retries (5xx, network)
    │       └── CloudThrottled      429 / rate limits outlasted the retries (.retry_at)
    ├── StoreError                  the client store failed (base of the Store interface's errors)
    │   ├── DeviceOffline           the device session went away
    │   ├── ToolCallTimeout         the client did not answer a tool_call in time
    │   └── ToolCallError           the client answered tool_result ok=false (has .code)
    └── RunCancelled                the run or chat request was cancelled

Lower-layer exceptions (litellm, httpx, OSError) are translated into these at the
boundary, so the loop only ever sees this tree.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "CloudConfigError",
    "CloudError",
    "CloudRejected",
    "CloudThrottled",
    "CloudUnavailable",
    "DeviceOffline",
    "ExtractError",
    "LLMBadResponse",
    "LLMError",
    "LLMNotConfigured",
    "LLMRejected",
    "LLMUnavailable",
    "NeedsReconnect",
    "PathOutsideRoots",
    "RunCancelled",
    "SignInFailed",
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


class CloudError(AgentError):
    """A cloud account could not be used. Messages never contain a token."""


class NeedsReconnect(CloudError):
    """The provider refused the refresh token (expired, revoked, consent or MFA needed).

    ``reason`` is the provider's code and description (``invalid_grant: AADSTS700082 ...``).
    """

    def __init__(self, provider: str, account: str, reason: str) -> None:
        name = {"google": "Google", "microsoft": "Microsoft"}.get(provider, provider)
        super().__init__(f"reconnect your {name} account {account} ({reason})")
        self.provider = provider
        self.account = account
        self.reason = reason


class SignInFailed(CloudError):
    """An interactive sign-in did not complete: wrong state, timeout, denied, bad code."""


class CloudConfigError(CloudError):
    """The OAuth client is misconfigured (``invalid_client``, AADSTS700025/50011)."""


class CloudRejected(CloudError):
    """The API refused a request with a 4xx other than authentication or throttling."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(
            f"HTTP {status} {code}: {message}" if code else f"HTTP {status}: {message}"
        )
        self.status = status
        self.code = code
        self.message = message


class CloudUnavailable(CloudError):
    """Transient failures (5xx, connection, timeout) outlasted the retries."""


class CloudThrottled(CloudUnavailable):
    """The provider kept throttling; ``retry_at`` (Unix s) is when it allows requests again."""

    def __init__(self, message: str, retry_at: float) -> None:
        super().__init__(message)
        self.retry_at = retry_at


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
