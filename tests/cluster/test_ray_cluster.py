"""RayCluster: LocalCluster's workers as Ray actors: placed by Ray, watched by Ray, restarted, losing nothing acked.

Every test but the last joins the session's Ray (tests.clusters.ensure_ray); the multi-node test
stops it and runs its own cluster of two nodes on this machine (`ray.cluster_utils.Cluster`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import headwater as hw
from examples.bank import Deposit, Transfer, bank
from examples.bank_microbatch import bank as microbatch_bank
from headwater.cluster.ray import _Homes, _node_slots
from tests.cluster.test_local_cluster import RECOVERY_S_MAX, append_retrying
from tests.clusters import LOCAL_WORKERS, ensure_ray

ray = pytest.importorskip("ray", reason="Ray is not installed: run `make install` (the ray extra)")

NODE_START_S = 60  # the longest the two-node cluster may take to have both nodes up


@pytest.fixture
def ray_cluster(tmp_path):
    ensure_ray()
    with hw.RayCluster(path=tmp_path / "data", workers=LOCAL_WORKERS) as cluster:
        yield cluster


def test_importing_headwater_needs_no_ray():
    code = "import sys, headwater as hw; assert hw.RayCluster and 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert issubclass(hw.RayCluster, hw.LocalCluster)


def test_without_ray_it_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # what importing an absent package does
    with pytest.raises(hw.HeadwaterError, match=r"install 'headwater\[ray\]'") as raised:
        hw.RayCluster(path=tmp_path)
    assert isinstance(raised.value, ImportError)


@pytest.mark.parametrize("arguments", [{"workers": 0}, {"workers": 65}, {"workers": "2"},
                                       {"address": "ray://head:10001"}, {"address": 6379}])
def test_bad_arguments_are_value_errors(tmp_path, arguments):
    with pytest.raises(ValueError, match="workers=|address="):
        hw.RayCluster(path=tmp_path, **arguments)


def test_an_address_where_no_ray_listens_fails_fast():
    code = "import headwater as hw; hw.RayCluster('127.0.0.1:1')"  # a process of its own: not yet on Ray
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "headwater.errors.Unavailable: nothing answers at 127.0.0.1:1" in run.stderr


def node(node_id: str, ip: str, cpus: int, alive: bool = True) -> dict:
    """A node as `ray.nodes()` lists it (the fields placement reads)."""
    return {"NodeID": node_id, "NodeManagerAddress": ip, "Alive": alive, "Resources": {"CPU": float(cpus)}}


def test_workers_go_to_the_nodes_with_cpus_in_turn():
    assert _node_slots([node("a", "10.0.0.1", 3), node("b", "10.0.0.2", 1)]) == ["a", "b", "a", "a"]
    assert _node_slots([node("head", "10.0.0.1", 0), node("b", "10.0.0.2", 2)]) == ["b", "b"]  # a head kept free
    assert _node_slots([node("a", "10.0.0.1", 0), node("b", "10.0.0.2", 0, alive=False)]) == ["a"]


def test_a_worker_goes_back_to_the_machine_its_data_is_on(tmp_path, caplog):
    first = [node("a", "10.0.0.1", 1), node("b", "10.0.0.2", 1)]
    assert _Homes(tmp_path, 4).plan(first) == ["a", "b", "a", "b"]
    # Ray started again: new node ids, listed in another order; each worker returns to its machine.
    again = [node("y", "10.0.0.2", 1), node("z", "10.0.0.1", 1), node("c", "10.0.0.3", 4)]
    assert _Homes(tmp_path, 4).plan(again) == ["z", "y", "z", "y"]
    with caplog.at_level("ERROR", logger="headwater.cluster"):
        moved = _Homes(tmp_path, 4).plan([node("y", "10.0.0.2", 1), node("c", "10.0.0.3", 2)])
    assert moved == ["c", "y", "c", "y"]  # 10.0.0.1 is gone: its workers start elsewhere, and say so
    assert "worker 0's machine 10.0.0.1 is not in the Ray cluster: it starts on 10.0.0.3" in caplog.text
    caplog.clear()
    with caplog.at_level("ERROR", logger="headwater.cluster"):
        _Homes(tmp_path, 3)
    assert "has 3 workers where the last one" in caplog.text


def test_modules_deploy_append_read_query_and_say_where_they_run(ray_cluster):
    ray_cluster.deploy(bank, tasks=4)
    ray_cluster.deploy(microbatch_bank, tasks=2)
    deposits = ray_cluster.depot("bank", "deposits")
    appended = [deposits.append(Deposit(user, 100)) for user in range(4)]  # full ack: processed
    assert [result["deposit"] for result in appended] == [100] * 4
    transfer = ray_cluster.depot("bank", "transfers").append(Transfer("t1", 0, 3, 30))
    assert transfer["transfer"] is True  # the credit hopped to task 3's worker
    funds = ray_cluster.pstate("bank", "funds")
    assert [funds[user].get() for user in range(4)] == [70, 100, 100, 130]
    assert ray_cluster.query("bank", "total_funds")() == 400
    [record] = deposits.read(appended[2].partition, appended[2].offset, appended[2].offset + 1)
    assert record.event == Deposit(2, 100)

    ray_cluster.depot("mbbank", "deposits").append_many([Deposit(user, 10) for user in range(4)], ack="append")
    ray_cluster.wait_for_microbatch("mbbank", "banking", processed=4)
    assert ray_cluster.query("mbbank", "total_funds")() == 40

    status = ray_cluster.status()
    assert [t["worker"] for t in status["bank"]] == [0, 1, 0, 1]
    node = ray.get_runtime_context().get_node_id()
    for rows in status.values():
        assert all(t["up"] and t["pid"] != os.getpid() and t["node"] == node and t["node_ip"] for t in rows)
    assert len({t["pid"] for t in status["bank"]}) == LOCAL_WORKERS
    assert "RayCluster" in repr(ray_cluster) and "nodes=1" in repr(ray_cluster)


def test_a_backup_of_ray_workers_restores_and_reattaches(ray_cluster, tmp_path):
    """Each worker actor checkpoints the tasks it leads and copies them into the backup; the cut holds
    the stream bank's hops and the microbatch bank's batches as a crash of every task would."""
    ray_cluster.deploy(bank, tasks=4)
    ray_cluster.deploy(microbatch_bank, tasks=2)
    ray_cluster.depot("bank", "deposits").append_many([Deposit(user, 100) for user in range(4)])
    ray_cluster.depot("bank", "transfers").append_many([Transfer(f"t{i}", i % 4, (i + 1) % 4, 1) for i in range(40)])
    ray_cluster.depot("mbbank", "deposits").append_many([Deposit(user, 10) for user in range(4)], ack="append")
    ray_cluster.wait_for_microbatch("mbbank", "banking", processed=4)
    info = ray_cluster.backup(tmp_path / "backups")
    assert info.modules == {"bank": 4, "mbbank": 2} and info.bytes_copied > 0
    hw.restore(tmp_path / "backups", tmp_path / "restored")
    with hw.RayCluster(path=tmp_path / "restored", workers=LOCAL_WORKERS) as restored:
        restored.deploy(bank)
        restored.deploy(microbatch_bank)
        assert [restored.pstate("bank", "funds")[user].get() for user in range(4)] == [100] * 4
        assert restored.query("bank", "total_funds")() == 400
        assert restored.query("mbbank", "total_funds")() == 40


# ---- several nodes (keep last: it stops the session's Ray, which the next test that needs it restarts)


@pytest.fixture
def two_nodes():
    """A Ray cluster of two nodes on this machine, which this process is not connected to."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()  # one Ray per process: the session's stops here (ensure_ray starts it again)
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        second = nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes(NODE_START_S)
        yield nodes, second
    finally:
        if ray.is_initialized():
            ray.shutdown()
        nodes.shutdown()


