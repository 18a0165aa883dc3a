"""Real servers for the source adapters, started by the tests on loopback and stopped after.

A missing server binary or client library skips the tests that need it, saying which (`make test`
installs them: redis-server and postgresql from Debian, the `sources` extra from PyPI)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

POSTGRES_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start on port {port} (exit code {process.poll()})") from None
            time.sleep(0.05)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    pytest.importorskip("redis", reason="the redis client is not installed: pip install 'headwater[sources]'")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; make test installs it)")
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(directory)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def postgres_dsn():
    """A PostgreSQL cluster of its own (initdb) with wal_level=logical, on a loopback port."""
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'headwater[sources]'")
    if not POSTGRES_BIN:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; make test installs it)")
    bin_dir = POSTGRES_BIN[-1]
    # initdb refuses to run as root: as root, the cluster belongs to the postgres user, in a
    # directory of its own that user can reach (pytest's temporary directories are root's only).
    directory = Path(tempfile.mkdtemp(prefix="headwater-postgres-"))
    user = ["runuser", "-u", "postgres", "--"] if _is_root() else []
    if user:
        shutil.chown(directory, "postgres")
    data = directory / "data"
    port = free_port()
    process = None
    try:
        subprocess.run([*user, str(bin_dir / "initdb"), "-D", str(data), "-U", "headwater", "--auth=trust",
                        "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL)
        options = ["-c", "wal_level=logical", "-c", "max_replication_slots=4", "-c", "max_wal_senders=4",
                   "-c", "fsync=off", "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                   "-c", f"unix_socket_directories={directory}"]
        process = subprocess.Popen([*user, str(bin_dir / "postgres"), "-D", str(data), *options],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, process, "postgres")
        dsn = f"postgresql://headwater@127.0.0.1:{port}/postgres"
        import psycopg

        deadline = time.monotonic() + 30
        while True:  # accepting connections on the port comes a little before accepting logins
            try:
                psycopg.connect(dsn).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield dsn
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        shutil.rmtree(directory, ignore_errors=True)


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


@pytest.fixture(params=["in_process", "local"])
def cluster(request, tmp_path):
    """The adapters' tests run on both kinds of cluster of one machine (threads, worker processes)."""
    from tests.clusters import open_cluster

    with open_cluster(request.param, tmp_path / "data") as c:
        yield c
