"""Running the server: load an app file's modules, deploy them, serve on uvicorn until stopped.

Shutdown order is what makes Ctrl-C safe: uvicorn stops accepting connections and lets requests
in flight finish (their appends are acked, or were never submitted), and only then does the
cluster close. Storage batches are atomic, so an append is either in the log or not, never half.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from headwater.client.cluster import Cluster
from headwater.cluster.apps import APP_TASKS_DEFAULT, app_module_name, find_modules, load_source
from headwater.cluster.inprocess import InProcessCluster
from headwater.cluster.local import LocalCluster
from headwater.cluster.ray import RayCluster
from headwater.engine.definitions import Module
from headwater.errors import DefinitionError, HeadwaterError
from headwater.server.app import RESERVED_PREFIXES, create_app
from headwater.server.auth import Auth, check_bind, load_auth
from headwater.server.http import MAX_BODY_BYTES_DEFAULT
from headwater.server.protocol import EVENT_LOOP, ConnectionLimits, http_protocol

__all__ = ["GRACEFUL_SHUTDOWN_S", "PAGES_MAX", "Reloader", "ServeError", "ServerThread", "deploy_all", "load_pages",
           "load_modules", "serve"]

GRACEFUL_SHUTDOWN_S = 10.0  # requests still running this long after Ctrl-C are cut off
RELOAD_DEBOUNCE_MS = 200  # `--reload`: changes within this long of each other are applied once
RELOAD_STOP_S = 5.0  # the longest closing waits for the reload watcher
LISTEN_BACKLOG = 2048  # connections the kernel queues for a server before it accepts them
_STARTUP_TIMEOUT_S = 30.0
PAGES_MAX = 100  # static page directories one app file may name


class ServeError(HeadwaterError):
    """The server cannot start: no modules in the app file, a port in use, unsafe binding, ..."""


def load_modules(target: str | os.PathLike[str]) -> list[Module]:
    """Every `headwater.Module` defined or imported at the top level of a Python file or module."""
    text = str(target)
    if text.endswith(".py") or os.sep in text or Path(text).is_file():
        return _load_file(Path(text))
    try:
        namespace = vars(importlib.import_module(text))
    except ImportError as e:
        raise ServeError(f"cannot import {text!r}: {e}; pass a path to a .py file or an importable module") from e
    try:
        return find_modules(namespace, text)
    except DefinitionError as e:
        raise ServeError(str(e)) from None


def _load_file(path: Path) -> list[Module]:
    """An app file's modules, loaded as `apply_app` loads later versions of it (`serve --reload`,
    `headwater update`), under the same Python module name."""
    if not path.is_file():
        raise ServeError(f"app file {str(path)!r} does not exist")
    # Like `python -m`, the working directory is importable, so an app file can import its
    # package (`from examples.bank import bank`) wherever the console script was installed.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        modules, _ = load_source(path.read_bytes(), str(path.resolve()))
    except DefinitionError as e:
        raise ServeError(str(e)) from None
    return modules


def load_pages(target: str | os.PathLike[str]) -> dict[str, Path]:
    """The static pages an app file serves beside the API: its top-level `pages`, a dict from a URL
    prefix (`"/examples/leaderboard"`) to a directory (relative to the app file), or {} without one.

        pages = {"/examples/leaderboard": "leaderboard_page"}   # in the app file
    """
    text = str(target)
    if text.endswith(".py") or os.sep in text or Path(text).is_file():
        path = Path(text).resolve()
        loaded = sys.modules.get(app_module_name(str(path)))
        if loaded is None or getattr(loaded, "__file__", None) != str(path):  # not loaded, or another file's
            _load_file(path)
            loaded = sys.modules[app_module_name(str(path))]
        namespace, base = vars(loaded), path.parent
    else:
        loaded = importlib.import_module(text)
        namespace, base = vars(loaded), Path(loaded.__file__ or ".").parent
    declared = namespace.get("pages", {})
    if not isinstance(declared, dict) or len(declared) > PAGES_MAX:
        raise ServeError(f"`pages` in {text!r} must be a dict of at most {PAGES_MAX} URL prefixes to directories, "
                         f"like {{\"/examples/leaderboard\": \"leaderboard_page\"}}; it is {type(declared).__name__}")
    pages = {}
    for prefix, directory in declared.items():
        parts = str(prefix).split("/")
        if (not isinstance(prefix, str) or not prefix.startswith("/") or prefix.endswith("/")
                or not all(parts[1:]) or "/" + parts[1] in RESERVED_PREFIXES):
            raise ServeError(f"`pages` in {text!r}: {prefix!r} is not a URL prefix pages can have: start it with /, "
                             f"end it without, and keep it out of {', '.join(sorted(RESERVED_PREFIXES))}")
        folder = (base / directory).resolve()
        if not folder.is_dir():
            raise ServeError(f"`pages` in {text!r}: {prefix!r} names {str(folder)!r}, which is not a directory")
        pages[prefix] = folder
    return pages


def deploy_all(cluster: InProcessCluster, modules: list[Module], tasks: int | None, replication: int = 1) -> None:
    """Deploy each module; one already stored in the cluster's directory reattaches to its data.

    `tasks=None` (no --tasks given) takes the stored task count, or APP_TASKS_DEFAULT for a new
    module; a --tasks that differs from the stored count is an error, never silently ignored."""
    for module in modules:
        stored = (cluster.path / module.name / "module.json").exists()
        if stored:
            cluster.deploy(module, tasks=tasks, replication=None if replication == 1 else replication)
        else:
            cluster.deploy(module, tasks=APP_TASKS_DEFAULT if tasks is None else tasks, replication=replication)


class Reloader:
    """`headwater serve --reload`: applies each saved version of the app file to the running cluster.

    The file's directory is watched (editors often save by writing a new file and renaming it);
    a change to the file loads it apart from the running code (`apply_app`), and code that does not
    load, or is not compatible with the stored data, leaves the old code serving and is reported."""

    def __init__(self, cluster: Any, path: str, tasks: int | None,
                 report: Callable[[str], None] = lambda text: print(text, flush=True)) -> None:
        self.path = Path(path).resolve()
        self._cluster, self._tasks, self._report = cluster, tasks, report
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="headwater-reload", daemon=True)
        self.applied = 0  # versions applied since start
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(RELOAD_STOP_S)

    def _watch(self) -> None:
        import watchfiles

        def is_app(_: Any, changed: str) -> bool:
            return Path(changed).resolve() == self.path

        for _ in watchfiles.watch(self.path.parent, watch_filter=is_app, stop_event=self._stop,
                                  debounce=RELOAD_DEBOUNCE_MS, recursive=False, raise_interrupt=False):
            if self.path.exists():
                self.apply()

    def apply(self) -> None:
        """Apply the file as it is now; report what changed, or why nothing did."""
        try:
            report = self._cluster.apply_app(self.path.read_bytes(), filename=str(self.path),
                                             tasks=APP_TASKS_DEFAULT if self._tasks is None else self._tasks)
        except Exception as e:  # anything the new code does: the old code keeps serving
            self.last_error = f"{type(e).__name__}: {e}"
            self._report(f"headwater: {self.path.name} changed but was not applied; the previous code still "
                         f"serves.\n{self.last_error}")
            return
        self.applied += 1
        self.last_error = None
        done = ", ".join(f"{r['module']} {r['action']} (version {r['version']})" for r in report)
        self._report(f"headwater: {self.path.name} applied: {done}")


def bind(host: str, port: int, *, shared: bool = False, listen: bool = True) -> socket.socket:
    """A listening socket, or a ServeError that says what to do when the address is taken.

    `shared`: other sockets of this user may bind the same address too (SO_REUSEPORT), and the
    kernel spreads new connections over those listening: how every worker of a LocalCluster
    serves one port. `listen=False` only holds the address (and learns the port, for port 0).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}; is another server running there? "
                         "pick another --port") from None
    if listen:
        sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _config(app: Any, *, log_level: str, limits: ConnectionLimits = ConnectionLimits()) -> uvicorn.Config:
    return uvicorn.Config(app, http=http_protocol(getattr(app, "answer_now", None), limits), loop=EVENT_LOOP,
                          log_level=log_level, access_log=False, lifespan="off",
                          # uvicorn annotates int but only hands these to call_later and wait_for: a float is fine.
                          timeout_keep_alive=limits.idle_timeout_s,  # type: ignore[arg-type]
                          h11_max_incomplete_event_size=limits.headers_max_bytes,  # the fallback parser's bound
                          server_header=False,  # one header line less to write and parse per answer
                          timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)  # type: ignore[arg-type]


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def serve(app_file: str, *, data: str = "./data", host: str = "127.0.0.1", port: int = 8000,
          tasks: int | None = None, auth: Auth | None = None, max_body_bytes: int = MAX_BODY_BYTES_DEFAULT,
          limits: ConnectionLimits = ConnectionLimits(), workers: int = 0, replication: int = 1,
          ray_address: str | None = None, reload: bool = False,
          announce: Callable[[str, InProcessCluster], None] | None = None) -> None:
    """Deploy the modules of `app_file` on a cluster in `data` and serve them until Ctrl-C.

    `workers=0` runs the tasks, and the HTTP server, in this process (`InProcessCluster`);
    `workers=N` runs them in N worker processes (`LocalCluster`), and every worker serves the
    HTTP API on the one port (SO_REUSEPORT: the kernel spreads connections over them), reading
    and appending to its own tasks directly and to the others' over the links between workers.
    `ray_address` ("auto", or a Ray head's "host:port") runs them in worker processes placed by
    Ray (`RayCluster`, one worker per CPU of the Ray cluster), and this process serves HTTP.
    `replication=R` keeps each task on R of the workers (at first deploy); it needs `workers` or
    `ray_address`. `tasks` is the task count of a module deployed for the first time (default
    APP_TASKS_DEFAULT); over stored data it must match. `reload` applies every saved change of
    the app file to the running modules (`Reloader`).
    """
    if ray_address is not None and workers:
        raise ServeError("--ray and --workers cannot go together: with --ray, Ray's cluster decides the workers "
                         "(one per CPU); drop --workers")
    if reload and not (app_file.endswith(".py") or Path(app_file).is_file()):
        raise ServeError(f"--reload watches an app file: pass the path of a .py file, not {app_file!r}")
    auth = load_auth() if auth is None else auth
    check_bind(host, auth)
    modules = load_modules(app_file)
    pages = load_pages(app_file)
    if replication != 1 and not workers and ray_address is None:
        raise ServeError(f"--replication {replication} keeps copies of each task on other worker processes: "
                         f"add --workers N with N ≥ {replication}, or --ray")
    if workers:
        held = bind(host, port, shared=True, listen=False)
        try:
            with LocalCluster(data, workers=workers) as cluster:
                _serve_on_workers(cluster, modules, held, host=host, tasks=tasks, auth=auth, pages=pages,
                                  max_body_bytes=max_body_bytes, limits=limits, replication=replication,
                                  announce=announce, reload=app_file if reload else None)
        finally:
            held.close()
        return
    sock = bind(host, port)
    try:
        with InProcessCluster(data) if ray_address is None else RayCluster(ray_address, data) as cluster:
            deploy_all(cluster, modules, tasks, replication)
            server = uvicorn.Server(_config(create_app(cluster, auth=auth, max_body_bytes=max_body_bytes, pages=pages),
                                            log_level="warning", limits=limits))
            if announce is not None:
                announce(url_of(sock), cluster)
            with _reloading(cluster, app_file if reload else None, tasks):
                server.run(sockets=[sock])  # returns (or raises KeyboardInterrupt) after in-flight requests end
    finally:
        sock.close()