@pytest.mark.parametrize("replication", [1, 2])
def test_workers_spread_over_nodes_and_a_lost_nodes_workers_come_back_on_the_other(two_nodes, tmp_path,
                                                                                  replication):
    """Replicated, the lost node's tasks move to their followers on the other node first."""
    nodes, second = two_nodes
    with hw.RayCluster(nodes.address, tmp_path / "data") as cluster:  # workers=None: one per CPU, so 2
        assert ray.is_initialized()  # the cluster connected this process to Ray
        cluster.deploy(bank, tasks=4, replication=replication)
        if replication > 1:  # a copy of each task on each node
            deadline = time.monotonic() + RECOVERY_S_MAX
            while not all(f["in_sync"] for t in cluster.status()["bank"] for f in t["followers"]):
                assert time.monotonic() < deadline, "the followers did not catch up"
                time.sleep(0.05)
        tasks = cluster.status()["bank"]
        assert {t["node"] for t in tasks} == {nodes.head_node.node_id, second.node_id}  # SPREAD
        deposits = cluster.depot("bank", "deposits")
        for user in range(4):
            deposits.append(Deposit(user, 100))
        assert cluster.depot("bank", "transfers").append(Transfer("t1", 0, 1, 30))["transfer"] is True
        assert cluster.query("bank", "total_funds")() == 400

        lost = {t["pid"] for t in tasks if t["node"] == second.node_id}
        nodes.remove_node(second)
        deadline = time.monotonic() + RECOVERY_S_MAX
        while True:
            try:
                tasks = cluster.status()["bank"]
                if all(t["up"] for t in tasks):
                    break
            except hw.Unavailable:
                pass
            assert time.monotonic() < deadline, "the workers did not come back on the remaining node"
            time.sleep(0.1)
        assert {t["node"] for t in tasks} == {nodes.head_node.node_id} and not lost & {t["pid"] for t in tasks}
        funds = cluster.pstate("bank", "funds")
        assert [funds[user].get() for user in range(4)] == [70, 130, 100, 100]  # one machine: its disk is still here
        assert append_retrying(deposits, Deposit(1, 5), "after", deadline)["deposit"] == 135
        assert cluster.query("bank", "total_funds")() == 405
        if replication > 1:
            assert cluster.failovers, "the lost node's tasks did not move to their followers"
    assert not ray.is_initialized()  # it connected this process, so it disconnected it
