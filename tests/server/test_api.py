"""Every endpoint of the server through the real langgraph-sdk (async and sync clients), on the
embedded SQLite default and on Postgres + Redis, against a real uvicorn process."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.errors import NotFoundError, UnprocessableEntityError

from langgraph_resilient.server.graphs import assistant_id_for
from tests.server.conftest import ServeProcess, sdk

pytestmark = pytest.mark.timeout(120)


async def refused(call: Any) -> httpx.Response:
    """The error response of an SDK call that must fail (runs.wait raises httpx's error)."""
    try:
        await call
    except httpx.HTTPStatusError as exc:
        return exc.response
    raise AssertionError("the call succeeded")


async def test_assistants(server: ServeProcess) -> None:
    client = sdk(server.url)
    found = await client.assistants.search(limit=10)
    assert {a["graph_id"] for a in found} == {"support", "chain", "slow"}
    by_name = await client.assistants.get("support")
    by_id = await client.assistants.get(assistant_id_for("support"))
    assert by_name == by_id
    assert by_id["assistant_id"] == assistant_id_for("support")
    assert [a["graph_id"] for a in await client.assistants.search(graph_id="chain")] == ["chain"]
    drawing = await client.assistants.get_graph("support")
    assert {n["id"] for n in drawing["nodes"]} >= {"intake", "research", "review", "publish"}
    deep = await client.assistants.get_graph("support", xray=True)
    assert "research:look_up" in {n["id"] for n in deep["nodes"]}
    schemas = await client.assistants.get_schemas("support")
    assert schemas["input_schema"]["properties"]["question"]["type"] == "string"
    assert "notes" in schemas["state_schema"]["properties"]
    with pytest.raises(NotFoundError):
        await client.assistants.get("no-such-graph")


async def test_threads_crud_search_copy_delete(server: ServeProcess) -> None:
    client = sdk(server.url)
    tag = uuid.uuid4().hex
    own_id = str(uuid.uuid4())
    made = await client.threads.create(thread_id=own_id, metadata={"tag": tag, "user": "a"})
    assert made["thread_id"] == own_id and made["status"] == "idle"
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await client.threads.create(thread_id=own_id)
    assert refused.value.response.status_code == 409
    again = await client.threads.create(thread_id=own_id, if_exists="do_nothing")
    assert again["metadata"] == {"tag": tag, "user": "a"}
    other = await client.threads.create(metadata={"tag": tag, "user": "b"})
    patched = await client.threads.update(other["thread_id"], metadata={"user": "c"})
    assert patched["metadata"] == {"tag": tag, "user": "c"}
    assert (await client.threads.get(other["thread_id"]))["metadata"]["user"] == "c"

    found = await client.threads.search(metadata={"tag": tag}, limit=10)
    assert {t["thread_id"] for t in found} == {own_id, other["thread_id"]}
    assert [
        t["thread_id"] for t in await client.threads.search(metadata={"tag": tag, "user": "c"})
    ] == [other["thread_id"]]
    assert await client.threads.count(metadata={"tag": tag}) == 2
    oldest_first = await client.threads.search(metadata={"tag": tag}, sort_order="asc")
    assert [t["thread_id"] for t in oldest_first] == [own_id, other["thread_id"]]

    await client.runs.wait(own_id, "chain", input={"n": 1})
    copied = await client.threads.copy(own_id)
    assert copied["thread_id"] != own_id
    assert (await client.threads.get_state(copied["thread_id"]))["values"] == {"n": 6}
    idle = await client.threads.search(metadata={"tag": tag}, status="idle", limit=10)
    assert own_id in {t["thread_id"] for t in idle}

    await client.threads.delete(own_id)
    with pytest.raises(NotFoundError):
        await client.threads.get(own_id)
    with pytest.raises(NotFoundError):
        await client.threads.delete(own_id)
    assert (await client.threads.get_state(copied["thread_id"]))["values"] == {"n": 6}


async def test_interrupt_resume_state_history_time_travel(server: ServeProcess) -> None:
    client = sdk(server.url)
    thread = await client.threads.create()
    tid = thread["thread_id"]
    paused = await client.runs.wait(tid, "support", input={"question": "printer"})
    assert paused["__interrupt__"][0]["value"]["question"] == "Publish this answer?"
    record = await client.threads.get(tid)
    assert record["status"] == "interrupted"
    assert record["metadata"]["graph_id"] == "support"
    [interrupts] = record["interrupts"].values()
    assert interrupts[0]["value"]["question"] == "Publish this answer?"
    state = await client.threads.get_state(tid)
    assert state["next"] == ["review"]
    assert state["interrupts"][0]["id"] == interrupts[0]["id"]
    assert state["values"]["findings"] == ["found 2 articles", "summarized"]

    done = await client.runs.wait(tid, "support", command={"resume": True})
    assert done["published"] is True
    assert (await client.threads.get(tid))["status"] == "idle"

    history = await client.threads.get_history(tid, limit=50)
    assert history[0]["values"]["published"] is True
    ids = [h["checkpoint"]["checkpoint_id"] for h in history]
    assert ids == sorted(ids, reverse=True)
    parents = [h["parent_checkpoint"]["checkpoint_id"] for h in history[:-1]]
    assert parents == ids[1:]  # linear: every checkpoint's parent is the next older one
    page = await client.threads.get_history(tid, limit=2, before={"checkpoint_id": ids[1]})
    assert [h["checkpoint"]["checkpoint_id"] for h in page] == ids[2:4]
    by_source = await client.threads.get_history(tid, limit=50, metadata={"source": "input"})
    assert by_source and all(h["metadata"]["source"] == "input" for h in by_source)

    at_review = next(h for h in history if h["next"] == ["review"])
    checkpoint_id = at_review["checkpoint"]["checkpoint_id"]
    old = await client.threads.get_state(tid, checkpoint_id=checkpoint_id)
    assert old["values"].get("published") is None and old["next"] == ["review"]
    old_by_ref = await client.threads.get_state(
        tid, checkpoint={"checkpoint_id": checkpoint_id, "checkpoint_ns": ""}
    )
    assert old_by_ref["checkpoint"]["checkpoint_id"] == checkpoint_id
    with pytest.raises(NotFoundError):
        await client.threads.get_state(tid, checkpoint_id=str(uuid.uuid4()))

    no_checkpoint = client.runs.wait(tid, "support", input={"question": "x"}, checkpoint_id="nope")
    assert (await refused(no_checkpoint)).status_code == 404


async def test_time_travel_from_checkpoint(server: ServeProcess) -> None:
    client = sdk(server.url)
    tid = (await client.threads.create())["thread_id"]
    assert await client.runs.wait(tid, "chain", input={"n": 0}) == {"n": 5}
    original = await client.threads.get_history(tid, limit=50)
    fork_point = next(h for h in original if h["next"] == ["three"])
    assert fork_point["values"] == {"n": 2}
    fork_id = fork_point["checkpoint"]["checkpoint_id"]
    replayed = await client.runs.wait(tid, "chain", input=None, checkpoint_id=fork_id)
    assert replayed == {"n": 5}
    history = await client.threads.get_history(tid, limit=50)
    new = [
        h
        for h in history
        if h["checkpoint"]["checkpoint_id"]
        not in {o["checkpoint"]["checkpoint_id"] for o in original}
    ]
    # the new branch: a copy of the fork point, then steps three, four and five
    assert [h["values"]["n"] for h in new] == [5, 4, 3, 2]
    assert new[-1]["parent_checkpoint"]["checkpoint_id"] == fork_id
    # The thread goes on from the new branch, under its lease again.
    assert await client.runs.wait(tid, "chain", input={"n": 100}) == {"n": 105}
    state = await client.threads.get_state(tid)
    assert state["values"] == {"n": 105}


async def test_update_state_as_node(server: ServeProcess) -> None:
    client = sdk(server.url)
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "support", input={"question": "q"})
    answer = await client.threads.update_state(
        tid, {"notes": ["edited by a human"], "approved": True}, as_node="review"
    )
    assert answer["checkpoint"]["thread_id"] == tid
    state = await client.threads.get_state(tid)
    assert state["next"] == ["publish"]
    assert state["values"]["notes"][-1] == "edited by a human"
    assert (await client.threads.get(tid))["values"]["approved"] is True
    finished = await client.runs.wait(tid, "support", input=None)
    assert finished["published"] is True
    with pytest.raises(UnprocessableEntityError):
        await client.threads.update_state(tid, {"notes": ["x"]}, as_node="no-such-node")
    fresh = (await client.threads.create())["thread_id"]
    with pytest.raises(httpx.HTTPStatusError) as no_graph:
        await client.threads.update_state(fresh, {"notes": ["x"]})
    assert no_graph.value.response.status_code == 409


