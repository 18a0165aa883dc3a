"""The served OpenAPI document tells the truth: requests generated from it (schemathesis), valid and
invalid, against every operation of a real server running the example modules, get only the
statuses, content types and bodies the document describes, and no 5xx but a documented handler
error (a topology or query that raised).

Generation is derandomized and bounded (`EXAMPLES_PER_OPERATION` per operation and mode, no
shrinking), so a run sends the same requests every time: about 550 to the 49 operations of the
examples, in 20-25 s on two cores, most of it spent generating them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import headwater as hw
from examples.app import bank, orders_module, registration
from tests.server.support import served

EXAMPLES_PER_OPERATION = 8
CHECKS = [status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance]
REQUEST_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[str, Any]]:
    with hw.InProcessCluster() as cluster:
        for module in (registration, orders_module, bank):
            cluster.deploy(module, tasks=2)
        with served(cluster) as url:
            document = requests.get(url + "/api/openapi.json", timeout=REQUEST_TIMEOUT_S).json()
            yield url, schemathesis.openapi.from_dict(document)


# The 5xx answers the document promises: a topology or query raised, or the wait the caller chose
# (`timeout`) ended first. Any other is a server bug.
DOCUMENTED_5XX = {(500, "handler_error"), (504, "ack_timeout"), (504, "not_confirmed"), (504, "query_timeout")}


def check_answer(case: Any, response: Any) -> None:
    if response.status_code >= 500:
        body = response.json()
        assert (response.status_code, body.get("error")) in DOCUMENTED_5XX, (
            f"{response.status_code} {body} for {case.as_curl_command()}")
    case.validate_response(response, checks=CHECKS)


def run_operation(url: str, operation: Any, mode: Any) -> int:
    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def send(case: Any) -> None:
        nonlocal sent
        sent += 1
        # A new connection per request: generating a case can take longer than the server keeps
        # an idle connection open, and a POST on a connection closed meanwhile is not sent again.
        check_answer(case, case.call(base_url=url, timeout=REQUEST_TIMEOUT_S))

    send()
    return sent


# schemathesis draws some choices from the `random` module, which Hypothesis seeds for each example
# (so runs stay repeatable) and warns about now and then; the warning is about the library, not us.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_generated_requests_get_only_documented_answers(api):
    url, schema = api
    # A backup writes wherever it is told on this machine's disk: tests/cluster/test_backups.py tests it.
    operations = [op for result in schema.get_all_operations() if (op := result.ok()).path != "/api/backup"]
    assert len(operations) > 30  # every module's depots, PStates, queries, topologies, and the server's own
    started, sent, failures = time.monotonic(), 0, []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                sent += run_operation(url, operation, mode)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing in this operation can be made invalid
            except (Exception, BaseExceptionGroup) as e:  # gather every operation's failure, then report them together
                causes = getattr(e, "exceptions", [e])  # a flaky failure carries the first one
                failures.append(f"{operation.label} ({mode.value}): {e}\n" + "\n".join(repr(c)[:2000] for c in causes))
    print(f"schemathesis: {sent} requests to {len(operations)} operations in {time.monotonic() - started:.1f}s")
    assert not failures, "\n\n".join(failures)
