"""The kill -9 campaign: the bank under SIGKILL at random moments, checked against an oracle.

Seven workloads, each run on a fresh data directory and disrupted `KILLS_PER_RUN` times (ray-nodes: three):

- **stream** — `examples/bank.py` (3 tasks) in a child process; four threads append deposits and
  transfers that hop to the receiver's task, with full acks. The child is SIGKILLed after a random
  number of acks and started again on the same data.
- **microbatch** — `examples/bank_microbatch.py` the same way, with `Ack.APPEND`.
- **http** — a real `headwater serve examples/bank.py` on loopback; four client threads (the
  remote client, `hw.connect`) send full-ack appends, each with its own idempotency key. The
  server is SIGKILLed after a random number of acks and restarted on the same data; every
  append not acknowledged is sent again, with the same key, until it is.
- **workers** — the stream bank on a `LocalCluster` of `LOCAL_WORKERS` worker processes; four
  threads of this process append with full acks and idempotency keys, and one worker, chosen at
  random, is SIGKILLed after a random number of acks. The cluster restarts its workers; every
  append not acknowledged (`Unavailable`, `AckTimeout`) is sent again with the same key.
- **http-workers** — `headwater serve examples/bank.py --workers 2`, every worker serving HTTP;
  the remote clients append as in **http** (their reads go straight to the worker owning a key),
  and a random worker is SIGKILLed after a random number of acks.
- **replicated** — **workers** with `replication=2`: before each kill the followers are in sync,
  so the dead worker's tasks fail over to their followers while it restarts. The failover time
  is measured as a client sees it: from the kill until a deposit to a task the dead worker led is
  acknowledged (p50 and max in the table).
- **ray-nodes** — a `RayCluster` of 2 workers on a Ray cluster of 2 nodes of this machine
  (`ray.cluster_utils.Cluster`), with the stream bank (full acks) and the microbatch bank
  (`Ack.APPEND`) both at `replication=2` under load: per run, the node of one worker removed (and
  a new node added), then two workers SIGKILLed, each once the followers are in sync; both banks
  are checked against the oracle.

After the last kill the data is opened in process, every topology is left to settle (hops a crash
cut short sent again), and the oracle checks:

- **lost**: acked appends missing from the depots;
- **duplicated**: events stored more than once (every deposit amount and transfer id is unique);
- **PState mismatches**: each transfer decided once on the sender and recorded the same way on the
  receiver, the decision the appender got equal to the one stored, every user's funds equal to
  their deposits minus the transfers they sent plus those they received, money conserved
  (`total_funds` equals the sum of deposits);
- **early acks** (http, workers, http-workers, replicated, ray-nodes): an ack whose results or PStates did not yet show its processing — a full
  ack's `results` must carry the topology's answer, and, for a transfer, the receiver's record must
  be readable once the ack returns.

    .venv/bin/python -m bench.crash_campaign --runs 70            # 10 runs per workload, about 8 minutes
    .venv/bin/python -m bench.crash_campaign --runs 3 --workloads http
    .venv/bin/python -m bench.crash_campaign --runs 10 --workloads ray-nodes   # 20 kills, 10 nodes removed
    .venv/bin/python -m bench.crash_campaign child stream DIR GENERATION SEED   # the child processes

It prints a table and exits 1 if any run lost, duplicated or mismatched anything.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import headwater as hw
from bench.harness import table
from bench.peers import free_port
from bench.replication import in_sync
from examples.bank import Deposit, Transfer
from headwater.schema.keys import task_for_key
from tests.engine.children import lines_within, wait_until_settled

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("stream", "microbatch", "http", "workers", "http-workers", "replicated", "ray-nodes")
MODULE_OF = {"stream": "bank", "microbatch": "mbbank", "http": "bank", "workers": "bank", "http-workers": "bank",
             "replicated": "bank", "ray-nodes": "bank", "microbatch-replicated": "mbbank"}
LOCAL_WORKERS = 2
TASKS = 3
USERS = 12
APPENDERS = 4
KILLS_PER_RUN = 2
RESENDING = ("http", "workers", "http-workers", "replicated", "ray-nodes")  # workloads whose appenders resend by key and check early acks
ACKS_BEFORE_KILL = (40, 400)  # each kill comes after a random number of acks in this range
ACKS_AFTER_LAST_RESTART = 40  # the http clients keep going this long after the last restart
CHILD_SILENCE_MAX_S = 60  # a child or server that acks nothing for this long fails the run
RESEND_PAUSE_S = 0.05  # between attempts of an unacknowledged append while the server is down
RESEND_WINDOW_S = 60.0  # an append still unacknowledged after this long fails the run
SERVER_START_MAX_S = 30.0
SETTLE_MAX_S = 120.0


# ---- the events: every deposit amount and every transfer id is unique, so a copy is visible ---
def event_for(rng: random.Random, sequence: int) -> Deposit | Transfer:
    """A deposit (amount unique: sequence + 1) or a transfer (id unique) between two of USERS users."""
    if rng.random() < 0.4:
        return Deposit(rng.randrange(USERS), sequence + 1)
    sender, receiver = rng.sample(range(USERS), 2)
    return Transfer(f"t{sequence}", sender, receiver, rng.randint(1, 3_000_000))


def ack_line(event: Deposit | Transfer, result: Any) -> str:
    if isinstance(event, Deposit):
        return f"ACK D {event.amount}"
    ok = None if result is None else result.get("transfer")
    return f"ACK T {event.transfer_id} {ok}"


@dataclass
class Acked:
    """What the appenders were told: deposit amounts, and each acked transfer's answer (None: not waited for)."""

    deposits: set[int] = field(default_factory=set)
    transfers: dict[str, bool | None] = field(default_factory=dict)

    def add_line(self, line: str) -> None:
        _, kind, ident, *rest = line.split()
        if kind == "D":
            self.deposits.add(int(ident))
        else:
            self.transfers[ident] = {"True": True, "False": False}.get(rest[0]) if rest else None

    def __len__(self) -> int:
        return len(self.deposits) + len(self.transfers)


