"""The network part of the watching benchmark (`python -m bench.reactivity`), made tiny: it still runs.

Every path delivers its changes to its subscribers and the tables render; no timing is checked (a
benchmark never fails a build on time). Skipped, saying which, without redis-server or PostgreSQL.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from bench.harness import Env
from bench.peers import postgres_bin
from bench.reactivity import network_markdown, network_verdicts, over_network


def _peers_installed() -> None:
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install '.[bench]'")
    pytest.importorskip("redis", reason="the redis client is not installed: pip install '.[bench]'")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; make bench installs it)")
    try:
        postgres_bin()
    except RuntimeError:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; make bench installs it)")


def test_every_path_delivers_each_change_to_every_subscriber():
    _peers_installed()
    # Not pytest's tmp_path: PostgreSQL runs as an unprivileged user, who must reach the directory.
    with tempfile.TemporaryDirectory(prefix="headwater-bench-") as directory:
        env = Env(root=Path(directory), runs=2, quick=True)
        try:
            network = over_network(env, samples=5, counts=(3, 6), rounds=2)
        finally:
            env.close()
    assert network.notes == {}
    names = list(network.latency_runs)
    assert any(name.startswith("headwater") for name in names)
    assert any(name.startswith("PostgreSQL") for name in names)
    assert any(name.startswith("Redis") for name in names)
    for name in names:
        assert [len(run) for run in network.latency_runs[name]] == [5, 5]
        assert [len(run) for run in network.answered_runs[name]] == [5, 5]
        assert {count: len(m["ms"]) for count, m in network.fan_out[name].items()} == {3: 2, 6: 2}
    markdown = network_markdown(network, samples=5, runs=2, rounds=2)
    assert all(name in markdown for name in names)
    assert {v.measure for v in network_verdicts(network)} == {
        "change → subscriber over loopback, p50", "change → subscriber over loopback, p99",
        "one change to 6 subscribers over loopback"}
