"""Bearer tokens and scopes: who may read, append and administer which module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import headwater as hw
from headwater.server.auth import Auth, AuthConfigError, Token, check_bind, load_auth, parse_scope
from tests.server.support import Job, deploy, served

TOKENS = {
    "reader": ["read"],
    "bank-appender": ["append:bank"],
    "bank-reader": ["read:bank"],
    "jobs-admin": ["admin:jobs"],
    "root": ["admin"],
}


@pytest.fixture(scope="module")
def secured() -> Iterator[tuple[hw.InProcessCluster, str]]:
    auth = Auth([Token(name, f"secret-{name}", frozenset(parse_scope(s, name) for s in scopes))
                 for name, scopes in TOKENS.items()])
    with hw.InProcessCluster() as cluster:
        deploy(cluster)
        with served(cluster, auth=auth) as url:
            yield cluster, url


def call(url: str, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer secret-{token}"} if token else {}
    return httpx.request(method, url + path, headers=headers, **kwargs)


DEPOSIT = "/api/modules/bank/depots/deposits/append"


def test_no_token_or_a_bad_token_is_401(secured):
    url = secured[1]
    response = call(url, "GET", "/api/modules")
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert "Authorization: Bearer" in response.json()["message"]
    assert call(url, "GET", "/api/modules", "nobody").status_code == 401
    wrong_scheme = httpx.get(url + "/api/modules", headers={"Authorization": "Basic abc"})
    assert wrong_scheme.status_code == 401


def test_scopes_decide_what_a_token_may_do(secured):
    url = secured[1]
    assert call(url, "GET", "/api/modules/bank/pstates/funds/get", "reader", params={"path": "[1]"}).status_code == 200
    denied = call(url, "POST", DEPOSIT, "reader", json={"user_id": 1, "amount": 1})
    assert denied.status_code == 403 and denied.json()["error"] == "permission_denied"
    assert "append:bank" in denied.json()["message"]
    assert call(url, "POST", DEPOSIT, "bank-appender", json={"user_id": 1, "amount": 1}).status_code == 200
    # append does not imply read, and a module scope covers that module only
    assert call(url, "GET", "/api/modules/bank/pstates/funds/get", "bank-appender", params={"path": "[1]"}).status_code == 403
    assert call(url, "POST", "/api/modules/jobs/depots/jobs/append", "bank-appender", json={"key": 1}).status_code == 403
    assert call(url, "POST", "/api/modules/jobs/depots/jobs/append", "jobs-admin", json={"key": 1}).status_code == 200
    assert call(url, "POST", DEPOSIT, "root", json={"user_id": 1, "amount": 1}).status_code == 200


def test_retrying_dead_letters_needs_admin(secured):
    cluster, url = secured
    with pytest.raises(hw.HandlerError):
        cluster.depot("jobs", "jobs").append(Job(4242, fail=True))
    topology = "work"
    letter = cluster.dead_letters("jobs", topology)[0]
    path = f"/api/modules/jobs/topologies/{topology}/dead-letters/{letter.id}/retry"
    assert call(url, "POST", path, "reader").status_code == 403
    assert call(url, "POST", path, "jobs-admin").json()["error"] == "handler_error"  # allowed; still failing


def test_the_listing_shows_the_modules_a_token_has_a_scope_on(secured):
    url = secured[1]
    names = lambda token: [m["name"] for m in call(url, "GET", "/api/modules", token).json()["modules"]]  # noqa: E731
    assert names("reader") == ["bank", "jobs", "orders", "registration"]
    assert names("bank-appender") == ["bank"]
    assert call(url, "GET", "/metrics", "bank-appender").status_code == 403
    assert call(url, "GET", "/metrics", "reader").status_code == 200
    assert call(url, "GET", "/api/health").json() == {"ok": True}  # for load balancers: no token, no names
    health = call(url, "GET", "/api/health", "bank-appender").json()
    assert health == {"ok": True, "modules": ["bank"], "pid": health["pid"]}


def test_a_module_is_described_to_the_tokens_the_listing_shows_it_to(secured):
    url = secured[1]
    assert call(url, "GET", "/api/modules/bank", "bank-appender").json()["name"] == "bank"
    assert call(url, "GET", "/api/modules/bank", "reader").status_code == 200
    refused = call(url, "GET", "/api/modules/jobs", "bank-appender")
    assert refused.status_code == 403 and "read:jobs or append:jobs" in refused.json()["message"]
    assert call(url, "GET", "/api/modules/jobs", "nobody").status_code == 401


def test_metrics_need_read_on_every_module(secured):
    url = secured[1]
    refused = call(url, "GET", "/metrics", "bank-reader")
    assert refused.status_code == 403 and "every module" in refused.json()["message"]
    assert call(url, "GET", "/metrics", "jobs-admin").status_code == 403
    assert call(url, "GET", "/metrics", "root").status_code == 200


def test_the_remote_client_sends_its_token_and_maps_refusals(secured):
    url = secured[1]
    with hw.connect(url, token="secret-bank-appender") as client:
        assert client.depot("bank", "deposits").append({"user_id": 5, "amount": 2})["deposit"] >= 2
        with pytest.raises(hw.PermissionDenied, match="may not read"):
            client.pstate("bank", "funds")[5].get()
    with hw.connect(url, token="wrong") as client, pytest.raises(hw.PermissionDenied, match="not valid"):
        client.modules()


def test_tokens_from_a_toml_file_and_the_environment(tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text('[[tokens]]\nname = "ci"\ntoken = "abc"\nscopes = ["append:bank", "read"]\n')
    auth = load_auth(path, environ={"HEADWATER_TOKENS": "xyz=admin; uvw=read:orders"})
    assert [t.name for t in auth.tokens] == ["ci", "env-1", "env-2"]
    ci = auth.tokens[0]
    assert ci.allows("append", "bank") and not ci.allows("append", "orders") and ci.allows("read", "orders")
    assert auth.tokens[2].allows("read", "orders") and not auth.tokens[2].allows("read", "bank")
    assert not load_auth(None, environ={}).enabled


@pytest.mark.parametrize(("text", "message"), [
    ('[[tokens]]\ntoken = "a"\nscopes = ["write"]\n', "scope 'write' is not valid"),
    ('[[tokens]]\nscopes = ["read"]\n', "needs token"),
    ('[[tokens]]\ntoken = "a"\n', "needs scopes"),
    ("tokens = 1", "no [[tokens]] entries"),
    ("[[tokens]\n", "not valid TOML"),
])
def test_bad_token_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(AuthConfigError, match=message.replace("[", r"\[")):
        load_auth(path, environ={})


def test_bad_environment_tokens_and_missing_files(tmp_path):
    with pytest.raises(AuthConfigError, match="SECRET=SCOPE"):
        load_auth(None, environ={"HEADWATER_TOKENS": "justasecret"})
    with pytest.raises(AuthConfigError, match="does not exist"):
        load_auth(tmp_path / "missing.toml", environ={})


def test_without_tokens_only_loopback_may_be_bound():
    open_auth = Auth([])
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, open_auth)
    with pytest.raises(AuthConfigError, match="refusing to listen on '0.0.0.0' without tokens"):
        check_bind("0.0.0.0", open_auth)
    check_bind("0.0.0.0", Auth([Token("t", "s", frozenset({("read", None)}))]))
