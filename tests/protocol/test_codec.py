"""The codec: text <-> frame, and nothing but ``ProtocolError`` for bad input.

protocol.md "Transport": every frame has ``type``; unknown fields are ignored; an
unknown ``type`` is ``unknown_type``; malformed JSON or a frame that fails
validation is ``bad_frame`` with a message saying what was wrong.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.codec import FRAME_TYPES, construct, decode, encode, encode_bytes
from protocol.errors import BadFrame, ErrorCode, ProtocolError, UnknownType
from protocol.frames import (
    Ack,
    AgentsResult,
    AgentsSync,
    AgentStatus,
    Cancel,
    Capabilities,
    ChatMessage,
    ClientInfo,
    ControlHello,
    CredentialsPut,
    DaemonInfo,
    DeviceHello,
    Error,
    ErrorBody,
    EstimateRequest,
    EstimateResult,
    FloatingDomain,
    FloatingRequest,
    HelloAck,
    HomeRequest,
    Mutation,
    Ping,
    Pong,
    RejectedAgent,
    RunComplete,
    RunProgress,
    RunStarted,
    RunSummary,
    Scope,
    Status,
    StatusRequest,
    StreamEnd,
    StreamStart,
    StreamText,
    ToolCall,
    ToolResult,
    Trigger,
    Usage,
    _Frame,
)

# One valid instance of every frame type, with most optional fields set.
SAMPLES: dict[str, _Frame] = {
    "device_hello": DeviceHello(
        protocol=1,
        token="tok",
        device_id="laptop-1",
        client=ClientInfo(name="adiuva-desktop", version="2.3.0"),
        capabilities=Capabilities(idempotency=True, vector=False),
        agents=[{"id": "a1", "kind": "local_directory"}],
        last_event_seq=41,
    ),
    "control_hello": ControlHello(
        protocol=[1, 2], token="tok", client=ClientInfo(name="cli"), subscribe=False
    ),
    "hello_ack": HelloAck(
        protocol=1,
        session_id="s1",
        daemon=DaemonInfo(version="0.1.0", pid=12, port=47821),
        heartbeat_s=20,
        features=["agents", "chat"],
        agents=AgentsResult(accepted=["a1"], rejected=[RejectedAgent(id="b", errors=["bad cron"])]),
    ),
    "tool_call": ToolCall(
        id="c1",
        action="select",
        table="tasks",
        filters={"projectId": "p1", "status": "todo"},
        limit=50,
        run_id="r9",
        run_context={"job": 7},
        idempotency_key="sha256:abc",
    ),
    "tool_result": ToolResult(id="c1", ok=True, rows=[{"id": "t1", "title": "x"}]),
    "agents_sync": AgentsSync(id="q1", agents=[{"id": "a1"}], replace=True),
    "trigger": Trigger(id="q2", agent_id="a1", run_context={"k": "v"}),
    "cancel": Cancel(id="q3", target="r9"),
    "status_request": StatusRequest(id="q4"),
    "home_request": HomeRequest(
        request_id="h1",
        message="what is due?",
        conversation_history=[ChatMessage(role="user", content="hi")],
    ),
    "floating_request": FloatingRequest(
        request_id="f1", message="summarise", scope=Scope(type="project", id="p1")
    ),
    "credentials_put": CredentialsPut(
        id="q5", provider="gmail", account="me@example.com", secret={"refresh_token": "x"}
    ),
    "estimate": EstimateRequest(id="q6", agent_id="a1"),
    "estimate_result": EstimateResult(
        id="q6", agent_id="a1", items_new=3, chars=1200, prompt_tokens=900, llm_calls=4, runs=1
    ),
    "ping": Ping(id="p1"),
    "pong": Pong(id="p1"),
    "ack": Ack(id="q2", run_id="r9", accepted=["a1"], rejected=[]),
    "status": Status(
        id="q4",
        agents=[
            AgentStatus(
                id="a1",
                name="Docs",
                kind="local_directory",
                enabled=True,
                schedule_cron="0 * * * *",
                next_run_at="2025-01-01T00:00:00Z",
            )
        ],
        active_runs=[
            RunSummary(
                run_id="r9", agent_id="a1", trigger="manual", started_at="2025-01-01T00:00:00Z"
            )
        ],
        device_online=True,
        devices=["laptop-1"],
        daemon=DaemonInfo(version="0.1.0"),
    ),
    "error": Error(id="q6", code="unsupported_protocol", message="no", supported=[1]),
    "stream_start": StreamStart(request_id="h1"),
    "floating_domain": FloatingDomain(request_id="f1", domain="notes"),
    "stream_text": StreamText(request_id="h1", chunk="Hello"),
    "stream_end": StreamEnd(
        request_id="h1",
        mutations=[Mutation(action="insert", table="tasks", data={"id": "t1"})],
        error="cancelled",
    ),
    "run_started": RunStarted(
        seq=1,
        run_id="r9",
        agent_id="a1",
        agent_name="Docs",
        trigger="schedule",
        started_at="2025-01-01T00:00:00Z",
        run_context={"k": 1},
    ),
    "run_progress": RunProgress(seq=2, run_id="r9", phase="scan", done=3, total=10, detail="x"),
    "run_complete": RunComplete(
        seq=3,
        run_id="r9",
        agent_id="a1",
        agent_name="Docs",
        trigger="manual",
        status="partial",
        started_at="2025-01-01T00:00:00Z",
        finished_at="2025-01-01T00:01:00Z",
        items_processed=4,
        items_created=2,
        items_updated=1,
        errors=["one file unreadable"],
        usage=Usage(llm_calls=3, prompt_tokens=100, completion_tokens=20, cost_usd=0.01),
    ),
}


def test_samples_cover_every_frame_type() -> None:
    assert set(SAMPLES) == set(FRAME_TYPES)
    assert len(FRAME_TYPES) == 26
    for name, frame in SAMPLES.items():
        assert frame.model_dump()["type"] == name


@pytest.mark.parametrize("frame_type", sorted(SAMPLES))
def test_round_trip(frame_type: str) -> None:
    frame = SAMPLES[frame_type]
    text = encode(frame)
    obj = json.loads(text)
    assert obj["type"] == frame_type
    assert "\n" not in text  # one compact JSON object per message
    back = decode(text)
    assert type(back) is type(frame)
    assert back == frame
    assert encode(back) == text
    # bytes decode the same as text
    assert decode(text.encode("utf-8")) == frame


@pytest.mark.parametrize("frame_type", sorted(SAMPLES))
def test_type_is_encoded_even_when_defaulted(frame_type: str) -> None:
    """``type`` is a default of every model, yet it must always reach the wire."""
    cls = type(SAMPLES[frame_type])
    rebuilt = cls.model_validate(SAMPLES[frame_type].model_dump(exclude={"type"}))
    assert json.loads(encode(rebuilt))["type"] == frame_type


def test_encode_sends_only_fields_that_were_set() -> None:
    assert json.loads(encode(ToolCall(id="c1", action="get", table="tasks"))) == {
        "type": "tool_call",
        "id": "c1",
        "action": "get",
        "table": "tasks",
    }
    assert json.loads(encode(Ping())) == {"type": "ping"}


def test_encode_keeps_row_null_when_set() -> None:
    result = ToolResult(id="c1", ok=True, row=None)
    assert json.loads(encode(result)) == {
        "type": "tool_result",
        "id": "c1",
        "ok": True,
        "row": None,
    }
    back = decode(encode(result))
    assert isinstance(back, ToolResult)
    assert "row" in back.model_fields_set and back.row is None


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{", "malformed JSON"),
        ('{"type": "ping",', "malformed JSON"),
        ("", "malformed JSON"),
        ("not json", "malformed JSON"),
        (b"\xff\xfe\x00", "malformed"),
    ],
)
def test_malformed_json_is_bad_frame(text: str | bytes, needle: str) -> None:
    with pytest.raises(BadFrame) as info:
        decode(text)
    assert info.value.code == "bad_frame"
    assert needle in info.value.message


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_numbers_json_does_not_have_are_bad_frame(constant: str) -> None:
    with pytest.raises(BadFrame, match=f"malformed JSON: {constant} is not a JSON number"):
        decode('{"type": "tool_result", "id": "c1", "row": {"n": ' + constant + "}}")


def test_the_words_nan_and_infinity_in_strings_are_text() -> None:
    frame = decode('{"type": "stream_text", "request_id": "NaN", "chunk": "Infinity"}')
    assert isinstance(frame, StreamText) and (frame.request_id, frame.chunk) == ("NaN", "Infinity")


@pytest.mark.parametrize(
    "text", ['{"type": "ping", "id": "NaN"', b'{"type": "ping", "id": "Infinity", "x": "\xff"}']
)
def test_malformed_json_with_those_words_is_bad_frame(text: str | bytes) -> None:
    # Read by the strict parser that looks for the constants: still just malformed.
    with pytest.raises(BadFrame, match="malformed JSON"):
        decode(text)


def test_a_str_that_is_not_unicode_is_bad_frame() -> None:
    # A lone surrogate cannot come off the wire (websockets checks UTF-8), but decode
    # takes any str: the error has no location, and is still a BadFrame.
    with pytest.raises(BadFrame, match=r"invalid frame: .*unicode"):
        decode('{"type": "ping", "id": "\ud800"}')


@pytest.mark.parametrize("text", ["[]", "1", '"ping"', "null", "true", '[{"type": "ping"}]'])
def test_non_object_is_bad_frame(text: str) -> None:
    with pytest.raises(BadFrame, match="must be a JSON object"):
        decode(text)


@pytest.mark.parametrize("text", ["{}", '{"id": "p1"}', '{"Type": "ping"}'])
def test_missing_type_is_bad_frame(text: str) -> None:
    with pytest.raises(BadFrame, match="no 'type' field"):
        decode(text)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (5, "a number"),
        (1.5, "a number"),
        (None, "null"),
        (True, "a boolean"),
        ([1], "an array"),
        ({"a": 1}, "an object"),
    ],
)
def test_type_that_is_not_a_string_is_bad_frame(value: Any, kind: str) -> None:
    with pytest.raises(BadFrame, match=f"'type' must be a string, got {kind}") as info:
        decode(json.dumps({"type": value, "id": "x"}))
    assert info.value.code == "bad_frame"


@pytest.mark.parametrize("name", ["nope", "PING", "tool-call", ""])
def test_unknown_type(name: str) -> None:
    with pytest.raises(UnknownType) as info:
        decode(json.dumps({"type": name, "id": "x"}))
    assert info.value.code == "unknown_type"
    assert repr(name) in info.value.message
    assert info.value.extra["frame_type"] == name
    assert not isinstance(info.value, BadFrame)


@pytest.mark.parametrize(
    ("obj", "fields"),
    [
        ({"type": "tool_call", "id": "c1"}, ["action"]),
        ({"type": "tool_call"}, ["id", "action"]),
        ({"type": "device_hello", "protocol": 1}, ["device_id"]),
        ({"type": "control_hello"}, ["protocol"]),
        ({"type": "tool_result"}, ["id"]),
        ({"type": "trigger", "id": "q"}, ["agent_id"]),
        ({"type": "cancel", "id": "q"}, ["target"]),
        ({"type": "floating_request", "message": "hi"}, ["scope"]),
        ({"type": "stream_text", "request_id": "h"}, ["chunk"]),
        ({"type": "run_progress", "seq": 1, "run_id": "r", "phase": "scan", "done": 1}, ["total"]),
    ],
)
def test_missing_fields_are_named(obj: dict[str, Any], fields: list[str]) -> None:
    with pytest.raises(BadFrame) as info:
        decode(json.dumps(obj))
    message = info.value.message
    assert obj["type"] in message
    for field in fields:
        assert f"{field}: Field required" in message


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"type": "ping", "id": 5}, "id"),
        ({"type": "device_hello", "protocol": 1, "device_id": ""}, "device_id"),
        ({"type": "device_hello", "protocol": "one", "device_id": "d"}, "protocol"),
        ({"type": "home_request", "message": ""}, "message"),
        ({"type": "floating_domain", "request_id": "f", "domain": "emails"}, "domain"),
        ({"type": "tool_result", "id": "c", "rows": {"not": "a list"}}, "rows"),
    ],
)
def test_invalid_values_name_the_field(obj: dict[str, Any], field: str) -> None:
    with pytest.raises(BadFrame) as info:
        decode(json.dumps(obj))
    # "protocol.int: ..." for a union field still names the field first
    assert re.search(rf"(^|[ ;]){field}[.:]", info.value.message.split("frame: ", 1)[1])


def test_nested_field_errors_are_named_with_their_path() -> None:
    obj = {
        "type": "stream_end",
        "request_id": "h",
        "mutations": [{"action": "drop", "table": "t", "data": {}}],
    }
    with pytest.raises(BadFrame, match=r"mutations\.0\.action"):
        decode(json.dumps(obj))


def test_unknown_extra_fields_are_ignored() -> None:
    frame = decode(
        json.dumps(
            {
                "type": "tool_call",
                "id": "c1",
                "action": "get",
                "table": "tasks",
                "added_in_v1_5": {"x": 1},
                "client": {"name": "x", "future": True},
            }
        )
    )
    assert isinstance(frame, ToolCall)
    assert frame.id == "c1" and frame.action == "get"
    assert "added_in_v1_5" not in encode(frame)
    hello = decode(
        json.dumps(
            {
                "type": "device_hello",
                "protocol": 1,
                "device_id": "d",
                "client": {"name": "app", "version": "1", "build": 77},
                "capabilities": {"tables": [], "idempotency": True, "vector": False, "fts": True},
            }
        )
    )
    assert isinstance(hello, DeviceHello)
    assert hello.client is not None and hello.client.name == "app"
    assert hello.capabilities.idempotency is True


# --- tool_result compatibility rules --------------------------------------------------


def test_tool_result_without_ok_is_a_success() -> None:
    result = decode('{"type": "tool_result", "id": "c1", "rows": []}')
    assert isinstance(result, ToolResult)
    assert result.ok is None
    assert result.succeeded is True


def test_tool_result_without_ok_but_with_error_is_a_failure() -> None:
    result = decode(
        '{"type": "tool_result", "id": "c1",'
        ' "error": {"code": "not_found", "message": "no task t7"}}'
    )
    assert isinstance(result, ToolResult)
    assert result.succeeded is False
    assert result.error_body() == ErrorBody(code="not_found", message="no task t7")


def test_tool_result_error_may_be_a_string() -> None:
    result = decode('{"type": "tool_result", "id": "c1", "ok": false, "error": "disk full"}')
    assert isinstance(result, ToolResult)
    assert result.succeeded is False
    body = result.error_body()
    assert body.message == "disk full"
    assert body.code == "internal"
    # and a bare string error without ok is a failure too
    bare = decode('{"type": "tool_result", "id": "c1", "error": "boom"}')
    assert isinstance(bare, ToolResult) and bare.succeeded is False


def test_tool_result_ok_wins_over_error() -> None:
    ok = decode('{"type": "tool_result", "id": "c1", "ok": true, "error": "ignored"}')
    assert isinstance(ok, ToolResult) and ok.succeeded is True
    failed = decode('{"type": "tool_result", "id": "c1", "ok": false}')
    assert isinstance(failed, ToolResult) and failed.succeeded is False
    assert failed.error_body().code == "internal"
    assert failed.error_body().message  # says something, never empty


# --- property: decode only ever returns a frame or raises ProtocolError ----------------


def _decode_total(data: str | bytes) -> None:
    try:
        frame = decode(data)
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_TYPE)
        assert isinstance(exc.message, str) and exc.message
        return
    except Exception as exc:  # pragma: no cover - this is the failure being hunted
        pytest.fail(f"decode({data!r:.200}) raised {type(exc).__name__}: {exc}")
    assert isinstance(frame, _Frame)
    assert frame.model_dump()["type"] in FRAME_TYPES
    # whatever decoded must encode again and decode to the same frame
    assert decode(encode(frame)) == frame


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
type_values = st.sampled_from(sorted(FRAME_TYPES)) | st.text(max_size=12) | json_scalars
field_names = st.sampled_from(
    [
        "id",
        "action",
        "table",
        "protocol",
        "device_id",
        "token",
        "ok",
        "error",
        "row",
        "rows",
        "request_id",
        "message",
        "scope",
        "seq",
        "run_id",
        "agent_id",
        "phase",
        "done",
        "total",
        "chunk",
        "code",
        "mutations",
        "agents",
    ]
) | st.text(max_size=8)
random_frames = st.builds(
    lambda t, fields: {**fields, "type": t},
    type_values,
    st.dictionaries(field_names, json_values, max_size=6),
)
SAMPLE_TEXTS = [encode(f) for f in SAMPLES.values()]


@st.composite
def mutated_frames(draw: st.DrawFn) -> str | bytes:
    text = draw(st.sampled_from(SAMPLE_TEXTS))
    obj = json.loads(text)
    how = draw(st.sampled_from(["delete", "replace", "truncate", "bytes", "nest", "insert_bytes"]))
    if how == "delete" and obj:
        key = draw(st.sampled_from(sorted(obj)))
        del obj[key]
        return json.dumps(obj)
    if how == "replace":
        key = draw(st.sampled_from(sorted(obj)))
        obj[key] = draw(json_values)
        return json.dumps(obj)
    if how == "truncate":
        cut = draw(st.integers(min_value=0, max_value=len(text)))
        return text[:cut]
    if how == "bytes":
        return draw(st.binary(max_size=64))
    if how == "nest":
        key = draw(st.sampled_from(sorted(obj)))
        depth = draw(st.integers(min_value=1, max_value=3000))
        kind = draw(st.sampled_from(["list", "dict"]))
        if kind == "list":
            inner = "[" * depth + "]" * depth
        else:
            inner = '{"a":' * depth + "1" + "}" * depth
        return text[:-1] + f', "{key}x": {inner}' + "}"
    raw = text.encode()
    at = draw(st.integers(min_value=0, max_value=len(raw)))
    return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values.map(json.dumps), st.text(max_size=50), st.binary(max_size=50)))
def test_decode_is_total_on_random_json_and_text(data: str | bytes) -> None:
    _decode_total(data)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_frames)
def test_decode_is_total_on_random_dicts_with_a_type(obj: dict[str, Any]) -> None:
    _decode_total(json.dumps(obj))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frames())
def test_decode_is_total_on_mutated_valid_frames(data: str | bytes) -> None:
    _decode_total(data)


@pytest.mark.parametrize("depth", [10, 1000, 100_000])
def test_deep_nesting_is_bad_frame_or_frame_never_a_crash(depth: int) -> None:
    for inner in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        _decode_total('{"type": "ping", "id": "p", "extra": ' + inner + "}")
        _decode_total('{"type": "tool_call", "id": "c", "action": "get", "data": ' + inner + "}")
        _decode_total(inner)


@pytest.mark.parametrize(
    ("cls", "fields"),
    [
        (ToolCall, {"id": "c1", "action": "get", "table": "tasks", "data": {"id": "t1"}}),
        (ToolCall, {"id": "c2", "action": "select", "table": "tasks", "run_id": "r", "limit": 5}),
        (ToolResult, {"id": "c1", "ok": True, "row": None}),
        (ToolResult, {"id": "c1", "ok": True, "rows": [{"id": "t1", "title": "x"}]}),
        (Ping, {}),
        (Pong, {"id": "p"}),
        (StreamEnd, {"request_id": "q"}),  # default factory: falls back to pydantic
    ],
)
def test_construct_matches_model_construct(cls: type[Any], fields: dict[str, Any]) -> None:
    fast = construct(cls, **fields)
    slow = cls.model_construct(**fields)
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert encode(fast) == encode(slow) and encode_bytes(fast) == encode(slow).encode()
    assert decode(encode(fast)) == decode(encode(slow))
