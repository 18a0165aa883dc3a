"""`headwater serve`: loading app files, safe binding, Ctrl-C without half-done appends, resuming."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import headwater as hw
from headwater.cli import app
from headwater.server import load_modules
from headwater.server.run import ServeError
from tests.clusters import ensure_ray
from tests.server.support import start_serving

ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(data: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "headwater.cli", "serve", "tests/server/jobs_app.py", "--data", str(data),
               "--port", str(port), *extra]
    return start_serving(command, port, cwd=ROOT, what="the server")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    return output


@pytest.mark.parametrize("workers", ["0", "2"])
def test_ctrl_c_lets_in_flight_appends_finish_and_a_restart_resumes(tmp_path, workers):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(tmp_path / "data", port, "--tasks", "2", "--workers", workers)
    append = f"{url}/api/modules/jobs/depots/jobs/append"
    assert httpx.post(append, json={"key": 1}).json()["results"] == {"work": 2}
    slow: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: slow.setdefault("r", httpx.post(append, json={"key": 2, "sleep_s": 1.0},
                                                                            timeout=30)))
    thread.start()
    time.sleep(0.4)  # the slow append is in flight
    output = stop(process)
    thread.join()
    assert slow["r"].status_code == 200 and slow["r"].json()["results"] == {"work": 4}  # acked, not cut off
    assert "serving modules jobs" in output and f"{url}/ui/" in output and "curl -X POST" in output
    assert "stopped" in output

    # A task count that differs from the stored one is an error that names it, never silently ignored.
    refused = subprocess.run([sys.executable, "-m", "headwater.cli", "serve", "tests/server/jobs_app.py", "--data",
                              str(tmp_path / "data"), "--port", str(port), "--tasks", "3", "--workers", workers],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "the task count is 2, not 3" in refused.stdout + refused.stderr
    process = start(tmp_path / "data", port, "--workers", workers)  # no --tasks: the stored count
    try:
        module = httpx.get(f"{url}/api/modules/jobs").json()
        assert module["tasks"] == 2
        read = lambda key: httpx.get(f"{url}/api/modules/jobs/pstates/done/get", params={"path": f"[{key}]"}).json()  # noqa: E731
        assert read(1)["value"] == 1 and read(2)["value"] == 1  # nothing reprocessed, nothing lost
    finally:
        stop(process)


def test_every_worker_serves_the_port_and_reaches_every_task(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(tmp_path / "data", port, "--tasks", "4", "--workers", "2")
    try:
        pids = {httpx.get(f"{url}/api/health").json()["pid"] for _ in range(40)}  # a new connection each
        assert len(pids) == 2 and process.pid not in pids  # both workers answer; the supervisor listens not
        append = f"{url}/api/modules/jobs/depots/jobs/append"
        with httpx.Client() as one_connection:  # one worker, appending to tasks on both
            results = [one_connection.post(append, json={"key": key}).json() for key in range(8)]
        assert [r["results"] for r in results] == [{"work": 2 * key} for key in range(8)]
        assert {r["partition"] for r in results} == {0, 1, 2, 3}
        stats = httpx.get(f"{url}/api/stats").json()
        hosts = next(m for m in stats["modules"] if m["name"] == "jobs")["hosts"]
        assert [h["worker"] for h in hosts] == [0, 1, 0, 1] and all(h["up"] for h in hosts)
        with hw.connect(url) as client:  # point reads go straight to the worker hosting the key's task
            for task, host in enumerate(hosts):
                port = client.direct_port("jobs", task)
                assert httpx.get(f"http://127.0.0.1:{port}/api/health").json()["pid"] == host["pid"]
            done = client.pstate("jobs", "done")
            assert [done[key].get() for key in range(8)] == [1] * 8
        for key in range(8, 20):  # a new connection each: the appends spread over both workers
            assert httpx.post(append, json={"key": key}).status_code == 200
        for _ in range(4):  # whichever worker answers a scrape, it counts what every worker served
            scrape = httpx.get(f"{url}/metrics").text
            appended = sum(float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines()
                           if line.startswith('headwater_appends_total{') and 'outcome="ok"' in line)
            assert appended == 20 and 'headwater_depot_end_offset{depot="jobs",module="jobs",partition="0"}' in scrape
    finally:
        stop(process)


def test_with_ray_the_tasks_run_in_ray_actors_and_this_process_serves_http(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed: run `make install` (the ray extra)")
    ensure_ray()  # the session's Ray: the server joins it by its address, as `--ray auto` joins a node's
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(tmp_path / "data", port, "--tasks", "2", "--ray", ray.get_runtime_context().gcs_address)
    try:
        assert httpx.get(f"{url}/api/health").json()["pid"] == process.pid  # the supervisor serves
        append = f"{url}/api/modules/jobs/depots/jobs/append"
        assert [httpx.post(append, json={"key": key}).json()["results"] for key in range(4)] == [
            {"work": 2 * key} for key in range(4)]
        hosts = next(m for m in httpx.get(f"{url}/api/stats").json()["modules"] if m["name"] == "jobs")["hosts"]
        assert [h["worker"] for h in hosts] == [0, 1] and all(h["up"] and h["node"] for h in hosts)
        workers = {h["pid"] for h in hosts}
        assert len(workers) == 2 and process.pid not in workers
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
        shown = subprocess.run([sys.executable, "-m", "headwater.cli", "status", "--url", url], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60).stdout
        assert "node" in shown and hosts[0]["node_ip"] in shown  # which node each task's worker is on
    finally:
        output = stop(process)
    assert "serving modules jobs" in output
    gone = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") for pid in workers):  # the actors end with their cluster
        assert time.monotonic() < gone, f"worker processes {workers} outlived the server"
        time.sleep(0.05)


def test_ray_and_workers_together_are_a_usage_error():
    result = CliRunner().invoke(app, ["serve", "examples/app.py", "--ray", "auto", "--workers", "2"])
    assert result.exit_code == 1
    assert "--ray and --workers cannot go together" in result.output


def test_a_public_address_needs_tokens(monkeypatch):
    monkeypatch.delenv("HEADWATER_TOKENS", raising=False)
    result = CliRunner().invoke(app, ["serve", "examples/app.py", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "refusing to listen on '0.0.0.0' without tokens" in result.output


def test_a_busy_port_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "examples/app.py", "--port", str(port), "--data", str(tmp_path)])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output and "--port" in result.output


def test_a_bad_token_file_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["serve", "examples/app.py", "--auth", str(tmp_path / "none.toml")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_load_modules_finds_every_module_of_a_file_or_a_dotted_name(tmp_path):
    assert [m.name for m in load_modules("examples/app.py")] == ["bank", "leaderboard", "orders", "registration", "accounts",
                                                               "checkout", "notifications"]
    assert [m.name for m in load_modules("examples.bank")] == ["bank"]
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ServeError, match="defines no headwater.Module"):
        load_modules(str(empty))
    with pytest.raises(ServeError, match="does not exist"):
        load_modules(str(tmp_path / "missing.py"))
    with pytest.raises(ServeError, match="cannot import"):
        load_modules("no_such_package.app")


def test_the_console_script_is_declared():
    assert 'headwater = "headwater.cli:main"' in (ROOT / "pyproject.toml").read_text()


def test_replicated_serving_fails_over_and_keeps_serving(tmp_path):
    """`--workers 2 --replication 2`: killing the worker that leads a task moves it to its follower;
    clients (HTTP and `hw.connect`) follow, and a keyed append lands once."""
    import os

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(tmp_path / "data", port, "--tasks", "2", "--workers", "2", "--replication", "2")
    try:
        with hw.connect(url) as client:
            deadline = time.monotonic() + 30
            while True:
                hosts = next(m for m in client.stats()["modules"] if m["name"] == "jobs")["hosts"]
                if all(f["in_sync"] for h in hosts for f in h["followers"]) and all(h["up"] for h in hosts):
                    break
                assert time.monotonic() < deadline, hosts
                time.sleep(0.1)
            assert [[f["worker"] for f in h["followers"]] for h in hosts] == [[1], [0]]
            jobs = client.depot("jobs", "jobs")
            keys = [key for key in range(40)]
            for key in keys[:10]:
                jobs.append({"key": key}, idempotency_key=f"k{key}")
            os.kill(hosts[0]["pid"], signal.SIGKILL)  # the leader of task 0 (and the follower of task 1)
            for key in keys[10:]:
                while True:
                    try:
                        jobs.append({"key": key}, idempotency_key=f"k{key}", timeout=10)
                        break
                    except (hw.Unavailable, hw.AckTimeout):
                        assert time.monotonic() < deadline + 60, "the cluster did not serve again"
                        time.sleep(0.05)
            hosts = next(m for m in client.stats()["modules"] if m["name"] == "jobs")["hosts"]
            assert hosts[0]["worker"] == 1, hosts  # the follower took task 0 over
            done = client.pstate("jobs", "done")
            assert [done[key].get() for key in keys] == [1] * len(keys)  # each job once
    finally:
        stop(process)


def test_replication_needs_workers(tmp_path):
    result = CliRunner().invoke(app, ["serve", "examples/app.py", "--replication", "2", "--data", str(tmp_path)])
    assert result.exit_code == 1 and "--workers" in result.output
