"""One object nested too deeply cannot spoil a list or a watch: it comes alone,
with what could be read of it and a problem naming the field.

The client is exercised end to end against a small HTTP server on loopback
that answers as the API server does (the API server itself accepts
thousands of levels of nesting in a Workflow's params)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kwf.k8s.api import WORKFLOWS, Client, Config, UnreadableAnswer, WatchEvent
from kwf.k8s.reading import elements, members, read_event, read_list, read_object

DEPTH = 250


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"deeper": value}
    return value


def workflow(name: str, uid: str, params: Any) -> dict[str, Any]:
    # managedFields mirrors every field set, as deep as the params themselves.
    fields = {"f:spec": {"f:params": params}}
    return {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": uid,
            "resourceVersion": "7",
            "managedFields": [{"manager": "kubectl", "fieldsType": "FieldsV1", "fieldsV1": fields}],
        },
        "spec": {"steps": [{"name": "a", "script": {"source": "print(1)"}}], "params": params},
    }


def dumps(value: Any) -> str:
    # json.dumps recurses once per level: deep values need the room.
    return json.dumps(value, separators=(",", ":"))


def test_members_and_elements_split_only_the_top_level() -> None:
    text = '{"a": "x,]}\\"{", "b": [1, {"c": [2, 3]}], "d": null , "e": {"f": "}"}}'
    assert [(k, json.loads(v)) for k, v in members(text)] == [
        ("a", 'x,]}"{'),
        ("b", [1, {"c": [2, 3]}]),
        ("d", None),
        ("e", {"f": "}"}),
    ]
    assert [json.loads(v) for v in elements('[{"a": ","}, "]", 3, []]')] == [{"a": ","}, "]", 3, []]
    assert list(elements("[]")) == []


def test_an_object_too_deep_to_read_keeps_its_metadata_and_names_the_field() -> None:
    found = read_object(dumps(workflow("deep", "u-deep", nested(DEPTH))))
    assert not isinstance(found, dict)
    assert found.object["metadata"]["name"] == "deep"
    assert found.problem == "spec: nested too deeply to read"


def test_a_list_with_one_deep_item_keeps_every_other_item() -> None:
    items = [workflow("before", "u1", {}), workflow("deep", "u2", nested(DEPTH)), workflow("after", "u3", {})]
    listing = {"kind": "WorkflowList", "metadata": {"resourceVersion": "9"}, "items": items}
    found, bad = read_list(dumps(listing).encode())
    assert [item["metadata"]["name"] for item in found["items"]] == ["before", "after"]
    assert found["metadata"]["resourceVersion"] == "9"
    (unreadable,) = bad
    assert unreadable.object["metadata"]["uid"] == "u2" and "spec" in unreadable.problem


def test_a_watch_event_too_deep_to_read_still_says_what_happened_to_what() -> None:
    line = dumps({"type": "MODIFIED", "object": workflow("deep", "u2", nested(DEPTH))})
    kind, obj, problem = read_event(line)
    assert (kind, obj["metadata"]["name"]) == ("MODIFIED", "deep")
    assert problem == "spec: nested too deeply to read"


# ------------------------------------------------------------- the client


class FakeApiServer:
    """Answers a list and then one watch stream, as the API server would."""

    def __init__(self, listing: dict[str, Any], events: list[dict[str, Any]]) -> None:
        self.listing = dumps(listing).encode()
        self.events = b"".join(dumps(e).encode() + b"\n" for e in events)
        self.watches = 0

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        target = request.split(b" ", 2)[1]
        if b"watch=true" in target:
            self.watches += 1
            body = self.events if self.watches == 1 else b""
        else:
            body = self.listing
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeApiServer, Client]]:
    listing = {
        "kind": "WorkflowList",
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "metadata": {"resourceVersion": "10"},
        "items": [workflow("deep", "u1", nested(DEPTH)), workflow("plain", "u2", {"x": 1})],
    }
    events = [
        {"type": "ADDED", "object": workflow("deeper", "u3", nested(DEPTH * 2))},
        {"type": "ADDED", "object": workflow("later", "u4", {})},
    ]
    fake = FakeApiServer(listing, events)
    server = await asyncio.start_server(fake.answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with Client(Config(server=f"http://127.0.0.1:{port}", ssl_context=False)) as client:
        yield fake, client
    server.close()
    await server.wait_closed()


async def test_list_and_watch_goes_on_past_objects_nested_too_deeply(
    served: tuple[FakeApiServer, Client],
) -> None:
    _, client = served
    seen: list[WatchEvent] = []

    async def follow() -> None:
        async for event in client.list_and_watch(WORKFLOWS, "team"):
            seen.append(event)
            if event.object.get("metadata", {}).get("name") == "later":
                return

    await asyncio.wait_for(follow(), 10)
    summary = [(e.type, (e.object.get("metadata") or {}).get("name"), e.problem) for e in seen]
    assert summary == [
        ("ADDED", "plain", None),
        ("ADDED", "deep", "spec: nested too deeply to read"),
        ("SYNCED", None, None),
        ("ADDED", "deeper", "spec: nested too deeply to read"),
        ("ADDED", "later", None),
    ]
    # The marker counts the unreadable item as existing (it is not deleted after a relist).
    assert {i["metadata"]["uid"] for i in seen[2].object["items"]} == {"u1", "u2"}
    assert seen[1].object["kind"] == "Workflow"


async def test_list_leaves_out_what_it_cannot_read(served: tuple[FakeApiServer, Client]) -> None:
    _, client = served
    listing = await client.list(WORKFLOWS, "team")
    assert [item["metadata"]["name"] for item in listing["items"]] == ["plain"]


async def test_one_object_too_deep_to_read_raises_a_typed_error_with_its_metadata() -> None:
    body = dumps(workflow("deep", "u1", nested(DEPTH))).encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Client(Config(server=f"http://127.0.0.1:{port}", ssl_context=False)) as client:
            with pytest.raises(UnreadableAnswer) as caught:
                await client.get(WORKFLOWS, "deep", "team")
    finally:
        server.close()
        await server.wait_closed()
    assert caught.value.partial["metadata"]["resourceVersion"] == "7"
    assert "spec" in caught.value.problem
