"""The OpenAPI document: every endpoint is in it, every schema in it is valid JSON Schema, and its
error schemas hold what the server sends. (test_schemathesis.py checks the server against it.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema_rs  # schemathesis's JSON Schema validator, installed with it
import msgspec
import pytest

import headwater as hw
from headwater.server import depots, modules, pstates, queries
from headwater.server.catalog import runtime_of
from headwater.server.http import error_answer
from headwater.server.openapi import openapi_document
from tests.server.support import deploy

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


@pytest.fixture(scope="module")
def document() -> Iterator[dict[str, Any]]:
    with hw.InProcessCluster() as cluster:
        deploy(cluster)
        yield openapi_document([runtime_of(cluster, m) for m in cluster.modules()], secured=True)


def schemas_in(node: Any, where: str = "$") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" or (where.endswith("components.schemas")):
                yield f"{where}.{key}", value
            yield from schemas_in(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from schemas_in(value, f"{where}[{i}]")


def test_every_schema_in_the_document_is_valid_json_schema(document):
    found = list(schemas_in(document))
    assert len(found) > 100
    for where, schema in found:
        if isinstance(schema, dict):
            jsonschema_rs.meta.validate({"$schema": DRAFT_2020_12, **schema})  # raises, naming the fault


def test_every_endpoint_of_the_server_is_in_the_document(document):
    paths = document["paths"]
    for path in ("/api/health", "/api/modules", "/api/modules/{module}", "/api/stats", "/api/routes", "/api/openapi.json",
                 "/metrics",
                 "/api/modules/bank/depots/deposits/partitions", "/api/modules/bank/depots/deposits/partitions/{partition}",
                 "/api/modules/bank/depots/deposits/partitions/{partition}/records",
                 "/api/modules/jobs/depots/internal/partitions"):  # a depot clients may not append to is still read
        assert path in paths, path
    assert "/api/modules/jobs/depots/internal/append" not in paths
    topology = "work"  # the jobs module's topology
    retry = paths[f"/api/modules/jobs/topologies/{topology}/dead-letters/{{id}}/retry"]["post"]["responses"]
    assert {"400", "404", "500", "504"} <= set(retry)
    query = paths["/api/modules/jobs/queries/explode"]["post"]  # takes no arguments
    assert query["requestBody"]["required"] is False
    assert query["requestBody"]["content"]["application/json"]["schema"]["anyOf"][0]["maxItems"] == 0


def test_every_route_of_the_api_table_has_a_path_in_the_document(document):
    routes = [path for rows in (modules.ROUTES, depots.ROUTES, pstates.ROUTES, queries.ROUTES) for path, _, _ in rows]
    documented = [path.split("/") for path in document["paths"]]
    for route in routes:
        parts = route.split("/")
        assert any(len(path) == len(parts) and all(part.startswith("{") or part == step for part, step in zip(parts, path))
                   for path in documented), route


@pytest.mark.parametrize("offset", [7, None])
def test_the_504_body_fits_the_error_schema(document, offset):
    _, content = error_answer(hw.AckTimeout("no ack", partition=0, offset=offset))
    error_schema = document["components"]["schemas"]["Error"]
    jsonschema_rs.validate(error_schema, msgspec.json.decode(content))
