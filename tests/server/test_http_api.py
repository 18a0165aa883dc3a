"""The HTTP API itself: the JSON shapes other languages rely on, and every error a caller can cause."""

from __future__ import annotations

import uuid

import msgspec
import pytest

import headwater as hw
import headwater.pstate as nav

from examples.orders import Address, LineItem, NewOrder

APPEND = "/api/modules/bank/depots/deposits/append"


def ends(server, module="bank", depot="deposits"):
    target = server[0].depot(module, depot)
    return [target.partition_info(p).end_offset for p in range(target.partitions)]


def assert_error(response, status: int, code: str, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    for fragment in fragments:
        assert fragment in body["message"]
    return body


def test_append_returns_partition_offset_and_results(http):
    response = http.post(APPEND, json={"user_id": 31, "amount": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["results"] == {"deposit": 5} and body["partition"] in (0, 1) and body["offset"] >= 0


def test_ack_none_is_202(http):
    response = http.post(APPEND, params={"ack": "none"}, json={"user_id": 32, "amount": 5})
    assert response.status_code == 202 and response.json()["accepted"] is True


def test_idempotency_key_header(http):
    headers = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = http.post(APPEND, json={"user_id": 33, "amount": 5}, headers=headers).json()
    assert http.post(APPEND, json={"user_id": 33, "amount": 5}, headers=headers).json() == first
    assert_error(http.post(APPEND, json={"user_id": 33, "amount": 6}, headers=headers), 409, "idempotency_conflict")


def test_append_many(http):
    response = http.post("/api/modules/bank/depots/deposits/append-many", json=[{"user_id": 34, "amount": 1}] * 3)
    assert [r["results"]["deposit"] for r in response.json()["results"]] == [1, 2, 3]


@pytest.mark.parametrize(("body", "status", "code", "fragment"), [
    (b"{", 400, "malformed_json", "not valid JSON"),
    (b"", 400, "malformed_json", "not valid JSON"),
    (b'{"user_id": "one", "amount": 5}', 422, "schema_error", "$.user_id"),
    (b'{"user_id": 1}', 422, "schema_error", "amount"),
    (b'[1, 2]', 422, "schema_error", "Deposit"),
    (b'{"user_id": 1, "amount": 1.5}', 422, "schema_error", "$.amount"),
])
def test_bad_bodies_are_refused_and_append_nothing(server, http, body, status, code, fragment):
    before = ends(server)
    assert_error(http.post(APPEND, content=body), status, code, fragment)
    assert ends(server) == before


def test_a_schema_error_names_the_field(http):
    body = assert_error(http.post(APPEND, json={"user_id": "one", "amount": 5}), 422, "schema_error")
    assert body["path"] == "$.user_id"


def test_a_body_over_the_limit_is_413_and_appends_nothing(server, http):
    before = ends(server)
    huge = msgspec.json.encode({"user_id": 1, "amount": 1, "padding": "x" * 5000})
    assert_error(http.post(APPEND, content=huge), 413, "body_too_large", "4,096 bytes")
    # Without a Content-Length the limit still holds while the body streams in.
    assert_error(http.post(APPEND, content=iter([huge[:3000], huge[3000:]])), 413, "body_too_large")
    assert ends(server) == before


def test_unknown_names_are_404_with_a_suggestion(http):
    body = assert_error(http.post("/api/modules/bank/depots/deposit/append", json={}), 404, "not_found",
                        "did you mean 'deposits'")
    assert body["kind"] == "depot" and body["name"] == "deposit" and "deposits" in body["known"]
    assert_error(http.get("/api/modules/bnak"), 404, "not_found", "did you mean 'bank'")
    assert_error(http.get("/api/modules/bank/pstates/fund/get"), 404, "not_found", "did you mean 'funds'")
    assert_error(http.get("/api/modules/bank/pstates/funds/gett"), 404, "not_found", "did you mean 'get'")
    assert_error(http.post("/api/modules/bank/queries/total"), 404, "not_found", "total_funds")
    assert_error(http.get("/api/modules/bank/topologies/nope/dead-letters"), 404, "not_found")
    assert_error(http.post("/api/modules/bank/topologies/deposit/dead-letters/12345/retry"), 404, "not_found",
                 "already retried")
    assert_error(http.get("/api/nothing/here"), 404, "not_found", "openapi.json")


def test_wrong_method_and_bad_parameters(http):
    assert assert_error(http.get(APPEND), 405, "method_not_allowed") and http.get(APPEND).headers["allow"] == "POST"
    assert http.delete("/api/modules").headers["allow"] in ("GET, HEAD", "HEAD, GET")
    assert_error(http.post(APPEND, params={"ack": "sometimes"}, json={"user_id": 1, "amount": 1}), 400, "bad_request",
                 "full, append or none")
    assert_error(http.post(APPEND, params={"timeout": "soon"}, json={"user_id": 1, "amount": 1}), 400, "bad_request")
    assert_error(http.get("/api/modules/bank/pstates/funds/keys", params={"limit": "-1", "task": 0}), 400, "bad_request")
    assert_error(http.get("/api/modules/bank/pstates/funds/keys", params={"task": 5}), 400, "bad_request", "does not exist")
    assert_error(http.get("/api/modules/bank/depots/deposits/partitions/7"), 400, "bad_request", "partitions 0..1")


def test_pstate_reads_with_json_paths(server, http):
    order_id = uuid.uuid4()
    server[0].depot("orders", "new_orders").append(
        NewOrder(order_id, uuid.uuid4(), [LineItem(uuid.uuid4(), 2, 9)], Address("1 Main", "Springfield", "IL", "1")))
    read = lambda op, **params: http.get(f"/api/modules/orders/pstates/orders/{op}", params=params).json()  # noqa: E731
    path = msgspec.json.encode([str(order_id), "shipping", ]).decode()
    assert read("get", path=path) == {"value": {"street": "1 Main", "city": "Springfield", "state": "IL", "zip": "1"},
                                      "found": True}
    assert read("get", path=f'["{order_id}", "items", 0, ]'.replace(", ]", "]"))["value"]["quantity"] == 2
    assert read("size", path=f'["{order_id}", "items"]') == {"value": 1}
    assert read("get", path=f'["{uuid.uuid4()}"]') == {"value": None, "found": False}
    assert read("exists", path=f'["{order_id}"]') == {"value": True}


def test_range_reads_page_with_a_cursor(server, http):
    server[0].depot("bank", "deposits").append_many([{"user_id": k, "amount": 1} for k in range(100, 110)])
    url = "/api/modules/bank/pstates/funds/keys"
    first = http.get(url, params={"task": 0, "limit": 2}).json()
    assert len(first["value"]) == 2 and "start" in first["next"]
    second = http.get(url, params={"task": 0, "limit": 2, "start": first["next"]["start"]}).json()
    assert second["value"][0] == first["next"]["start"] > first["value"][-1]
    backwards = http.get(url, params={"task": 0, "limit": 2, "reverse": "true"}).json()
    assert backwards["value"] == sorted(backwards["value"], reverse=True) and backwards["next"] == {"stop": backwards["value"][-1]}
    items = http.get("/api/modules/bank/pstates/funds/items", params={"task": 0, "limit": 1}).json()
    assert len(items["value"]) == 1 and len(items["value"][0]) == 2


def test_path_errors_are_422(http):
    url = "/api/modules/bank/pstates/funds/get"
    assert_error(http.get(url, params={"path": '["one"]'}), 422, "path_error", "does not fit")
    assert_error(http.get(url, params={"path": '{"a": 1}'}), 422, "path_error", "JSON array")
    assert_error(http.get(url, params={"path": '[{"nav": "all"}]'}), 422, "path_error", "select")
    assert_error(http.get("/api/modules/bank/pstates/funds/keys"), 422, "path_error", "task=i")


def test_select_with_navigators(http):
    response = http.get("/api/modules/bank/pstates/funds/select", params={"path": '[{"nav": "nowhere"}]'})
    assert_error(response, 422, "path_error", "unknown navigator")


def test_queries_take_json_arguments(http):
    assert http.post("/api/modules/jobs/queries/double", json=[4]).json() == {"value": 8}
    assert http.post("/api/modules/jobs/queries/double", json={"kwargs": {"n": 5}}).json() == {"value": 10}
    assert_error(http.post("/api/modules/jobs/queries/double", json=["x"]), 422, "schema_error", "'n'")
    assert_error(http.post("/api/modules/jobs/queries/double", json={"arguments": 1}), 400, "bad_request")
    body = assert_error(http.post("/api/modules/jobs/queries/explode"), 500, "handler_error", "exploded")
    assert "RuntimeError" in body["remote_traceback"] and "remote traceback" not in body["message"]


def test_handler_errors_carry_the_remote_traceback_and_ack_timeouts_the_offset(http):
    body = assert_error(http.post("/api/modules/jobs/depots/jobs/append", json={"key": 77, "fail": True}), 500,
                        "handler_error", "raised ValueError")
    assert body["topology"] == "work" and "ValueError" in body["remote_traceback"] and body["offset"] >= 0
    body = assert_error(http.post("/api/modules/jobs/depots/jobs/append", params={"timeout": "0.1"},
                                  json={"key": 78, "nap_s": 0.3}), 504, "ack_timeout", "durable")
    assert body["partition"] in (0, 1) and body["offset"] >= 0 and body["durable"] is True
    assert_error(http.post("/api/modules/jobs/depots/internal/append", json={"key": 1}), 403, "permission_denied")


@pytest.mark.parametrize(("offset", "code"), [(41, "ack_timeout"), (None, "not_confirmed")])
def test_a_504_says_whether_the_event_is_durable_and_a_client_raises_ack_timeout_with_its_place(offset, code):
    from headwater.client.remote import _error_from
    from headwater.server.http import error_answer

    status, content = error_answer(hw.AckTimeout("no ack", partition=1, offset=offset))
    body = msgspec.json.decode(content)
    assert (status, body["error"], body["durable"], body["partition"], body["offset"]) == (504, code, offset is not None, 1, offset)
    raised = _error_from(body, status)
    assert isinstance(raised, hw.AckTimeout) and (raised.partition, raised.offset) == (1, offset)


def test_depot_partitions_and_records(http):
    http.post(APPEND, json={"user_id": 40, "amount": 3})
    partitions = http.get("/api/modules/bank/depots/deposits/partitions").json()["partitions"]
    assert [p["partition"] for p in partitions] == [0, 1]
    busiest = max(partitions, key=lambda p: p["end_offset"])
    records = http.get(f"/api/modules/bank/depots/deposits/partitions/{busiest['partition']}/records",
                       params={"last": 2}).json()
    assert len(records["records"]) == 2 and records["next_offset"] == busiest["end_offset"]
    assert set(records["records"][0]) == {"partition", "offset", "timestamp", "event"}


def test_module_listing_describes_schemas(http):
    modules = {m["name"]: m for m in http.get("/api/modules").json()["modules"]}
    orders = modules["orders"]
    schema = next(p for p in orders["pstates"] if p["name"] == "orders")["schema"]
    assert schema["kind"] == "map" and schema["key"] == {"type": "uuid"}
    assert schema["value"]["fields"]["items"]["kind"] == "list"
    depot = next(d for d in orders["depots"] if d["name"] == "new_orders")
    assert depot["partition_by"] == "order_id" and depot["event_schema"]["$ref"].endswith("NewOrder")
    assert {t["name"] for t in orders["topologies"]} == {"new_order", "update_line_item"}
    assert modules["jobs"]["queries"][0]["parameters"][0]["name"] == "n"


def test_root_redirects_to_the_ui(http):
    response = http.get("/")
    assert response.status_code in (302, 307) and response.headers["location"] == "/ui/"
    assert "<title>headwater</title>" in http.get("/ui/").text


@pytest.mark.skipif(not hasattr(nav, "MAP_VALS"), reason="navigators are not built yet")
def test_select_runs_navigators(server, http):
    server[0].depot("bank", "deposits").append({"user_id": 900, "amount": 9})
    server[0].depot("bank", "transfers").append({"transfer_id": "x1", "from_id": 900, "to_id": 901, "amount": 4})
    select = lambda path, op="select": http.get(f"/api/modules/bank/pstates/outgoing/{op}", params={"path": path}).json()  # noqa: E731
    assert select('[900, {"nav": "map_vals"}, "amount"]') == {"value": [4]}
    assert select('[900, {"nav": "range", "start": "x0", "stop": "x9"}, {"nav": "map_keys"}]') == {"value": ["x1"]}
    assert select('[900, {"nav": "size"}]', "select_one") == {"value": 1}
    assert select('[900, {"nav": "must", "key": "zz"}]') == {"value": []}
    assert_error(http.get("/api/modules/bank/pstates/outgoing/select_one", params={"path": '[900, {"nav": "all"}, {"nav": "all"}]'}),
                 422, "path_error")
    assert_error(http.get("/api/modules/bank/pstates/outgoing/select", params={"path": '[900, {"nav": "nth"}]'}),
                 422, "path_error")
