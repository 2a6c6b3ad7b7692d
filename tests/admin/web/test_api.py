"""The dashboard's JSON API against real boards (SQLite, redis-server, ZooKeeper), over HTTP."""

from __future__ import annotations

import json
import time

import pytest

from jobboard import errors
from jobboard.admin.web.snapshot import BoardReader
from jobboard.base import JobState, unique_owner
from tests.admin.web.conftest import TOKEN, EventStream
from tests.helpers import wait_until

SECRET = "hunter2-do-not-show"


def execution_record(name: str, conductor: str, owner: str, token: int, start: float) -> dict:
    """A progress record shaped as the engine saves it (task info with its execution)."""
    return {
        "state": "SUCCESS",
        "result": f"{name}-ok",
        "failure": None,
        "execution": {
            "task_id": f"id-{name}",
            "name": name,
            "parent_task_ids": [],
            "submit_time": start,
            "received_time": start + 0.5,
            "success": True,
            "exception": None,
            "attempt": 1,
            "execution": {
                "hostname": "host-a",
                "execution_start_time": start,
                "input_transform_start_time": start,
                "input_transform_end_time": start + 0.05,
                "task_start_time": start + 0.05,
                "task_end_time": start + 0.4,
                "result_transform_start_time": start + 0.4,
                "result_transform_end_time": start + 0.45,
                "execution_end_time": start + 0.45,
            },
        },
        "metadata": {"conductor": conductor, "owner": owner, "token": token},
    }


def test_overview_shows_flows_conductors_and_claims(web_board_factory, dashboards):
    board = web_board_factory()
    owner = unique_owner("worker-1")
    board.register_entity(owner, "conductor", {"name": "worker-1", "flows": ["images"]})
    running = board.post("resize-1", "images", {"n": 1})
    board.post("resize-2", "images", {"n": 2})
    board.post("report", "reports", {})
    claim = board.claim(running, owner)
    board.save_progress(
        running, owner, claim.token, "fetch", execution_record("fetch", "worker-1", owner, 1, 1e9)
    )
    dash = dashboards(board)

    doc = dash.get("/api/overview").json()

    assert doc["totals"]["waiting"] == 2 and doc["totals"]["claimed"] == 1
    flows = {f["flow"]: f for f in doc["flows"]}
    assert (flows["images"]["waiting"], flows["images"]["claimed"]) == (1, 1)
    assert flows["images"]["conductors_live"] == 1
    assert flows["reports"]["conductors_live"] == 0  # a backlog nobody serves
    assert flows["images"]["rates"]["posted"] > 0
    [conductor] = doc["conductors"]
    assert conductor["status"] == "live" and conductor["display_name"] == "worker-1"
    assert [j["id"] for j in conductor["jobs"]] == [running.id]
    [claimed] = doc["claims"]
    assert claimed["job"] == running.id and claimed["owner"] == owner
    assert claimed["task"] == {"running": None, "last_done": "fetch", "done": 1, "total": None,
                               "failed": 0}  # fmt: skip
    assert claimed["lease_left"] is None or claimed["lease_left"] > 0  # None: session-bound
    assert [j["name"] for j in doc["waiting"]] == ["resize-2", "report"]
    assert "store" not in json.dumps(doc["waiting"])


def test_a_silent_conductor_is_shown_stale(sqlite_board_factory, dashboards):
    board = sqlite_board_factory()
    board.register_entity(unique_owner("quiet"), "conductor", {"name": "quiet", "flows": ["f"]})
    reader = BoardReader(board, label="b", stale_after=0.2, min_age=0.0)
    dash = dashboards(board, reader=reader)

    def status():
        return dash.get("/api/overview").json()["conductors"][0]["status"]

    wait_until(lambda: status() == "stale", timeout=10, message="conductor marked stale")
    assert dash.get("/api/overview").json()["flows"][0]["conductors_stale"] == 1


def test_job_page_masks_secrets_and_draws_attempts(web_board_factory, dashboards):
    board = web_board_factory()
    store = {
        "image": 7,
        "db_password": SECRET,
        "nested": {"apiKey": SECRET, "list": [{"token": SECRET}, "plain"]},
        "url": f"redis://user:{SECRET}@cache:6379/0",
    }
    job = board.post("resize-7", "images", store)
    first, second = unique_owner("old"), unique_owner("new")
    claim = board.claim(job, first)
    t0 = time.time() - 5
    board.save_progress(job, first, claim.token, "fetch",
                        execution_record("fetch", "old", first, claim.token, t0))  # fmt: skip
    board.abandon(job, first, claim.token, reason="conductor stopped")
    claim2 = board.claim(job, second)
    board.save_progress(job, second, claim2.token, "resize",
                        execution_record("resize", "new", second, claim2.token, t0 + 1))  # fmt: skip
    board.consume(job, second, claim2.token, result={"size": 10, "secret": SECRET})
    child = board.post("thumb-7", "images", {}, details={"parent": job.id})
    dash = dashboards(board)
    dash.get("/api/overview")  # the read that indexes children

    reply = dash.get(f"/api/jobs/{job.id}")

    assert reply.status == 200
    assert SECRET not in reply.body.decode()
    doc = reply.json()
    assert doc["job"]["store"]["image"] == 7
    assert doc["job"]["store"]["db_password"] == "••••••"
    assert doc["job"]["store"]["nested"]["list"] == [{"token": "••••••"}, "plain"]
    assert doc["job"]["store"]["url"] == "redis://user:***@cache:6379/0"
    assert doc["job"]["result"] == {"size": 10, "secret": "••••••"}
    assert doc["job"]["attempts"] == 2 and doc["job"]["state"] == "complete"
    bars = doc["timeline"]["bars"]
    assert [(b["task"], b["attempt"], b["conductor"]) for b in bars] == [
        ("fetch", 1, "old"),
        ("resize", 2, "new"),
    ]
    assert [p["name"] for p in bars[0]["phases"]] == ["input", "task", "result"]
    assert doc["timeline"]["conductors"] == ["old", "new"]
    assert [m["kind"] for m in doc["timeline"]["markers"]] == ["posted", "claimed", "complete"]
    assert [c["id"] for c in doc["children"]] == [child.id]
    parent_view = dash.get(f"/api/jobs/{child.id}").json()
    assert [(p["id"], p["state"]) for p in parent_view["parents"]] == [(job.id, "complete")]


