"""The Outlook and Teams clients against the fake Graph: delta rounds, resyncs, faults."""

from __future__ import annotations

import json
from urllib.parse import unquote

import pytest

from agents.cloud.graph import OutlookClient
from agents.cloud.http import CloudHttp
from agents.cloud.teams import TeamsClient
from tests.support.fake_microsoft import THROTTLED, FakeGraph


def fill(server: FakeGraph, n: int, prefix: str = "Mail", folder: str = "inbox") -> list[str]:
    return [server.add_mail(f"{prefix} {i}", text=f"Body {i}", folder=folder) for i in range(n)]


def outlook(http: CloudHttp, server: FakeGraph, **kwargs: object) -> OutlookClient:
    return OutlookClient(http, server.api_base, **kwargs)  # type: ignore[arg-type]


def delta_requests(server: FakeGraph) -> list[object]:
    return [r for r in server.api_requests("/v1.0/me/mailFolders/") if r.path.endswith("/delta")]


async def test_first_round_pages_with_the_preferences(
    graph_server: FakeGraph, graph_http: CloudHttp
) -> None:
    ids = fill(graph_server, 120)
    changes = await outlook(graph_http, graph_server).list_changes(None)
    assert [r.id for r in changes.refs] == ids
    assert len(delta_requests(graph_server)) == 3  # 50 + 50 + 20
    for prefer in graph_server.prefers:
        assert 'IdType="ImmutableId"' in prefer and "odata.maxpagesize=50" in prefer
    first = graph_server.api_requests("/v1.0/me/mailFolders/inbox/messages/delta")[0]
    assert first.query["$filter"][0].startswith("receivedDateTime ge ")
    assert "body" not in first.query["$select"][0].split(",")
    ref = changes.refs[0]
    assert (
        ref.subject == "Mail 0"
        and ref.sender == "Dana <dana@contoso.com>"
        and ref.snippet == "Body 0"
    )
    state = json.loads(changes.cursor)["folders"]["inbox"]
    assert (
        state["delta_link"].startswith(graph_server.api_base)
        and "$deltatoken" in state["delta_link"]
    )
    assert graph_server.gets == []


async def test_links_are_followed_exactly(graph_server: FakeGraph, graph_http: CloudHttp) -> None:
    fill(graph_server, 60)
    first = await outlook(graph_http, graph_server).list_changes(None)
    link = json.loads(first.cursor)["folders"]["inbox"]["delta_link"]
    await outlook(graph_http, graph_server).list_changes(first.cursor)
    last = delta_requests(graph_server)[-1]
    assert f"{graph_server.url}{last.path}?$deltatoken={last.query['$deltatoken'][0]}" == link  # type: ignore[attr-defined]


async def test_incremental_round_and_removed_rows(
    graph_server: FakeGraph, graph_http: CloudHttp
) -> None:
    ids = fill(graph_server, 30)
    client = outlook(graph_http, graph_server)
    first = await client.list_changes(None)
    graph_server.delete_mail(ids[3])
    new = fill(graph_server, 2, "New")
    second = await client.list_changes(first.cursor)
    assert [r.id for r in second.refs] == new  # the @removed row is not mail
    assert not second.resynced
    message = await client.get_message(second.refs[0])
    assert message.body == "Body 0" and message.headers["From"] == "Dana <dana@contoso.com>"
    assert graph_server.gets == [new[0]]
    assert (await client.list_changes(second.cursor)).refs == []


async def test_html_bodies_become_text_and_replies_are_cut(
    graph_server: FakeGraph, graph_http: CloudHttp
) -> None:
    mid = graph_server.add_mail(
        "Re: Q3",
        text="Thursday works.\n\nFrom: Dana <d@c.com>\nSent: Monday, November 3, 2026 9:00 AM\nTo: Me\nSubject: Q3\n\nCan we meet?",
    )
    message = await outlook(graph_http, graph_server).get_message(mid)
    assert message.body == "Thursday works."


@pytest.mark.parametrize("style", ["410", "400"])
async def test_expired_delta_starts_a_filtered_round(
    graph_server: FakeGraph, graph_http: CloudHttp, style: str
) -> None:
    graph_server.resync_style = style
    old = fill(graph_server, 10)
    client = outlook(graph_http, graph_server)
    first = await client.list_changes(None)
    graph_server.expire_delta()
    new = fill(graph_server, 2, "New")
    second = await client.list_changes(first.cursor)
    assert second.resynced
    ids = [r.id for r in second.refs]
    assert set(new) <= set(ids) <= set(old) | set(new) and len(ids) == len(set(ids))
    since = json.loads(first.cursor)["folders"]["inbox"]["since"]
    restart = delta_requests(graph_server)[-1]
    assert restart.query["$filter"][0].startswith("receivedDateTime ge ")  # type: ignore[attr-defined]
    assert restart.query["$filter"][0].split(" ge ")[1] <= since  # type: ignore[attr-defined]
    third = await client.list_changes(second.cursor)
    assert third.refs == [] and not third.resynced


async def test_stale_next_link_mid_round_restarts(
    graph_server: FakeGraph, graph_http: CloudHttp
) -> None:
    ids = fill(graph_server, 60)
    graph_server.fail(
        "$skiptoken", 410, {"error": {"code": "SyncStateNotFound", "message": "gone"}}
    )
    changes = await outlook(graph_http, graph_server).list_changes(None)
    assert [r.id for r in changes.refs] == ids and changes.resynced