def _serve_on_workers(cluster: LocalCluster, modules: list[Module], held: socket.socket, *, host: str,
                      tasks: int | None, pages: dict[str, Path],
                      auth: Auth, max_body_bytes: int, limits: ConnectionLimits, replication: int,
                      announce: Callable[[str, InProcessCluster], None] | None, reload: str | None) -> None:
    # This process holds the address (and learns the port) without listening, so no connection
    # waits on it; the workers' sockets join it and listen.
    deploy_all(cluster, modules, tasks, replication)
    cluster.start_fronts(worker_front, host, held.getsockname()[1], auth, max_body_bytes, limits, pages)
    if announce is not None:
        announce(url_of(held), cluster)
    try:
        with _reloading(cluster, reload, tasks):
            threading.Event().wait()  # until Ctrl-C
    finally:
        cluster.stop_fronts()  # each worker lets the requests in flight finish


@contextlib.contextmanager
def _reloading(cluster: Any, app_file: str | None, tasks: int | None) -> Iterator[None]:
    if app_file is None:
        yield
        return
    reloader = Reloader(cluster, app_file, tasks)
    reloader.start()
    try:
        yield
    finally:
        reloader.stop()


def worker_front(cluster: Cluster, host: str, port: int, auth: Auth, max_body_bytes: int,
                 limits: ConnectionLimits, pages: dict[str, Path] | None = None) -> ServerThread:
    """The HTTP server a LocalCluster worker runs (`LocalCluster.start_fronts`): on the shared port,
    and on a port of its own (`direct_port`) where `hw.connect` sends reads of the tasks it hosts."""
    server = ServerThread(create_app(cluster, auth=auth, max_body_bytes=max_body_bytes, pages=pages), host=host,
                          port=port, limits=limits, shared=True, log_level="warning", direct=True)
    server.start()
    return server


