"""A leader that is cut off, or deposed, acknowledges nothing: the replication protocol by itself,
with the leader, a follower and the controller wired together in this process."""

from __future__ import annotations

import time

from headwater.cluster.replication import REPLICA_ACK_WAIT_S, Leader, Replica, ReplicaPoll
from headwater.storage import Batch, RocksStore

WAIT_S = 5.0


class Controller:
    """The controller's one rule that matters here: it records an in-sync set only from the current epoch."""

    def __init__(self, epoch: int, reachable: bool = True) -> None:
        self.epoch = epoch
        self.reachable = reachable

    def propose(self, task: int, epoch: int, in_sync: list[int]) -> bool:
        return self.reachable and epoch == self.epoch


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def pair(tmp_path, epoch: int, controller: Controller, *, link_up: list[bool]):
    """A leader on worker 0 and its follower on worker 1, joined by a link that can be cut."""
    holder: dict[str, object] = {}

    def to_follower(worker: int, envelope) -> bool:
        if not link_up[0]:
            return False
        holder["replica"].on_frame(envelope)
        return True

    def to_leader(worker: int, envelope) -> bool:
        if not link_up[0]:
            return False
        holder["leader"].on_frame(envelope)
        return True

    leader = Leader("m", 0, epoch, RocksStore(tmp_path / "leader"), tmp_path / "leader", [1], [1], to_follower,
                    controller.propose)
    holder["leader"] = leader
    replica = Replica("m", 0, 1, 0, tmp_path / "follower", to_leader)
    holder["replica"] = replica
    leader.start()
    return leader, replica


def write(leader: Leader, key: bytes, *, sync: bool = True) -> None:
    batch = Batch()
    batch.put("pstate", key, b"v")
    leader.store.write(batch, sync=sync)


def test_an_ack_leaves_only_once_the_follower_has_the_batch(tmp_path):
    link_up = [True]
    leader, replica = pair(tmp_path, 1, Controller(1), link_up=link_up)
    delivered: list[bytes] = []
    write(leader, b"a")
    leader.hold(lambda _, message: delivered.append(message), 7, b"ack of a")
    wait_for(lambda: delivered == [b"ack of a"], "the ack never left")
    assert replica.seq == leader.seq and replica.durable == leader.seq
    replica.close()
    leader.store.close()


def test_a_leader_cut_off_from_the_controller_and_its_follower_acknowledges_nothing(tmp_path):
    link_up = [True]
    controller = Controller(1)
    leader, replica = pair(tmp_path, 1, controller, link_up=link_up)
    wait_for(lambda: leader.describe()[0]["lag"] == 0, "the follower did not catch up")
    link_up[0] = False  # the leader's worker is cut off: from its follower and from the controller
    controller.reachable = False
    delivered: list[bytes] = []
    write(leader, b"b")
    leader.hold(lambda _, message: delivered.append(message), 7, b"ack of b")
    for seconds in (REPLICA_ACK_WAIT_S + 1, 10 * REPLICA_ACK_WAIT_S, 100 * REPLICA_ACK_WAIT_S):
        leader.check(time.monotonic() + seconds)  # it would drop the silent follower, but cannot alone
    time.sleep(0.1)
    assert delivered == [], "a cut-off leader acknowledged an append its follower never had"
    assert leader.describe()[0]["in_sync"] is True
    replica.close()
    leader.store.close()


def test_a_deposed_leader_is_fenced_by_the_follower_and_acknowledges_nothing(tmp_path):
    link_up = [True]
    controller = Controller(1)
    leader, replica = pair(tmp_path, 1, controller, link_up=link_up)
    wait_for(lambda: leader.describe()[0]["lag"] == 0, "the follower did not catch up")
    # Another replica became leader under epoch 2 (the controller moved on, the follower heard of it).
    controller.epoch = 2
    replica.on_frame(ReplicaPoll("m", 0, 2))
    wait_for(lambda: replica.term == 2, "the follower did not hear of epoch 2")
    delivered: list[bytes] = []
    write(leader, b"c")  # the old leader, still running, takes an append
    leader.hold(lambda _, message: delivered.append(message), 7, b"ack of c")
    wait_for(lambda: leader.fenced, "the follower did not fence the old leader")
    leader.check(time.monotonic() + 100 * REPLICA_ACK_WAIT_S)
    time.sleep(0.1)
    assert delivered == [], "a deposed leader acknowledged an append"
    assert replica.seq < leader.seq, "the follower applied a deposed leader's batch"
    replica.close()
    leader.store.close()