async def test_throttling_with_fractional_retry_after(
    graph_server: FakeGraph, graph_http: CloudHttp
) -> None:
    ids = fill(graph_server, 120)
    graph_server.fail("$skiptoken", 429, THROTTLED, retry_after="0.25", times=2)
    changes = await outlook(graph_http, graph_server).list_changes(None)
    assert [r.id for r in changes.refs] == ids
    assert graph_http.retries == 2


async def test_reset_mid_page_neither_skips_nor_repeats(
    graph_server: FakeGraph, graph_http: CloudHttp
) -> None:
    ids = fill(graph_server, 120)
    fault = graph_server.fail("$skiptoken", reset=True)
    changes = await outlook(graph_http, graph_server).list_changes(None)
    assert [r.id for r in changes.refs] == ids
    assert fault.times == 0


async def test_several_folders(graph_server: FakeGraph, graph_http: CloudHttp) -> None:
    inbox = fill(graph_server, 3)
    other = fill(graph_server, 2, "Archive", folder="archive")
    client = outlook(graph_http, graph_server, folders=("inbox", "archive"))
    changes = await client.list_changes(None)
    assert sorted(r.id for r in changes.refs) == sorted(inbox + other)
    assert set(json.loads(changes.cursor)["folders"]) == {"inbox", "archive"}


async def test_bodies_never_more_than_four_in_flight(
    graph_server: FakeGraph, graph_http: CloudHttp
) -> None:
    import asyncio

    ids = fill(graph_server, 20)
    graph_server.latency_s = 0.05
    client = outlook(graph_http, graph_server)
    messages = await asyncio.gather(*(client.get_message(mid) for mid in ids))
    assert [m.ref.id for m in messages] == ids
    assert graph_server.max_in_flight == 4


# --- Teams -----------------------------------------------------------------------------


async def test_teams_first_run_pages_and_skips_non_content(
    graph_server: FakeGraph, graph_http: CloudHttp
) -> None:
    busy = graph_server.add_chat("Launch")
    quiet = graph_server.add_chat("Quiet")
    del quiet  # a chat without messages is never asked for its messages
    ids = [graph_server.add_chat_message(busy, f"<div>Point {i}</div>") for i in range(110)]
    graph_server.add_chat_message(busy, "", message_type="unknownFutureValue")
    graph_server.add_chat_message(busy, "<div>oops</div>", deleted=True)
    teams = TeamsClient(graph_http, graph_server.api_base)
    changes = await teams.list_changes(None)
    assert [r.id for r in changes.refs] == [f"{busy}/{i}" for i in ids]
    message_lists = [
        r for r in graph_server.api_requests("/v1.0/me/chats/") if r.path.endswith("/messages")
    ]
    assert len(message_lists) == 3  # 50 + 50 + 12
    assert message_lists[0].query["$orderby"] == ["lastModifiedDateTime desc"]
    assert message_lists[0].query["$top"] == ["50"]
    assert changes.refs[0].snippet == "Point 0" and changes.refs[0].sender == "Robin Kline"
    assert changes.refs[0].subject == "Launch"


async def test_teams_incremental_skips_quiet_chats(
    graph_server: FakeGraph, graph_http: CloudHttp
) -> None:
    chats = [graph_server.add_chat(f"Chat {i}") for i in range(45)]  # three pages of chats
    for chat in chats:
        graph_server.add_chat_message(chat, "<p>hello</p>")
    teams = TeamsClient(graph_http, graph_server.api_base)
    first = await teams.list_changes(None)
    assert len(first.refs) == 45
    assert len([r for r in graph_server.api_requests() if r.path == "/v1.0/me/chats"]) == 3
    before = len(graph_server.api_requests())
    new = [
        graph_server.add_chat_message(chats[7], "<p>New <b>one</b></p>"),
        graph_server.add_chat_message(chats[7], "<p>and two</p>"),
    ]
    second = await teams.list_changes(first.cursor)
    assert [r.id for r in second.refs] == [f"{chats[7]}/{m}" for m in new]
    later = graph_server.api_requests()[before:]
    assert [unquote(r.path) for r in later if r.path.endswith("/messages")] == [
        f"/v1.0/me/chats/{chats[7]}/messages"
    ]
    assert (
        later[-1].query["$filter"][0]
        == f"lastModifiedDateTime gt {json.loads(first.cursor)['chats'][chats[7]]}"
    )
    message = await teams.get_message(second.refs[0])
    assert message.body == "New one"
    assert graph_server.gets == [f"{chats[7]}/{new[0]}"]
    assert (await teams.list_changes(second.cursor)).refs == []


async def test_teams_reset_and_throttling_mid_chat(
    graph_server: FakeGraph, graph_http: CloudHttp
) -> None:
    chat = graph_server.add_chat("Busy")
    ids = [graph_server.add_chat_message(chat, f"<p>{i}</p>") for i in range(120)]
    graph_server.fail("$skiptoken=50", reset=True)
    graph_server.fail("$skiptoken=100", 429, THROTTLED, retry_after="0.1")
    changes = await TeamsClient(graph_http, graph_server.api_base).list_changes(None)
    assert [r.id for r in changes.refs] == [f"{chat}/{i}" for i in ids]
    assert graph_http.retries == 2
