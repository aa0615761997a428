"""One polite HTTP client per cloud account: limits, retries, token refresh, error mapping.

Rules:

- At most ``settings.max_in_flight`` (4) requests of one account are in flight at
  once (a semaphore held for the request and its body only, not for back-off sleeps).
- Every request has a timeout (``settings.timeout_s``); redirects are not followed.
- Throttling (429, 503, and Gmail's 403 ``rateLimitExceeded`` /
  ``userRateLimitExceeded``) waits ``Retry-After`` (seconds, fractional allowed, or
  an HTTP date) when present, else exponential back-off with jitter. A wait longer
  than ``settings.max_wait_s``, or throttling on the last attempt, raises
  :class:`~agents.errors.CloudThrottled` with the time the provider allows again.
- Network errors (a connection reset mid-body included), timeouts, other 5xx and a
  2xx that is not JSON are retried with back-off up to ``settings.max_attempts``;
  then :class:`~agents.errors.CloudUnavailable`. A retried page is the same URL, so
  nothing on it is skipped or repeated.
- 401: one refresh of the access token (:class:`~agents.cloud.oauth.AccountTokens`)
  and the request again; a second 401 is :class:`~agents.errors.NeedsReconnect`.
- Any other 4xx is :class:`~agents.errors.CloudRejected` with the status and the
  provider's error code (Graph's ``error.code``, Gmail's first ``errors[].reason``),
  so a caller can recognise 404 history or 410 delta. Messages never carry a token.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from agents.cloud.oauth import AccountTokens
from agents.cloud.settings import CloudSettings
from agents.errors import CloudRejected, CloudThrottled, CloudUnavailable, NeedsReconnect

__all__ = ["CloudHttp", "error_code", "parse_retry_after"]

log = logging.getLogger("tether.cloud.http")

GMAIL_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
MAX_BACKOFF_S = 30.0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), or None."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - now
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _error_body(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return dict(data["error"])
    return {}


def error_code(resp: httpx.Response) -> tuple[str, str]:
    """(code, message) of an API error body: Graph ``error.code`` or Gmail's first reason."""
    err = _error_body(resp)
    code = err.get("code")
    message = err.get("message")
    reasons = err.get("errors")
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], dict):
        reason = reasons[0].get("reason")
        if isinstance(reason, str):
            code = reason
    if not isinstance(code, str):
        status = err.get("status")
        code = status if isinstance(status, str) else ""
    text = message if isinstance(message, str) else resp.reason_phrase
    return code, text[:300]


class CloudHttp:
    """GET JSON from one account's API with the rules above."""

    def __init__(
        self,
        provider: str,
        account: str,
        tokens: AccountTokens,
        settings: CloudSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        backoff_s: float = 0.5,
    ) -> None:
        self.provider = provider
        self.account = account
        self._tokens = tokens
        self._settings = settings
        self._sem = asyncio.Semaphore(settings.max_in_flight)
        self._sleep = sleep
        self._clock = clock
        self._backoff_s = backoff_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s),
            transport=transport,
            follow_redirects=False,
        )
        self.requests = 0  # HTTP requests sent, retries included
        self.retries = 0

    async def __aenter__(self) -> CloudHttp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _backoff(self, attempt: int) -> float:
        base = min(MAX_BACKOFF_S, self._backoff_s * (2 ** (attempt - 1)))
        return float(base * (0.5 + random.random() / 2))

    async def get_json(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The JSON object at ``url`` (absolute; sent exactly as given when no params)."""
        attempts = self._settings.max_attempts
        attempt = 0
        refreshed = False
        token = await self._tokens.access_token()
        while True:
            attempt += 1
            send_headers = {"Accept": "application/json", **(headers or {})}
            send_headers["Authorization"] = f"Bearer {token}"
            try:
                async with self._sem:
                    self.requests += 1
                    resp = await self._client.get(url, params=params, headers=send_headers)
            except httpx.HTTPError as exc:  # transport errors and timeouts
                what = f"{type(exc).__name__}"
                if attempt >= attempts:
                    raise CloudUnavailable(
                        f"{self.provider} API unreachable after {attempt} attempts ({what})"
                    ) from None
                await self._wait(self._backoff(attempt), f"network error ({what})")
                continue
            status = resp.status_code
            if status == 401:
                if refreshed:
                    raise NeedsReconnect(
                        self.provider,
                        self.account,
                        "the API refused a freshly refreshed access token",
                    )
                refreshed = True
                attempt -= 1  # a refresh is not a failed attempt
                token = await self._tokens.refreshed(token)
                continue
            if self._throttled(resp):
                wait = parse_retry_after(resp.headers.get("Retry-After"), self._clock())
                delay = self._backoff(attempt) if wait is None else wait
                if attempt >= attempts or delay > self._settings.max_wait_s:
                    raise CloudThrottled(
                        f"{self.provider} is throttling {self.account} (HTTP {status}); "
                        f"retry after {delay:.0f} s",
                        retry_at=self._clock() + delay,
                    )
                await self._wait(delay, f"throttled (HTTP {status})")
                continue
            if status >= 500:
                if attempt >= attempts:
                    code, message = error_code(resp)
                    raise CloudUnavailable(
                        f"{self.provider} API failed {attempt} times (HTTP {status} {code}: {message})"
                    )
                await self._wait(self._backoff(attempt), f"HTTP {status}")
                continue
            if status >= 400 or status < 200 or status >= 300:
                code, message = error_code(resp)
                raise CloudRejected(status, code, message)
            try:
                data = resp.json()
            except ValueError:
                data = None
            if not isinstance(data, dict):
                if attempt >= attempts:
                    raise CloudUnavailable(f"{self.provider} API answered something not JSON")
                await self._wait(self._backoff(attempt), "a reply that is not a JSON object")
                continue
            return data

    def _throttled(self, resp: httpx.Response) -> bool:
        if resp.status_code in (429, 503):
            return True
        if resp.status_code == 403:
            code, _ = error_code(resp)
            return code in GMAIL_RATE_REASONS
        return False

    async def _wait(self, delay: float, why: str) -> None:
        self.retries += 1
        log.info("%s API: %s; retrying in %.2f s", self.provider, why, delay)
        await self._sleep(delay)