@dataclass
class Outcome:
    workload: str
    acked: int = 0
    lost: int = 0
    duplicated: int = 0
    mismatches: list[str] = field(default_factory=list)
    resent: int = 0  # http: appends acked only after being sent again (same key)
    early_acks: list[str] = field(default_factory=list)
    failovers: list[float] = field(default_factory=list)  # replicated: kill to first ack on a moved task, seconds
    kills: int = KILLS_PER_RUN  # workers (or processes) SIGKILLed in the run
    nodes_removed: int = 0  # ray-nodes: Ray nodes removed under load

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.mismatches or self.early_acks)


# ---- the child processes (stream and microbatch) ----------------------------------------------
def child(workload: str, directory: str, generation: int, seed: int) -> None:
    """Append deposits and transfers from APPENDERS threads forever, printing one line per ack."""
    from examples.bank import bank
    from examples.bank_microbatch import bank as microbatch_bank

    cluster = hw.InProcessCluster(directory)
    cluster.deploy(bank if workload == "stream" else microbatch_bank, tasks=TASKS)
    module, ack = MODULE_OF[workload], ("full" if workload == "stream" else "append")
    lock = threading.Lock()

    def appender(worker: int) -> None:
        rng = random.Random(f"{seed}-{generation}-{worker}")
        for i in range(100_000):
            event = event_for(rng, generation * 1_000_000 + worker * 100_000 + i)
            depot = cluster.depot(module, "deposits" if isinstance(event, Deposit) else "transfers")
            try:
                result = depot.append(event, ack=ack)
            except Exception as e:  # say so on stdout: the parent shows it instead of waiting
                print(f"ERROR {type(e).__name__}: {e}", flush=True)
                raise
            with lock:
                print(ack_line(event, result if ack == "full" else None), flush=True)

    for worker in range(APPENDERS):
        threading.Thread(target=appender, args=(worker,), daemon=True).start()
    threading.Event().wait()