async def test_stream_modes_and_subgraphs(server: ServeProcess) -> None:
    client = sdk(server.url)
    tid = (await client.threads.create())["thread_id"]
    parts = [
        p
        async for p in client.runs.stream(
            tid,
            "support",
            input={"question": "streams"},
            stream_mode=["values", "updates", "messages-tuple", "custom", "debug"],
            stream_subgraphs=True,
        )
    ]
    events = [p.event for p in parts]
    assert events[0] == "metadata" and parts[0].data["run_id"]
    assert "values" in events and "updates" in events and "debug" in events
    assert {"progress": "intake"} in [p.data for p in parts if p.event == "custom"]
    tokens = [p.data[0]["content"] for p in parts if p.event == "messages"]
    assert "".join(tokens).startswith("Try turning it off")
    sub = [e for e in events if e.startswith("updates|research:")]
    assert sub, events  # the subgraph's own steps, namespaced
    assert parts[[p.event for p in parts].index("values")].data["question"] == "streams"
    last_values = [p.data for p in parts if p.event == "values"][-1]
    assert "__interrupt__" in last_values

    single = [
        p.event
        async for p in client.runs.stream(
            tid, "support", command={"resume": True}, stream_mode="updates"
        )
    ]
    assert single == ["metadata", "updates", "updates"]

    messages = [
        p
        async for p in client.runs.stream(
            None, "support", input={"question": "m"}, stream_mode="messages"
        )
    ]
    kinds = {p.event for p in messages}
    assert {"messages/metadata", "messages/partial"} <= kinds


