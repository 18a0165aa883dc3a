"""The `headwater` command against a live test server: output for people and scripts, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner

import headwater as hw
from headwater.cli import ExitCode, app
from headwater.server.auth import Auth, Token
from tests.server.support import FIXED, Job, deploy, served


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[hw.InProcessCluster, str]]:
    with hw.InProcessCluster() as cluster:
        deploy(cluster)
        with served(cluster) as url:
            yield cluster, url


@pytest.fixture
def run(server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HEADWATER_URL", server[1])
    monkeypatch.delenv("HEADWATER_TOKEN", raising=False)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Any:
        return runner.invoke(app, list(args), input=input, env=env)

    return invoke


def test_status_as_tables_and_as_json(run):
    run("append", "bank", "deposits", '{"user_id": 1, "amount": 10}')
    table = run("status")
    assert table.exit_code == 0, table.output
    assert "module bank" in table.output and "deposits" in table.output and "dead letters" in table.output
    assert "module bank — tasks" in table.output and "this process" in table.output
    data = json.loads(run("status", "--json").output)
    assert {m["name"] for m in data["modules"]} == {"bank", "jobs", "orders", "registration"}
    bank = next(m for m in data["modules"] if m["name"] == "bank")
    assert [h["task"] for h in bank["hosts"]] == list(range(bank["tasks"])) and all(h["up"] for h in bank["hosts"])


def test_append_one_event_and_read_it_back(run):
    result = run("append", "bank", "deposits", '{"user_id": 7, "amount": 40}', "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["results"] == {"deposit": 40}
    assert run("get", "bank", "funds", "7").output.strip() == "40"
    assert json.loads(run("get", "bank", "funds", "--op", "keys", "--task", "0", "--json").output) is not None


def test_append_json_lines_from_stdin(run, server):
    lines = "\n".join(json.dumps({"key": 300 + i}) for i in range(25))
    result = run("append", "jobs", "jobs", "--json", input=lines)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"appended": 25}
    assert server[0].pstate("jobs", "done")[324].get() == 1


def test_get_walks_a_path_with_typed_keys(run, server):
    server[0].depot("registration", "registrations").append({"email": "cli@example.com", "pwd_hash": "h",
                                                             "timestamp_ms": 1_700_000_000_000})
    result = run("get", "registration", "users", "cli@example.com", "pwd_hash", "--json")
    assert json.loads(result.output) == "h"
    assert run("get", "registration", "users", "cli@example.com", "--op", "exists").output.strip() == "True"


def test_get_of_nothing_stored_exits_2_and_says_so_on_stderr(run):
    result = run("get", "bank", "funds", "123456789")
    assert result.exit_code == ExitCode.NOT_FOUND
    assert result.stdout == ""
    assert "nothing is stored at path 123456789 in PState bank.funds" in result.stderr and "--op exists" in result.stderr
    as_json = run("get", "registration", "users", "nobody@example.com", "pwd_hash", "--json")
    assert as_json.exit_code == ExitCode.NOT_FOUND and as_json.stdout == ""
    assert json.loads(as_json.stderr)["error"] == "NothingStored"
    assert run("get", "bank", "funds", "123456789", "--op", "exists").output.strip() == "False"  # asking never fails


def test_query_with_arguments(run):
    assert run("query", "jobs", "double", "21").output.strip() == "42"
    assert run("query", "registration", "signups_on", "2023-11-14", "--json").exit_code == 0


def test_select_with_navigators(run, server):
    server[0].depot("bank", "deposits").append({"user_id": 950, "amount": 50})
    server[0].depot("bank", "transfers").append({"transfer_id": "c1", "from_id": 950, "to_id": 951, "amount": 5})
    assert json.loads(run("select", "bank", "outgoing", "950", "MAP_VALS", "amount", "--json").output) == [5]
    assert json.loads(run("select", "bank", "outgoing", "950", "SIZE", "--one", "--json").output) == 1
    assert json.loads(run("select", "bank", "outgoing", "950", "range:c0:c9", "MAP_KEYS", "--json").output) == ["c1"]
    assert run("select", "bank", "outgoing", "950", "nth:x").exit_code == ExitCode.USAGE


def test_tail_shows_the_last_records(run):
    run("append", "jobs", "jobs", '{"key": 9001, "tag": "tail-me"}')
    result = run("tail", "jobs", "jobs", "-n", "3", "--json")
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert any(r["event"].get("tag") == "tail-me" for r in rows) and all(set(r) == {"partition", "offset", "timestamp", "event"} for r in rows)
    follow = run("tail", "jobs", "jobs", "-n", "0", "--follow", "--idle-timeout", "0.2")
    assert follow.exit_code == 0


def test_tail_n_shows_the_latest_n_records_in_all_like_tail(run, server):
    appended = [server[0].depot("jobs", "jobs").append(Job(9100 + i, tag=f"latest-{i}")) for i in range(10)]
    assert len({result.partition for result in appended[:7]}) == 2  # both partitions hold more than 3
    result = run("tail", "jobs", "jobs", "-n", "3", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["event"]["tag"] for r in rows] == ["latest-7", "latest-8", "latest-9"]  # 3 in all, oldest first
    assert run("tail", "jobs", "jobs", "-n", "0").output == ""


def test_dead_letters_list_and_retry(run, server):
    FIXED["jobs"] = False
    with pytest.raises(hw.HandlerError):
        server[0].depot("jobs", "jobs").append(Job(8080, fail=True))
    listed = json.loads(run("dead-letters", "jobs", "work", "--json").output)
    assert listed and listed[0]["error_type"] == "ValueError"
    assert run("dead-letters", "jobs", "work", "retry").exit_code == ExitCode.HANDLER  # still failing
    FIXED["jobs"] = True
    try:
        result = run("dead-letters", "jobs", "work", "retry", "--json")
    finally:
        FIXED["jobs"] = False
    assert result.exit_code == 0 and all(o["ok"] for o in json.loads(result.output))
    assert json.loads(run("dead-letters", "jobs", "work", "--json").output) == []


class InsufficientInventoryForTheOrderError(Exception):
    pass


@dataclass
class Order:
    key: int


def shop_module() -> hw.Module:
    """Long names (a topology, a hop's step, an error type) and four tasks' long dead-letter ids."""
    shop = hw.Module("shop")
    orders = shop.depot("orders", Order, partition_by="key")

    @shop.stream(orders)
    def fulfil_order_and_notify_the_customer(ctx: hw.Context, order: Order) -> None:
        ctx.hop(order.key, reserve_inventory_for_the_order)

    @shop.step
    def reserve_inventory_for_the_order(ctx: hw.Context) -> None:
        raise InsufficientInventoryForTheOrderError("nothing left on the shelf")

    return shop


def test_dead_letter_ids_are_whole_in_an_80_column_table(monkeypatch):
    with hw.InProcessCluster() as cluster:
        cluster.deploy(shop_module(), tasks=4)
        for key in range(8):  # every task's ids: the task is in their high bits
            with pytest.raises(hw.HandlerError):
                cluster.depot("shop", "orders").append(Order(key))
        with served(cluster) as url:
            monkeypatch.setenv("HEADWATER_URL", url)
            runner = CliRunner()
            listed = json.loads(runner.invoke(app, ["dead-letters", "shop", "fulfil_order_and_notify_the_customer",
                                                    "--json"]).output)
            table = runner.invoke(app, ["dead-letters", "shop", "fulfil_order_and_notify_the_customer"],
                                  env={"COLUMNS": "80"})
    assert table.exit_code == 0, table.output
    assert len({d["task"] for d in listed}) > 1 and len(listed) == 8
    assert max(len(line) for line in table.output.splitlines()) <= 80
    shown = [line for line in table.output.splitlines() if line.startswith("│ ") and line.split()[1].isdigit()]
    assert sorted(int(line.split()[1]) for line in shown) == sorted(d["id"] for d in listed)  # every id, whole
    assert "…" not in table.output


@pytest.mark.parametrize(("args", "code", "message"), [
    (("get", "bank", "fund", "1"), ExitCode.NOT_FOUND, "did you mean 'funds'"),
    (("append", "bank", "deposit", "{}"), ExitCode.NOT_FOUND, "did you mean 'deposits'"),
    (("append", "bank", "deposits", '{"user_id": "x", "amount": 1}'), ExitCode.INVALID, "$.user_id"),
    (("append", "bank", "deposits", "{not json"), ExitCode.INVALID, "not valid JSON"),
    (("get", "bank", "funds", "one"), ExitCode.INVALID, "does not fit"),
    (("query", "jobs", "explode"), ExitCode.HANDLER, "exploded"),
    (("append", "jobs", "jobs", '{"key": 1, "nap_s": 0.3}', "--timeout", "0.1"), ExitCode.TIMEOUT, "durable"),
    (("dead-letters", "jobs", "work", "retry", "--id", "1"), ExitCode.NOT_FOUND, "dead letter"),
    (("get", "bank", "funds", "1", "--op", "fetch"), ExitCode.USAGE, "--op"),
    (("get",), ExitCode.USAGE, "Missing argument"),
    (("nonsense",), ExitCode.USAGE, "No such command"),
])
def test_failures_have_documented_exit_codes(run, args, code, message):
    result = run(*args)
    assert result.exit_code == code, result.output
    assert message in result.output


def test_serve_on_a_data_directory_in_use_says_so_and_names_the_flag(tmp_path):
    from headwater.server.run import deploy_all, load_modules

    with hw.InProcessCluster(tmp_path / "data") as holder:
        deploy_all(holder, load_modules("examples/app.py"), 2)
        result = CliRunner().invoke(app, ["serve", "examples/app.py", "--data", str(tmp_path / "data"), "--port", "0"])
    assert result.exit_code == ExitCode.USAGE
    assert "StorageError" in result.stderr and "already open in this process" in result.stderr
    assert f"the data directory is {tmp_path / 'data'}; --data DIR serves another" in result.stderr


def test_an_unreachable_server_exits_6(run):
    result = run("status", "--url", "http://127.0.0.1:9")
    assert result.exit_code == ExitCode.UNAVAILABLE and "cannot reach" in result.output


def test_a_missing_or_bad_token_exits_7(monkeypatch):
    auth = Auth([Token("ops", "right", frozenset({("admin", None)}))])
    with hw.InProcessCluster() as cluster:
        deploy(cluster)
        with served(cluster, auth=auth) as url:
            runner = CliRunner()
            assert runner.invoke(app, ["status", "--url", url]).exit_code == ExitCode.DENIED
            assert runner.invoke(app, ["status", "--url", url, "--token", "wrong"]).exit_code == ExitCode.DENIED
            monkeypatch.setenv("HEADWATER_TOKEN", "right")
            assert runner.invoke(app, ["status", "--url", url]).exit_code == 0
