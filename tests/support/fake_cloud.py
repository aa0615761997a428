"""The shared half of the fake Google and Microsoft servers: HTTP, OAuth, faults.

Rules:

- A ``ThreadingHTTPServer`` on 127.0.0.1, port 0, in a background thread (usable
  from in-process tests and from ``daemon`` subprocesses alike).
- Every request is recorded (:attr:`FakeCloudServer.requests`) and counted while it
  is being answered; :attr:`FakeCloudServer.max_in_flight` is the highest number of
  requests answered at the same time (``latency_s`` makes overlaps visible).
- Faults (:meth:`FakeCloudServer.fail`) match a method and a substring of the path
  with query, fire ``times`` times, and answer a status with a JSON body and
  headers, or reset the connection after sending half the response.
- OAuth: ``GET <auth path>`` answers like an authorization server that the user
  approved at once: a 302 to ``redirect_uri?code&state`` (or, with
  ``response_mode=form_post``, an auto-submitting HTML form). ``tamper_state``
  and ``deny`` simulate a forged reply and a refusal. ``POST <token path>`` checks
  the client, the PKCE verifier (S256) and the redirect URI, issues access tokens
  that live ``access_ttl_s`` and refresh tokens (rotated on every use when
  ``rotate_refresh``; the old one then stops working). :meth:`revoke` kills every
  refresh token; :meth:`expire_access_tokens` every access token.
- :func:`follow_authorization` is the fake browser: it opens the authorization URL
  and delivers the reply to the loopback redirect like a browser would.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

__all__ = ["FakeCloudServer", "Fault", "MemoryVault", "Recorded", "Reply", "follow_authorization"]


@dataclass
class Fault:
    method: str
    match: str
    status: int = 429
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False
    times: int = 1


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class Reply:
    status: int
    body: Any = None  # dict -> JSON; str -> HTML; bytes as is
    headers: dict[str, str] = field(default_factory=dict)


class _Reset(Exception):
    pass


class FakeCloudServer:
    """Base of the fakes; subclasses implement :meth:`api`."""

    auth_path = "/auth"
    token_path = "/token"

    def __init__(
        self, *, client_id: str = "tether-test-client", client_secret: str | None = None
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.lock = threading.Lock()
        self.faults: list[Fault] = []
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.latency_s = 0.0
        self.access_ttl_s = 3600.0
        self.rotate_refresh = False
        self.tamper_state = False
        self.deny = False
        self.refresh_count = 0
        self.token_forms: list[list[str]] = []  # the field names of each token request
        self.access_tokens: dict[str, tuple[str, float]] = {}  # token -> (account, expires_at)
        self.refresh_tokens: dict[str, str] = {}  # token -> account
        self.revoked_error: dict[str, Any] = {"error": "invalid_grant"}
        self.codes: dict[str, tuple[str, str, str]] = {}  # code -> (challenge, redirect, account)
        self.signed_in_account = "me@example.com"
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> FakeCloudServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- test controls ---------------------------------------------------------------

    def fail(
        self,
        match: str,
        status: int = 429,
        body: dict[str, Any] | None = None,
        *,
        method: str = "GET",
        retry_after: str | None = None,
        reset: bool = False,
        times: int = 1,
    ) -> Fault:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        fault = Fault(method, match, status, body, headers, reset, times)
        with self.lock:
            self.faults.append(fault)
        return fault

    def issue_tokens(self, account: str | None = None) -> dict[str, Any]:
        """A fresh token pair as the token endpoint would answer."""
        account = account or self.signed_in_account
        access = "at-" + secrets.token_urlsafe(24)
        refresh = "rt-" + secrets.token_urlsafe(24)
        with self.lock:
            self.access_tokens[access] = (account, time.time() + self.access_ttl_s)
            self.refresh_tokens[refresh] = account
        return {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": int(self.access_ttl_s),
            "token_type": "Bearer",
            "scope": "test",
        }

    def expire_access_tokens(self) -> None:
        with self.lock:
            self.access_tokens = {t: (a, 0.0) for t, (a, _) in self.access_tokens.items()}

    def revoke(self, error: dict[str, Any] | None = None) -> None:
        with self.lock:
            self.refresh_tokens.clear()
            if error is not None:
                self.revoked_error = error

    def api_requests(self, prefix: str = "") -> list[Recorded]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r.path.startswith(prefix) and r.path not in (self.token_path, self.auth_path)
            ]

    # -- overridables ----------------------------------------------------------------

    def unauthorized(self) -> Reply:
        return Reply(401, {"error": {"code": 401, "message": "unauthenticated"}})

    def api(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        account: str,
    ) -> Reply:
        raise NotImplementedError

    def invalid_client(self) -> Reply:
        return Reply(
            401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}
        )

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        split = urlsplit(target)
        query = parse_qs(split.query, keep_blank_values=True)
        with self.lock:
            self.requests.append(Recorded(method, split.path, query, headers))
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.match in target:
                    fault.times -= 1
                    if fault.reset:
                        raise _Reset
                    return Reply(fault.status, fault.body or {}, dict(fault.headers))
        if split.path == self.auth_path and method == "GET":
            return self._authorize(query)
        if split.path == self.token_path and method == "POST":
            form = parse_qs(body.decode("utf-8", "replace"))
            return self._token({k: v[0] for k, v in form.items()})
        auth = headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        with self.lock:
            entry = self.access_tokens.get(token)
        if entry is None or entry[1] <= time.time():
            return self.unauthorized()
        return self.api(method, split.path, query, headers, entry[0])

    def _authorize(self, query: dict[str, list[str]]) -> Reply:
        q = {k: v[0] for k, v in query.items()}
        redirect = q.get("redirect_uri", "")
        if q.get("client_id") != self.client_id or not redirect:
            return Reply(400, "<p>unknown client</p>")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return Reply(400, "<p>PKCE S256 required</p>")
        state = "forged-state" if self.tamper_state else q.get("state", "")
        if self.deny:
            params = {
                "error": "access_denied",
                "error_description": "The user cancelled.",
                "state": state,
            }
        else:
            code = "code-" + secrets.token_urlsafe(16)
            with self.lock:
                self.codes[code] = (q["code_challenge"], redirect, self.signed_in_account)
            params = {"code": code, "state": state}
        if q.get("response_mode") == "form_post":
            inputs = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}"/>'
                for k, v in params.items()
            )
            page = (
                f'<html><body onload="document.forms[0].submit()"><form method="POST" '
                f'action="{html.escape(redirect)}">{inputs}</form></body></html>'
            )
            return Reply(200, page)
        return Reply(302, b"", {"Location": f"{redirect}?{urlencode(params)}"})

    def _token(self, form: dict[str, str]) -> Reply:
        with self.lock:
            self.token_forms.append(sorted(form))
        if form.get("client_id") != self.client_id or (
            self.client_secret is not None and form.get("client_secret") != self.client_secret
        ):
            return self.invalid_client()
        grant = form.get("grant_type")
        if grant == "authorization_code":
            with self.lock:
                entry = self.codes.pop(form.get("code", ""), None)
            if entry is None:
                return Reply(400, {"error": "invalid_grant", "error_description": "Bad code."})
            challenge, redirect, account = entry
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(
                b"="
            )
            if digest.decode() != challenge or form.get("redirect_uri") != redirect:
                return Reply(
                    400,
                    {"error": "invalid_grant", "error_description": "PKCE or redirect mismatch."},
                )
            return Reply(200, self.issue_tokens(account))
        if grant == "refresh_token":
            old = form.get("refresh_token", "")
            with self.lock:
                account = self.refresh_tokens.get(old)
                if account is None:
                    return Reply(400, dict(self.revoked_error))
                self.refresh_count += 1
            data = self.issue_tokens(account)
            with self.lock:
                if self.rotate_refresh:
                    del self.refresh_tokens[old]
                else:
                    self.refresh_tokens.pop(data["refresh_token"], None)
                    del data["refresh_token"]
            return Reply(200, data)
        return Reply(400, {"error": "unsupported_grant_type"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # resets on purpose and clients that went away


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeCloudServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self, method: str) -> None:
        fake = self.server_fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        with fake.lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            if fake.latency_s:
                time.sleep(fake.latency_s)
            try:
                reply = fake.handle(method, self.path, headers, body)
                reset = False
            except _Reset:
                reply, reset = Reply(200, {"value": [], "padding": "x" * 4000}), True
            if isinstance(reply.body, dict | list):
                payload = json.dumps(reply.body).encode()
                ctype = "application/json; charset=utf-8"
            elif isinstance(reply.body, str):
                payload, ctype = reply.body.encode(), "text/html; charset=utf-8"
            else:
                payload, ctype = reply.body or b"", "application/octet-stream"
            self.send_response(reply.status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if reset:
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                self.close_connection = True
                return
            self.wfile.write(payload)
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


_FORM = re.compile(r'<form[^>]*action="([^"]+)"', re.I)
_INPUT = re.compile(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', re.I)


def follow_authorization(url: str, *, on_redirect: Callable[[str], None] | None = None) -> None:
    """Open ``url`` like a browser whose user approves: follow the reply to the loopback."""
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        resp = client.get(url)
        if resp.status_code in (301, 302, 303, 307):
            target = resp.headers["Location"]
            if on_redirect:
                on_redirect(target)
            client.get(target)
            return
        match = _FORM.search(resp.text)
        if resp.status_code == 200 and match:
            fields = {html.unescape(k): html.unescape(v) for k, v in _INPUT.findall(resp.text)}
            client.post(html.unescape(match.group(1)), data=fields)


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


class MemoryVault:
    """A :class:`~agents.cloud.oauth.TokenVault` in memory, counting saves (test double)."""

    def __init__(self) -> None:
        self.bundles: dict[tuple[str, str], Any] = {}
        self.saves: list[tuple[str, str, Any]] = []

    async def load(self, provider: str, account: str) -> Any:
        return self.bundles.get((provider, account))

    async def save(self, provider: str, account: str, bundle: Any) -> None:
        self.saves.append((provider, account, bundle))
        self.bundles[(provider, account)] = bundle