class ServerThread:
    """An app served by uvicorn on a background thread, on a free loopback port by default.

        with ServerThread(create_app(cluster)) as url:
            hw.connect(url).depot("bank", "deposits").append(...)
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0,
                 limits: ConnectionLimits = ConnectionLimits(), shared: bool = False, log_level: str = "error",
                 direct: bool = False) -> None:
        self._sockets = [bind(host, port, shared=shared)]
        if direct:  # a second, unshared port: requests there are served by this process only
            self._sockets.append(bind(host, 0))
        self.url = url_of(self._sockets[0])
        self.direct_port = self._sockets[-1].getsockname()[1] if direct else None
        self._server = uvicorn.Server(_config(app, log_level=log_level, limits=limits))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": self._sockets},
                                        name="headwater-server", daemon=True)

    def start(self) -> str:
        self._thread.start()
        started = threading.Event()
        while not self._server.started and self._thread.is_alive():
            started.wait(0.005)  # uvicorn offers no event to wait on; its start takes milliseconds
        if not self._server.started:
            raise ServeError(f"the server thread for {self.url} stopped during startup")
        return self.url

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(_STARTUP_TIMEOUT_S)
        for sock in self._sockets:
            sock.close()

    def info(self) -> dict[str, Any]:
        """What a LocalCluster reports of this front: the port where it alone answers."""
        return {"direct_port": self.direct_port}

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
