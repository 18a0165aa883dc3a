"""OpenAPI generated from the modules, Prometheus metrics, and the live stats the UI and CLI show."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

import headwater as hw
from tests.server.support import Job


def test_openapi_describes_each_depots_event_schema(http):
    document = http.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    append = document["paths"]["/api/modules/bank/depots/deposits/append"]["post"]
    assert append["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Deposit"}
    assert {"400", "404", "409", "413", "422", "500", "504"} <= set(append["responses"])
    deposit = document["components"]["schemas"]["Deposit"]
    assert deposit["properties"] == {"user_id": {"type": "integer"}, "amount": {"type": "integer", "exclusiveMinimum": 0}}
    order = document["components"]["schemas"]["NewOrder"]
    assert order["properties"]["order_id"] == {"type": "string", "format": "uuid"}
    assert "/api/modules/jobs/depots/internal/append" not in document["paths"]  # client_appends=False
    assert "/api/modules/registration/queries/signups_on" in document["paths"]
    assert "/api/modules/bank/pstates/funds/{op}" in document["paths"]
    assert "security" not in document  # no tokens configured


def test_metrics_count_appends_and_time_acks(http):
    http.post("/api/modules/bank/depots/deposits/append", json={"user_id": 1, "amount": 1})
    http.post("/api/modules/bank/depots/deposits/append", json={"user_id": "x", "amount": 1})
    text = http.get("/metrics").text
    assert 'headwater_appends_total{ack="full",depot="deposits",module="bank",outcome="ok"}' in text
    assert 'headwater_ack_latency_seconds_bucket{ack="full",depot="deposits",le="0.005",module="bank"}' in text
    assert 'headwater_topology_lag_records{module="bank",topology="deposit"} 0.0' in text
    assert 'headwater_depot_end_offset{depot="deposits",module="bank",partition="0"}' in text
    assert 'headwater_http_requests_total{endpoint="append",status="422"}' in text


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def jobs_topology(http) -> dict:
    module = next(m for m in http.get("/api/stats").json()["modules"] if m["name"] == "jobs")
    return next(t for t in module["topologies"] if t["name"] == "work")


def test_lag_is_what_a_topology_has_yet_to_process(server, http):
    cluster = server[0]
    processed = jobs_topology(http)["processed"]
    # More slow records on one task than it processes in one round (256): the rest wait, visibly.
    cluster.depot("jobs", "jobs").append_many([Job(31337, sleep_s=0.004)] * 400, ack=hw.Ack.NONE)
    wait_for(lambda: jobs_topology(http)["lag"] >= 1)
    wait_for(lambda: jobs_topology(http)["lag"] == 0)
    assert jobs_topology(http)["processed"] == processed + 400


def test_dead_letters_are_counted(server, http):
    before = jobs_topology(http)["dead_letters"]
    with pytest.raises(hw.HandlerError):
        server[0].depot("jobs", "jobs").append(Job(5150, fail=True))
    assert jobs_topology(http)["dead_letters"] == before + 1
    assert f'headwater_dead_letters{{module="jobs",topology="work"}} {before + 1}.0' in http.get("/metrics").text


def test_stats_report_appends_and_ack_latency(http):
    http.post("/api/modules/registration/depots/registrations/append",
              json={"email": "stats@example.com", "pwd_hash": "h", "timestamp_ms": 1})
    module = next(m for m in http.get("/api/stats").json()["modules"] if m["name"] == "registration")
    depot = module["depots"][0]
    assert depot["appended"] >= 1 and depot["records"] >= 1 and len(depot["partitions"]) == 2
    assert depot["ack_latency_ms"]["p50"] > 0
    assert module["topologies"][0] == {"name": "register", "kind": "stream", "depots": ["registrations"],
                                       "processed": depot["records"], "lag": 0, "dead_letters": 0}


def test_concurrent_requests_are_served_together(server):
    url = server[1]
    failures: list[BaseException] = []

    def client(n: int) -> None:
        try:
            with httpx.Client(base_url=url) as http:
                for i in range(20):
                    assert http.post("/api/modules/jobs/depots/jobs/append", json={"key": n * 100 + i}).status_code == 200
        except BaseException as e:  # collected, so the assertion below reports it
            failures.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
