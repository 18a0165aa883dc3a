"""Updating a running server: `POST /api/update`, `headwater update`, `headwater serve --reload`.

The new app file is loaded apart from the running code and checked before anything changes:
code that does not load, or a change the stored data cannot follow, leaves the old code serving.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import headwater as hw
from headwater.cluster.apps import APP_SOURCE_BYTES_MAX
from headwater.server.auth import Auth, Token
from tests.clusters import CLUSTER_KINDS, open_cluster
from tests.server.support import served, start_serving
from tests.server.test_serve import free_port

ROOT = Path(__file__).parents[2]


def app_source(version: str, *, count_type: str = "int", extra: str = "") -> str:
    """A one-module app file whose handler answers with its version, so a test sees which code serves."""
    return f'''
import headwater as hw

app = hw.Module("greeter")
names = app.depot("names", str, partition_by=lambda name: name)
counts = app.pstate("counts", hw.Map(str, {count_type}))

@app.stream(names)
def greet(ctx, name):
    ctx.pstate(counts)[name].update(lambda n: (n or 0) + 1)
    return "{version}: hello " + name
{extra}
'''


def greet(url: str, name: str) -> str:
    answer = httpx.post(f"{url}/api/modules/greeter/depots/names/append", json=name, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]["greet"]


@pytest.mark.parametrize("kind", CLUSTER_KINDS)
def test_an_update_over_http_is_checked_then_applied(tmp_path, kind):
    with open_cluster(kind, tmp_path / "data") as cluster:
        cluster.apply_app(app_source("v1"), filename="greeter.py")
        with served(cluster) as url, hw.connect(url) as remote:
            assert greet(url, "ada") == "v1: hello ada"
            assert remote.apply_app(app_source("v2"), filename="greeter.py", dry_run=True) == [
                {"module": "greeter", "action": "updated", "version": 2}]
            assert greet(url, "ada") == "v1: hello ada"  # a dry run changes nothing
            assert remote.apply_app(app_source("v2"), filename="greeter.py")[0]["version"] == 2
            assert greet(url, "ada") == "v2: hello ada"
            assert [(m, m.version) for m in remote.modules()] == [("greeter", 2)]

            # A change the stored counts cannot follow: refused, listed, and the old code serves on.
            with pytest.raises(hw.DefinitionError) as refused:
                remote.apply_app(app_source("v3", count_type="str"), filename="greeter.py")
            assert [(c["kind"], c["name"], c["needs"]) for c in refused.value.changes] == [
                ("pstate", "counts", "migration")]
            assert greet(url, "bob") == "v2: hello bob"
            assert remote.pstate("greeter", "counts")["ada"].get() == 3
            # Declared, it applies: the counts start again, empty.
            assert remote.apply_app(app_source("v3"), filename="greeter.py", delete=["counts"])[0]["version"] == 3
            assert remote.pstate("greeter", "counts")["ada"].get() is None
            assert greet(url, "ada") == "v3: hello ada"

            # Code that does not load: refused with its error, nothing changes.
            for broken, expected in (("def broken(:\n", "does not compile"),
                                     ("raise RuntimeError('no config')\n", "RuntimeError: no config"),
                                     ("x = 1\n", "defines no headwater.Module")):
                with pytest.raises(hw.DefinitionError, match=expected):
                    remote.apply_app(broken, filename="greeter.py")
            assert greet(url, "ada") == "v3: hello ada"


def test_bad_update_requests_are_refused_before_any_code_runs(cluster, tmp_path):
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()\n" + app_source("v1")
    with served(cluster) as url:
        plain = httpx.post(f"{url}/api/update", content=code, headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415 and plain.json()["error"] == "unsupported_media_type"
        large = httpx.post(f"{url}/api/update", content=b"#" * (APP_SOURCE_BYTES_MAX + 1),
                           headers={"Content-Type": "text/x-python"})
        assert large.status_code == 413
        named = httpx.post(f"{url}/api/update", params={"filename": "../../etc/passwd"}, content=code,
                           headers={"Content-Type": "text/x-python"})
        assert named.status_code == 400 and "must name a .py file" in named.json()["message"]
    assert not marker.exists()
    auth = Auth([Token("reader", "secret-reader", frozenset({("read", None)})),
                 Token("bank-admin", "secret-bank", frozenset({("admin", "bank")}))])
    with served(cluster, auth=auth) as url:
        for secret in (None, "secret-reader", "secret-bank"):  # only an admin of every module may send code
            headers = {"Content-Type": "text/x-python", **({"Authorization": f"Bearer {secret}"} if secret else {})}
            answer = httpx.post(f"{url}/api/update", content=code, headers=headers)
            assert answer.status_code in (401, 403), answer.text
    assert not marker.exists()


@pytest.mark.parametrize("kind", CLUSTER_KINDS)
def test_an_update_while_appending_loses_nothing_and_applies_nothing_twice(tmp_path, kind):
    appended: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    with open_cluster(kind, tmp_path / "data") as cluster:
        cluster.apply_app(app_source("v1"), filename="greeter.py", tasks=2)
        names = cluster.depot("greeter", "names")

        def append_until_stopped() -> None:
            i = 0
            while not stop.is_set() or i < 50:
                name = f"user-{i}"
                for _ in range(200):  # an append cut short by an update is sent again with its key
                    try:
                        names.append(name, idempotency_key=name, timeout=10)
                        break
                    except hw.Unavailable:
                        time.sleep(0.01)
                    except BaseException as e:  # reported below
                        failures.append(e)
                        return
                appended.append(name)
                i += 1

        thread = threading.Thread(target=append_until_stopped)
        thread.start()
        versions = []
        for version in ("v2", "v3", "v4"):
            time.sleep(0.15)
            versions.append(cluster.apply_app(app_source(version), filename="greeter.py")[0]["version"])
        stop.set()
        thread.join(60)
        assert not failures, failures
        assert versions == [2, 3, 4] and len(appended) >= 50
        counts = cluster.pstate("greeter", "counts")
        assert {name: counts[name].get() for name in appended} == {name: 1 for name in appended}
        assert names.append("last")["greet"] == "v4: hello last"


def test_headwater_update_and_serve_reload_apply_new_code_and_keep_old_code_on_errors(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app_file = tmp_path / "greeter.py"
    app_file.write_text(app_source("v1"))
    command = [sys.executable, "-m", "headwater.cli", "serve", str(app_file), "--data", str(tmp_path / "data"),
               "--port", str(port), "--tasks", "2", "--workers", "2", "--reload"]
    process = start_serving(command, port, cwd=ROOT, what="the server")
    try:
        assert greet(url, "ada") == "v1: hello ada"
        # `headwater update` sends a file to a worker's front; the supervisor applies it.
        update_file = tmp_path / "update" / "greeter.py"
        update_file.parent.mkdir()
        update_file.write_text(app_source("v2"))
        cli = [sys.executable, "-m", "headwater.cli", "update", str(update_file), "--url", url]
        done = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "module greeter was updated: version 2" in done.stdout
        assert greet(url, "ada") == "v2: hello ada"
        update_file.write_text(app_source("v3", count_type="str"))
        refused = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and "counts" in refused.stdout + refused.stderr
        assert greet(url, "ada") == "v2: hello ada"

        # --reload: a saved file that does not load keeps the old code; a good one applies.
        app_file.write_text("def broken(:\n")
        time.sleep(1.5)
        assert greet(url, "bob") == "v2: hello bob"
        app_file.write_text(app_source("v4"))
        deadline = time.monotonic() + 30
        while greet(url, "cy") != "v4: hello cy":
            assert time.monotonic() < deadline, "the reload did not apply"
            time.sleep(0.2)
        assert httpx.get(f"{url}/api/modules/greeter").json()["version"] == 3
    finally:
        process.send_signal(2)
        output, _ = process.communicate(timeout=60)
    assert "greeter.py changed but was not applied" in output and "does not compile" in output, output
    assert "greeter.py applied: greeter updated (version 3)" in output
