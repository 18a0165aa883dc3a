"""The peers, installed on this machine and started by the benchmark itself on loopback.

`Postgres` runs `initdb` into a temporary directory and starts `postgres` as an unprivileged
user (PostgreSQL refuses to run as root: the Debian package's `postgres` user is used, or a
`headwater-bench` user is created), on a free port, with its unix socket in that directory.
`Redis` starts `redis-server` with an append-only file synced on every write. Both are processes
of this benchmark and are stopped by `close()` (the suite calls it in a `finally`, and an
`atexit` hook covers the rest), whatever happened.

Durability is equal by default: PostgreSQL `fsync=on`, `synchronous_commit=on` (each commit is
flushed to the WAL on disk before it returns; concurrent commits share a flush); Redis
`appendfsync always` (each write is in the AOF on disk before the reply).
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["Postgres", "Redis", "free_port", "postgres_bin", "ensure_unprivileged_user"]

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
BENCH_USER = "headwater-bench"
_running: list[Any] = []


def _stop_all() -> None:
    for peer in list(_running):
        peer.close()


atexit.register(_stop_all)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path:
    """The directory holding `postgres` and `initdb` (Debian keeps them off the PATH)."""
    found = shutil.which("postgres")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise RuntimeError("PostgreSQL is not installed: `apt-get install -y postgresql` (make bench does it)")
    return Path(candidates[-1]).parent


def ensure_unprivileged_user() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", BENCH_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", BENCH_USER], check=True)
    return pwd.getpwnam(BENCH_USER)


def _give(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


class Postgres:
    """A throwaway PostgreSQL cluster; `dsn` connects over TCP loopback as superuser `bench`."""

    def __init__(self, root: Path, *, settings: dict[str, str] | None = None) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.socket_dir = root / "pgsock"
        self.port = free_port()
        self.bin = postgres_bin()
        self.user = ensure_unprivileged_user()
        self.settings = {
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "shared_buffers": "1GB",
            "max_wal_size": "8GB",  # no checkpoint in the middle of a measured run
            "checkpoint_timeout": "30min",
            "max_connections": "200",
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            "log_min_messages": "warning",
            "logging_collector": "off",
        } | (settings or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "postgres.log"
        os.chmod(root, 0o755)  # the unprivileged user must reach its directories inside
        for d in (self.data, self.socket_dir):
            d.mkdir(exist_ok=True)
            _give(d, self.user)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "bench", "--auth=trust", "-E", "UTF8",
                   "--locale=C", "--no-instructions"])
        self.start()

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=bench dbname=postgres"

    @property
    def version(self) -> str:
        return subprocess.run([str(self.bin / "postgres"), "--version"], capture_output=True, text=True).stdout.strip()

    def _run(self, command: list[str]) -> None:
        subprocess.run(command, check=True, capture_output=True, **self._as_user())

    def _as_user(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def start(self) -> float:
        """Start the server; returns the seconds until it accepted a query."""
        import psycopg

        command = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        for key, value in self.settings.items():
            command += ["-c", f"{key}={value}"]
        started = time.perf_counter()
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            **self._as_user())
        _running.append(self)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return time.perf_counter() - started
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start; its log:\n{self.log.read_text()[-3000:]}") from None
                time.sleep(0.01)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): ends sessions, writes a checkpoint, exits."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, WAL writer, checkpointer...)."""
        if self.process is None:
            return []
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [self.process.pid, *(int(p) for p in out.split())]

    def close(self) -> None:
        self.stop()
        if self in _running:
            _running.remove(self)


class Redis:
    """A throwaway redis-server with `appendonly yes` and `appendfsync always`."""

    def __init__(self, root: Path, *, appendfsync: str = "always") -> None:
        self.root = root / "redis"
        self.root.mkdir(exist_ok=True)
        self.port = free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "redis.log"
        self.start()

    @property
    def version(self) -> str:
        return subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def start(self) -> float:
        """Start the server; returns the seconds until a read succeeded (after loading the AOF)."""
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: `apt-get install -y redis-server` (make bench does it)")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
                   "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
                   "--daemonize", "no", "--protected-mode", "yes", "--logfile", str(self.log)]
        started = time.perf_counter()
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        _running.append(self)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=2)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                try:
                    client.get("probe")
                    return time.perf_counter() - started
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start; its log:\n{self._log_tail()}") from None
                    time.sleep(0.005)
        finally:
            client.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _log_tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.process.send_signal(signal.SIGTERM)  # with AOF on: fsync and exit, no snapshot (--save "")
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        if self in _running:
            _running.remove(self)