def run_child_and_kill(workload: str, directory: Path, generation: int, seed: int, kill_after: int, acked: Acked) -> None:
    with tempfile.TemporaryFile("w+") as errors, subprocess.Popen(
        [sys.executable, "-m", "bench.crash_campaign", "child", workload, str(directory), str(generation), str(seed)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as process:
        assert process.stdout is not None
        count = 0
        try:
            for line in lines_within(process.stdout, CHILD_SILENCE_MAX_S):
                if not line.startswith("ACK "):
                    raise RuntimeError(f"the {workload} child said: {line.strip()}")
                acked.add_line(line)
                count += 1
                if count >= kill_after:
                    break
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(30)
        if count < kill_after:
            errors.seek(0)
            raise RuntimeError(f"the {workload} child stopped acking after {count} acks:\n{errors.read()[-3000:]}")


def run_in_process(workload: str, directory: Path, rng: random.Random, seed: int) -> Outcome:
    acked = Acked()
    for generation in range(KILLS_PER_RUN):
        run_child_and_kill(workload, directory, generation, seed, rng.randint(*ACKS_BEFORE_KILL), acked)
    return check(workload, directory, acked)


# ---- the http workload: a real server, killed and restarted; clients resend with the same key --
class Server:
    """`headwater serve examples/bank.py` on one loopback port and one data directory, restartable."""

    def __init__(self, directory: Path, workers: int = 0) -> None:
        self.directory, self.port, self.workers = directory, free_port(), workers
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile("w+")
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "headwater.cli", "serve", "examples/bank.py", "--data", str(self.directory),
                   "--port", str(self.port), "--tasks", str(TASKS), "--workers", str(self.workers)]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + SERVER_START_MAX_S
        while time.monotonic() < deadline:
            try:
                with hw.connect(self.url) as probe:
                    probe.modules()
                return
            except hw.HeadwaterError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the server did not start:\n{self.output()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        if self.process.wait(60) != 0:
            raise RuntimeError(f"the server did not stop cleanly:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-3000:]


class HttpClients:
    """APPENDERS threads appending with idempotency keys, each resending an append until it is acked."""

    def __init__(self, url: str, seed: int, workload: str = "http") -> None:
        self.url, self.seed = url, seed
        self.acked, self.outcome = Acked(), Outcome(workload)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.failures: list[str] = []
        self.last_error = ""  # what the latest attempt that was not acked met
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(APPENDERS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def wait_for_acks(self, count: int) -> None:
        deadline = time.monotonic() + CHILD_SILENCE_MAX_S
        while len(self.acked) < count and not self.failures:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"the http clients stopped at {len(self.acked)} acks, waiting for {count}; "
                                   f"the last attempt met {self.last_error or 'nothing'}")
            time.sleep(0.005)
        if self.failures:
            raise RuntimeError(self.failures[0])

    def finish(self) -> Acked:
        self.stopping.set()
        for thread in self.threads:
            thread.join(RESEND_WINDOW_S + 30)
        if self.failures:
            raise RuntimeError(self.failures[0])
        return self.acked

    def _run(self, worker: int) -> None:
        from examples.bank import bank

        rng = random.Random(f"{self.seed}-http-{worker}")
        try:
            with hw.connect(self.url, modules=[bank]) as cluster:
                for i in range(100_000):
                    if self.stopping.is_set():
                        return
                    self._append_until_acked(cluster, event_for(rng, worker * 100_000 + i), f"s{self.seed}-w{worker}-{i}")
        except Exception as e:
            self.failures.append(f"http client {worker}: {type(e).__name__}: {e}")

    def _append_until_acked(self, cluster: Any, event: Deposit | Transfer, key: str) -> None:
        depot = cluster.depot("bank", "deposits" if isinstance(event, Deposit) else "transfers")
        deadline, attempts = time.monotonic() + RESEND_WINDOW_S, 0
        while True:
            attempts += 1
            try:
                result = depot.append(event, idempotency_key=key, timeout=10.0)
                break
            except (hw.Unavailable, hw.AckTimeout) as e:  # the server is down or restarting: same key again
                self.last_error = f"{type(e).__name__}: {e}"
                if time.monotonic() >= deadline:
                    raise
                time.sleep(RESEND_PAUSE_S)
        early = self._early(cluster, event, result)
        with self.lock:
            self.acked.add_line(ack_line(event, result))
            self.outcome.resent += attempts > 1
            if early:
                self.outcome.early_acks.append(f"{key} (attempt {attempts}): {early}")

    @staticmethod
    def _early(cluster: Any, event: Deposit | Transfer, result: Any) -> str | None:
        """Why this full ack came before its processing was done and visible, or None."""
        if isinstance(event, Deposit):
            balance = result.get("deposit")
            return None if isinstance(balance, int) and balance >= event.amount else f"results {dict(result.results)}"
        if not isinstance(result.get("transfer"), bool):
            return f"results {dict(result.results)}"
        try:
            received = cluster.pstate("bank", "incoming")[event.to_id][event.transfer_id].get()
        except (hw.Unavailable, hw.AckTimeout):
            return None  # the server died since: nothing to learn from this read
        if received is None or received["ok"] != result["transfer"]:
            return f"acked {result['transfer']}, receiver's record then: {received}"
        return None


def run_http(directory: Path, rng: random.Random, seed: int) -> Outcome:
    """A real server, SIGKILLed whole and started again on the same data."""

    def kill(server: Server, admin: Any) -> None:
        server.kill()
        time.sleep(rng.uniform(0, 0.3))  # the clients meet a dead server and keep resending
        server.start()

    return run_served("http", Server(directory), rng, seed, kill)


def run_http_workers(directory: Path, rng: random.Random, seed: int) -> Outcome:
    """`headwater serve --workers 2`: every worker serves HTTP; a random worker is SIGKILLed while the
    remote clients (whose reads go straight to the worker owning a key) resend by key."""

    def kill(server: Server, admin: Any) -> None:
        os.kill(rng.choice(_running_workers(admin)), signal.SIGKILL)

    return run_served("http-workers", Server(directory, workers=LOCAL_WORKERS), rng, seed, kill)


def run_served(workload: str, server: Server, rng: random.Random, seed: int,
               kill: Callable[[Server, Any], None]) -> Outcome:
    """Remote clients append to `server` while `kill` strikes KILLS_PER_RUN times, each after a
    random number of acks; then the oracle checks the data."""
    server.start()
    clients = HttpClients(server.url, seed, workload)
    try:
        clients.start()
        target = 0
        with hw.connect(server.url) as admin:
            for _ in range(KILLS_PER_RUN):
                target += rng.randint(*ACKS_BEFORE_KILL)
                clients.wait_for_acks(target)
                time.sleep(rng.uniform(0, 0.02))  # a random moment, not just after an ack
                kill(server, admin)
        clients.wait_for_acks(len(clients.acked) + ACKS_AFTER_LAST_RESTART)
        acked = clients.finish()
    except RuntimeError as e:
        raise RuntimeError(f"{e}\nthe server's output:\n{server.output()}") from None
    finally:
        clients.stopping.set()
        if server.process is not None and server.process.poll() is None:
            server.stop()
        server.log.close()
    outcome = check(workload, server.directory, acked)
    outcome.resent, outcome.early_acks = clients.outcome.resent, clients.outcome.early_acks
    return outcome


def _running_workers(admin: Any) -> list[int]:
    """The pids of the server's workers once every task answers (not while they restart)."""
    deadline = time.monotonic() + SERVER_START_MAX_S
    while True:
        try:
            hosts = next(m for m in admin.stats()["modules"] if m["name"] == "bank")["hosts"]
            if hosts and all(h["up"] for h in hosts):
                return sorted({h["pid"] for h in hosts})
        except (hw.Unavailable, hw.AckTimeout):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers did not all answer within {SERVER_START_MAX_S}s")
        time.sleep(0.05)


def run_workers(directory: Path, rng: random.Random, seed: int, *, replication: int = 1) -> Outcome:
    """The stream bank on a LocalCluster; random workers SIGKILLed while appenders resend by key."""
    workload = "workers" if replication == 1 else "replicated"
    opened = hw.LocalCluster(directory, workers=LOCAL_WORKERS)
    kills = [_kill_a_worker] * KILLS_PER_RUN
    return _run_on_workers(workload, opened, directory, rng, seed, replication, kills)


def run_ray_nodes(directory: Path, rng: random.Random, seed: int) -> Outcome:
    """The stream bank and the microbatch bank, replicated, on a RayCluster over two Ray nodes of
    this machine: workers SIGKILLed, and a node removed (and another added) under load."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes(RAY_NODE_START_S)

        def remove_a_node(cluster: Any, rng: random.Random, hosts: list[dict[str, Any]]) -> dict[str, Any]:
            # The head holds Ray's control store, so the node removed is the other one, with its worker.
            others = {n.node_id: n for n in nodes.list_all_nodes() if n is not nodes.head_node}
            on_others = [h for h in hosts if h["node"] in others]
            if not on_others:
                raise RuntimeError(f"no worker runs off the head node to take away: {hosts}")
            victim = rng.choice(on_others)
            nodes.remove_node(others[victim["node"]])
            nodes.add_node(num_cpus=1)  # the cluster keeps its size: the next removal has a node to take
            return victim

        opened = hw.RayCluster(nodes.address, directory, workers=LOCAL_WORKERS)
        # The node first: a killed worker comes back on its machine, which here is every node's, so
        # only a fresh cluster is sure to have a worker off the head node.
        disruptions = [remove_a_node, _kill_a_worker, _kill_a_worker]
        return _run_on_workers("ray-nodes", opened, directory, rng, seed, 2, disruptions, microbatch=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        nodes.shutdown()


RAY_NODE_START_S = 60.0


def _kill_a_worker(cluster: Any, rng: random.Random, hosts: list[dict[str, Any]]) -> dict[str, Any]:
    victim = rng.choice(hosts)
    os.kill(victim["pid"], signal.SIGKILL)
    return victim


def _run_on_workers(workload: str, opened: Any, directory: Path, rng: random.Random, seed: int, replication: int,
                    disruptions: list[Callable[[Any, random.Random, list[dict[str, Any]]], dict[str, Any]]], *,
                    microbatch: bool = False) -> Outcome:
    """Appenders resend by key while each of `disruptions` takes a worker away after a random number of
    acks; replicated, each waits for the followers to be in sync first, and the failover is timed."""
    from examples.bank import bank
    from examples.bank_microbatch import bank as microbatch_bank

    acked, acked_mb, extra, lock = Acked(), Acked(), Outcome(workload), threading.Lock()
    stopping, failures = threading.Event(), []
    with opened as cluster:
        cluster.deploy(bank, tasks=TASKS, replication=replication)
        if microbatch:
            cluster.deploy(microbatch_bank, tasks=TASKS, replication=replication)

        def appender(worker: int, module: str, into: Acked) -> None:
            appender_rng = random.Random(f"{seed}-{module}-{worker}")
            for i in range(100_000):
                event = event_for(appender_rng, worker * 100_000 + i)
                is_deposit = isinstance(event, Deposit)
                depot = cluster.depot(module, "deposits" if is_deposit else "transfers")
                key = f"d{event.amount}" if is_deposit else event.transfer_id
                deadline, attempts = time.monotonic() + RESEND_WINDOW_S, 0
                while True:
                    if stopping.is_set():
                        return
                    try:
                        result = depot.append(event, idempotency_key=key, timeout=10,
                                              ack="full" if module == "bank" else "append")
                        break
                    except (hw.Unavailable, hw.AckTimeout):  # a worker restarts: send it again, same key
                        attempts += 1
                        if time.monotonic() > deadline:
                            failures.append(f"{module} {key} unacknowledged for {RESEND_WINDOW_S}s")
                            return
                        time.sleep(RESEND_PAUSE_S)
                answer = result.get("deposit" if is_deposit else "transfer") if result is not None else None
                with lock:
                    into.add_line(ack_line(event, result) if module == "bank" else ack_line(event, None))
                    extra.resent += attempts > 0
                    if answer is None and module == "bank":
                        extra.early_acks.append(f"{key}: acked without its topology's answer ({result})")

        threads = [threading.Thread(target=appender, args=(w, "bank", acked), daemon=True) for w in range(APPENDERS)]
        if microbatch:
            threads.append(threading.Thread(target=appender, args=(APPENDERS, "mbbank", acked_mb), daemon=True))
        for thread in threads:
            thread.start()

        def wait_for(count: int) -> None:
            deadline = time.monotonic() + CHILD_SILENCE_MAX_S
            while len(acked) < count and not failures:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the appenders got {len(acked)} acks, not {count}")
                time.sleep(0.005)

        try:
            target = 0
            for n, disrupt in enumerate(disruptions):
                target += rng.randint(*ACKS_BEFORE_KILL)
                wait_for(target)
                hosts = in_sync(cluster, "bank") if replication > 1 else cluster.status()["bank"]
                if microbatch:
                    in_sync(cluster, "mbbank")
                time.sleep(rng.uniform(0, 0.02))  # a random moment, not just after an ack
                killed_at = time.monotonic()
                victim = disrupt(cluster, rng, hosts)
                if replication > 1:  # as a client sees it: the first ack from a task the victim led
                    led = {row["task"] for row in hosts if row["worker"] == victim["worker"]}
                    user = next(u for u in range(USERS) if task_for_key(u, TASKS) in led)
                    amount = PROBE_AMOUNT + seed * 100 + n  # unique: the oracle counts it as any deposit
                    acked_probe = _append_until_acked(cluster, Deposit(user, amount), f"d{amount}")
                    extra.failovers.append(time.monotonic() - killed_at)
                    with lock:
                        acked.add_line(ack_line(Deposit(user, amount), acked_probe))
            wait_for(len(acked) + ACKS_AFTER_LAST_RESTART)
        finally:
            stopping.set()
            for thread in threads:
                thread.join(RESEND_WINDOW_S)
        if failures:
            raise RuntimeError(failures[0])
    outcome = check(workload, directory, acked)
    if microbatch:
        other = check("microbatch-replicated", directory, acked_mb)
        outcome.acked += other.acked
        outcome.lost += other.lost
        outcome.duplicated += other.duplicated
        outcome.mismatches += [f"mbbank: {m}" for m in other.mismatches]
    outcome.resent, outcome.early_acks, outcome.failovers = extra.resent, extra.early_acks, extra.failovers
    outcome.kills = sum(1 for d in disruptions if d is _kill_a_worker)
    outcome.nodes_removed = len(disruptions) - outcome.kills
    return outcome


PROBE_AMOUNT = 1_000_000_000  # the failover probes' deposits: above every appender's amounts
FAILOVER_WAIT_MAX_S = 60.0


def _append_until_acked(cluster: hw.LocalCluster, event: Deposit, key: str) -> Any:
    deadline = time.monotonic() + FAILOVER_WAIT_MAX_S
    while True:
        try:
            return cluster.depot("bank", "deposits").append(event, idempotency_key=key, timeout=10)
        except (hw.Unavailable, hw.AckTimeout):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{key} unacknowledged {FAILOVER_WAIT_MAX_S}s after the kill") from None
            time.sleep(0.005)


# ---- the oracle ---------------------------------------------------------------------------------
def stored_events(cluster: hw.InProcessCluster, module: str, depot: str) -> list[Any]:
    handle = cluster.depot(module, depot)
    return [r.event for p in range(handle.partitions) for r in handle.read(p, 0, limit=10_000_000)]


def check(workload: str, directory: Path, acked: Acked) -> Outcome:
    from examples.bank import bank
    from examples.bank_microbatch import bank as microbatch_bank

    module = MODULE_OF[workload]
    outcome = Outcome(workload, acked=len(acked))
    # Replicated data is opened on workers again (each task's copies are in directories of theirs).
    replicated = workload in ("replicated", "ray-nodes", "microbatch-replicated")
    opened = hw.LocalCluster(directory, workers=LOCAL_WORKERS) if replicated else hw.InProcessCluster(directory)
    with opened as cluster:
        cluster.deploy(bank if module == "bank" else microbatch_bank)
        wait_until_settled(cluster, module, timeout_s=SETTLE_MAX_S)
        deposits = stored_events(cluster, module, "deposits")
        transfers = stored_events(cluster, module, "transfers")
        copies = Counter(d.amount for d in deposits) + Counter(t.transfer_id for t in transfers)
        outcome.duplicated = sum(n - 1 for n in copies.values())
        outcome.lost = len(acked.deposits - set(copies)) + len(set(acked.transfers) - set(copies))
        unique = {t.transfer_id: t for t in transfers}
        unique_deposits = {d.amount: d for d in deposits}.values()  # a copy is counted above, not twice here
        expected: defaultdict[int, int] = defaultdict(int)
        for d in unique_deposits:
            expected[d.user_id] += d.amount
        decided = decisions(cluster, module, unique.values(), outcome.mismatches)
        for transfer_id, t in unique.items():
            ok = decided.get(transfer_id)
            if acked.transfers.get(transfer_id) is not None and ok is not None and acked.transfers[transfer_id] != ok:
                outcome.mismatches.append(f"{transfer_id}: the appender was told {acked.transfers[transfer_id]}, state says {ok}")
            if ok:
                expected[t.from_id] -= t.amount
                expected[t.to_id] += t.amount
        funds = cluster.pstate(module, "funds")
        for user in range(USERS):
            if (funds[user].get() or 0) != expected[user]:
                outcome.mismatches.append(f"funds[{user}] = {funds[user].get()}, the events say {expected[user]}")
        total, deposited = cluster.query(module, "total_funds")(), sum(d.amount for d in unique_deposits)
        if total != deposited:
            outcome.mismatches.append(f"money not conserved: total_funds {total}, deposits {deposited}")
    return outcome


def decisions(cluster: hw.InProcessCluster, module: str, transfers: Any, mismatches: list[str]) -> dict[str, bool]:
    """Each stored transfer's decision (ok or not) as recorded on the sender, checked against the receiver."""
    sender_log = cluster.pstate(module, "outgoing" if module == "bank" else "transfer_log")
    incoming = cluster.pstate(module, "incoming") if module == "bank" else None
    decided: dict[str, bool] = {}
    for t in transfers:
        sent = sender_log[t.from_id][t.transfer_id].get()
        if sent is None or (sent["to_id"], sent["amount"]) != (t.to_id, t.amount):
            mismatches.append(f"{t.transfer_id}: sender's record {sent} for {t}")
            continue
        decided[t.transfer_id] = sent["ok"]
        if incoming is not None:
            received = incoming[t.to_id][t.transfer_id].get()
            if received != {"from_id": t.from_id, "amount": t.amount, "ok": sent["ok"]}:
                mismatches.append(f"{t.transfer_id}: receiver's record {received}, sender's {sent}")
    return decided


# ---- the campaign -------------------------------------------------------------------------------
RUNNERS: dict[str, Callable[[Path, random.Random, int], Outcome]] = {
    "stream": lambda d, rng, seed: run_in_process("stream", d, rng, seed),
    "microbatch": lambda d, rng, seed: run_in_process("microbatch", d, rng, seed),
    "http": run_http,
    "workers": run_workers,
    "http-workers": run_http_workers,
    "replicated": lambda d, rng, seed: run_workers(d, rng, seed, replication=2),
    "ray-nodes": run_ray_nodes,
}


def run_once(workload: str, seed: int) -> Outcome:
    with tempfile.TemporaryDirectory(prefix=f"crash-{workload}-") as directory:
        return RUNNERS[workload](Path(directory) / "data", random.Random(seed), seed)


def report(outcomes: list[Outcome]) -> str:
    rows = []
    for workload in dict.fromkeys(o.workload for o in outcomes):
        mine = [o for o in outcomes if o.workload == workload]
        rows.append([workload, str(len(mine)), str(sum(o.kills for o in mine)), str(sum(o.nodes_removed for o in mine)),
                     f"{sum(o.acked for o in mine):,}",
                     str(sum(o.lost for o in mine)), str(sum(o.duplicated for o in mine)),
                     str(sum(len(o.mismatches) for o in mine)),
                     f"{sum(o.resent for o in mine):,}" if workload in RESENDING else "–",
                     str(sum(len(o.early_acks) for o in mine)) if workload in RESENDING else "–",
                     _failover_times([t for o in mine for t in o.failovers])])
    return table(["workload", "runs", "kills", "nodes removed", "acked", "lost", "duplicated", "PState mismatches", "resent",
                  "early acks", "failover p50 / max"], rows)


def _failover_times(times: list[float]) -> str:
    if not times:
        return "–"
    ordered = sorted(times)
    return f"{ordered[len(ordered) // 2]:.2f} / {ordered[-1]:.2f} s"


def campaign(runs: int, workloads: list[str], seed: int, *, say: Callable[[str], None] = print) -> list[Outcome]:
    """`runs` runs spread round-robin over `workloads`; each run's line is said as it ends."""
    outcomes = []
    for n in range(runs):
        workload, started = workloads[n % len(workloads)], time.monotonic()
        outcome = run_once(workload, seed + n)
        outcomes.append(outcome)
        problems = outcome.mismatches[:3] + outcome.early_acks[:3]
        say(f"run {n + 1:3}/{runs} {workload:10} seed {seed + n}: acked {outcome.acked:5}, lost {outcome.lost}, "
            f"duplicated {outcome.duplicated}, mismatches {len(outcome.mismatches)}, early acks {len(outcome.early_acks)} "
            f"({time.monotonic() - started:.1f} s){''.join(chr(10) + '    ' + p for p in problems)}")
    return outcomes


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        workload, directory, generation, seed = sys.argv[2:6]
        child(workload, directory, int(generation), int(seed))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60, help="runs in all, spread over the workloads (default 60)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated: {', '.join(WORKLOADS)}")
    parser.add_argument("--seed", type=int, default=1, help="the first run's seed; run n uses seed + n")
    args = parser.parse_args()
    workloads = args.workloads.split(",")
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    started = time.monotonic()
    outcomes = campaign(args.runs, workloads, args.seed)
    print(f"\n{report(outcomes)}\n\n{args.runs} runs in {time.monotonic() - started:.0f} s")
    sys.exit(0 if all(o.clean for o in outcomes) else 1)


if __name__ == "__main__":
    main()