async def test_stateless_runs(server: ServeProcess) -> None:
    client = sdk(server.url)
    before = await client.threads.count()
    assert await client.runs.wait(None, "chain", input={"n": 10}) == {"n": 15}
    parts = [
        p async for p in client.runs.stream(None, "chain", input={"n": 0}, stream_mode="values")
    ]
    assert [p.data["n"] for p in parts if p.event == "values"] == [0, 1, 2, 3, 4, 5]
    assert await client.threads.count() == before  # nothing stored


async def test_if_not_exists_and_run_errors(server: ServeProcess) -> None:
    client = sdk(server.url)
    missing = str(uuid.uuid4())
    assert (await refused(client.runs.wait(missing, "chain", input={"n": 0}))).status_code == 404
    with pytest.raises(NotFoundError):
        await client.threads.get(missing)  # the refused run wrote nothing
    made = await client.runs.wait(missing, "chain", input={"n": 0}, if_not_exists="create")
    assert made == {"n": 5}
    assert (await refused(client.runs.wait(missing, "nope", input={"n": 0}))).status_code == 404
    bad_input = await refused(client.runs.wait(missing, "support", input={"question": 123}))
    assert bad_input.status_code == 422 and "input.question" in bad_input.text
    bad_mode = await refused(
        client.runs.wait(missing, "chain", input={"n": 0}, multitask_strategy="rollback")
    )
    assert bad_mode.status_code == 422 and "rollback" in bad_mode.text
    assert (await client.threads.get_state(missing))["values"] == {"n": 5}  # unchanged
    # A graph error is the run's result (LangGraph Server's shape), and the thread says so.
    failed = await client.runs.wait(missing, "slow", input={"log": ["boom"]}, raise_error=False)
    assert failed["__error__"] == {"error": "ValueError", "message": "first: boom"}
    assert (await client.threads.get(missing))["status"] == "error"


def test_sync_client(server: ServeProcess) -> None:
    client = get_sync_client(url=server.url, api_key=None)
    thread = client.threads.create(metadata={"sync": True})
    result = client.runs.wait(thread["thread_id"], "chain", input={"n": 2})
    assert result == {"n": 7}
    parts = list(
        client.runs.stream(thread["thread_id"], "chain", input={"n": 0}, stream_mode="updates")
    )
    assert [p.event for p in parts] == ["metadata"] + ["updates"] * 5
    assert client.threads.get_state(thread["thread_id"])["values"] == {"n": 5}
    assert len(client.threads.get_history(thread["thread_id"], limit=100)) == 14
    client.threads.delete(thread["thread_id"])


async def test_meta_endpoints(server: ServeProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/ok")).json() == {"ok": True}
        assert (await http.get("/health")).json() == {"status": "ok"}
        ready = (await http.get("/ready")).json()
        assert ready["status"] == "ok", ready
        info = (await http.get("/info")).json()
        assert info["server"] == "langgraph-resilient"
        schema = (await http.get("/openapi.json")).json()
        assert "/threads/{thread_id}/runs/stream" in schema["paths"]
        docs = await http.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        got = await http.get("/ok", headers={"x-request-id": "abc-123"})
        assert got.headers["x-request-id"] == "abc-123"
        assert len((await http.get("/ok")).headers["x-request-id"]) == 32


async def test_bad_input_never_500(server: ServeProcess) -> None:
    cases: list[tuple[str, str, Any, int]] = [
        ("POST", "/threads", b"{not json", 422),
        ("POST", "/threads", {"metadata": "a string"}, 422),
        ("POST", "/threads/search", {"limit": "ten"}, 422),
        ("POST", "/threads/search", {"status": "sleeping"}, 422),
        ("GET", f"/threads/{uuid.uuid4()}", None, 404),
        ("POST", f"/threads/{uuid.uuid4()}/runs/wait", {"assistant_id": "chain"}, 404),
        ("POST", "/runs/wait", {"assistant_id": "chain", "stream_mode": "events"}, 422),
        ("POST", "/runs/wait", {"assistant_id": "chain", "input": [1, "x"]}, 422),
        ("POST", "/runs/wait", {"input": {"n": 1}}, 422),
        ("POST", "/runs/stream", {"assistant_id": "chain", "interrupt_before": ["zz"]}, 422),
        ("GET", "/assistants/nope/schemas", None, 404),
        ("GET", "/no/such/path", None, 404),
        ("DELETE", "/assistants/search", None, 405),
    ]
    async with httpx.AsyncClient(base_url=server.url) as http:
        for method, path, body, status in cases:
            if isinstance(body, bytes):
                response = await http.request(
                    method, path, content=body, headers={"content-type": "application/json"}
                )
            else:
                response = await http.request(method, path, json=body)
            assert response.status_code == status, (method, path, body, response.text)
            assert response.headers["content-type"].startswith("application/json")
            assert "Traceback" not in response.text
            assert isinstance(response.json()["detail"], str)
        named = await http.post("/threads", json={"metadata": 5})
        assert named.json()["errors"][0]["field"] == "metadata"