def test_bad_input_gets_a_clear_json_error(sqlite_board_factory, dashboards):
    board = sqlite_board_factory()
    job = board.post("j", "f", {})
    dash = dashboards(board, admin_token=TOKEN)
    cases = [
        (dash.get("/api/jobs/no-such-job"), 404, "not_found", None),
        (dash.get("/api/jobs?state=bogus"), 400, "invalid", "state"),
        (dash.get("/api/jobs?limit=abc"), 400, "invalid", "limit"),
        (dash.get("/api/jobs?limit=0"), 400, "invalid", "limit"),
        (dash.get("/api/events?limit=-1"), 400, "invalid", "limit"),
        (dash.get("/api/nothing-here"), 404, "not_found", None),
        (dash.post(f"/api/jobs/{job.id}/cancel", b"{not json"), 400, "invalid", "body"),
        (dash.post(f"/api/jobs/{job.id}/cancel", [1, 2]), 400, "invalid", "body"),
        (dash.post(f"/api/jobs/{job.id}/explode", {}), 404, "not_found", None),
        (dash.post(f"/api/jobs/{job.id}/trash", {"reasn": "x"}), 400, "invalid", "reasn"),
        (dash.post(f"/api/jobs/{job.id}/trash", {"reason": 5}), 400, "invalid", "reason"),
        (dash.request("DELETE", f"/api/jobs/{job.id}"), 405, "method_not_allowed", None),
    ]
    for reply, status, code, field in cases:
        assert reply.headers["content-type"] == "application/json"
        error = reply.json()["error"]
        assert (reply.status, error["code"], error.get("field")) == (status, code, field), error
        assert error["message"]
    assert "'reasn'" in cases[9][0].json()["error"]["message"]
    assert job.id in cases[9][0].json()["error"]["message"]
    assert board.get(job).state is JobState.WAITING  # nothing changed


def test_admin_actions_need_the_token(web_board_factory, dashboards):
    board = web_board_factory()
    waiting = board.post("w", "f", {})
    read_only = dashboards(board)
    reply = read_only.post(f"/api/jobs/{waiting.id}/cancel", {})
    assert (reply.status, reply.json()["error"]["code"]) == (403, "read_only")

    dash = dashboards(board, admin_token=TOKEN)
    assert dash.get("/api/config").json()["admin"] is True
    assert dash.post(f"/api/jobs/{waiting.id}/cancel", {}, token=None).status == 401
    assert dash.post(f"/api/jobs/{waiting.id}/cancel", {}, token=TOKEN + "x").status == 403
    assert board.get(waiting).state is JobState.WAITING

    reply = dash.post(f"/api/jobs/{waiting.id}/cancel", {})
    assert reply.status == 200 and reply.json()["job"]["state"] == "cancelled"
    again = dash.post(f"/api/jobs/{waiting.id}/cancel", {})
    assert again.status == 409 and "cancelled" in again.json()["error"]["message"]

    owner = unique_owner("w")
    running = board.post("r", "f", {})
    claim = board.claim(running, owner)
    reply = dash.post(f"/api/jobs/{running.id}/trash", {"reason": "poison input"})
    assert reply.status == 200 and reply.json()["job"]["state"] == "trashed"
    assert board.get(running).last_error == "poison input"
    with pytest.raises((errors.NotOwner, errors.InvalidState)):
        board.consume(running, owner, claim.token)  # the old owner's token is stale now

    reply = dash.post(f"/api/jobs/{running.id}/retry", {})
    assert reply.status == 200
    new = reply.json()["new"]
    assert board.get(new["id"]).details["retry_of"] == running.id
    twice = dash.post(f"/api/jobs/{running.id}/retry", {})
    assert twice.status == 409 and new["id"] in twice.json()["error"]["message"]
    assert dash.post(f"/api/jobs/{running.id}/retry", {"again": True}).status == 200


def test_stream_pushes_events_and_the_overview(web_board_factory, dashboards):
    board = web_board_factory()
    dash = dashboards(board)
    stream = EventStream(dash.port)
    try:
        name, hello = next(iter(stream))
        assert (name, hello) == ("hello", {"board": "test-board"})
        stream.next_matching(lambda n, d: n == "overview")  # the dashboard has read the board
        producer = web_board_factory()  # another connection, as a producer elsewhere
        job = producer.post("live-1", "f", {"password": SECRET})

        name, event = stream.next_matching(lambda n, d: n == "board" and d.get("job") == job.id)
        assert event["kind"] == "posted" and event["flow"] == "f"
        _, overview = stream.next_matching(
            lambda n, d: n == "overview" and any(j["id"] == job.id for j in d["waiting"])
        )
        assert overview["totals"]["waiting"] == 1
        assert any(e["job"] == job.id for e in overview["events"])
        assert SECRET not in json.dumps(overview)
    finally:
        stream.close()
