"""The `headwater` command: serve modules, and talk to a server by URL with the public client API.

Every command but `serve` goes through `hw.connect(url, token)`, so the CLI is one more client of
the HTTP API, with nothing of its own to keep in step with the server.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

from headwater.cli.output import ExitCode, Output, example_value, exit_code_for, to_json
from headwater.client.remote import RemoteCluster, connect
from headwater.cluster.apps import APP_TASKS_DEFAULT
from headwater.errors import DefinitionError, HandlerError, HeadwaterError, NotFound, SchemaError, StorageError

__all__ = ["app", "main"]

DEFAULT_URL = "http://127.0.0.1:8000"
APPEND_BATCH = 500  # events per append-many request when appending a stream of JSON lines

EXIT_CODES_HELP = ("Exit codes: 0 ok, 1 usage, 2 not found, 3 schema/validation, 4 handler error, 5 timeout, "
                   "6 unavailable/connection, 7 permission denied.")


class _Group(TyperGroup):
    """Usage errors exit 1, not click's 2: 2 means "not found" to scripts (see ExitCode)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)  # non-standalone: typer.Exit comes back as its code
        except typer.Abort:
            code = ExitCode.OK  # Ctrl-C on `tail -f` is how it ends
        except Exception as e:
            # Usage errors are click exceptions (typer may vendor its own click): they can show().
            if not (hasattr(e, "show") and hasattr(e, "exit_code")):
                raise
            e.show()
            code = ExitCode.USAGE
        sys.exit(code if isinstance(code, int) else ExitCode.OK)


app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="headwater: serve modules over HTTP, and append, read and query them from the shell. "
                       + EXIT_CODES_HELP)

Url = Annotated[str, typer.Option("--url", envvar="HEADWATER_URL", help="server URL")]
Token = Annotated[str | None, typer.Option("--token", envvar="HEADWATER_TOKEN", help="bearer token")]
Json = Annotated[bool, typer.Option("--json", help="print JSON for scripts instead of tables")]
F = TypeVar("F", bound=Callable[..., Any])


def _client(url: str, token: str | None) -> RemoteCluster:
    return connect(url, token)


def command(fn: F) -> F:
    """Run a command, turning a headwater error into its message and documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        output = Output(bool(kwargs.get("json", False)))
        try:
            return fn(*args, output=output, **{k: v for k, v in kwargs.items() if k != "json"})
        except (HeadwaterError, ValueError) as e:
            output.error(e)
            raise typer.Exit(exit_code_for(e)) from None

    # typer reads the signature: keep --json, hide the injected `output`
    signature = inspect.signature(fn, eval_str=True)
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for name, p in signature.parameters.items() if name != "output"])
    return wrapper  # type: ignore[return-value]


def parse_value(text: str) -> Any:
    """A command-line value: JSON if it parses (1, true, [1,2], {"a":1}), else the text itself."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


# ---- serve ----------------------------------------------------------------------------------------


@app.command()
def serve(
    app_file: Annotated[str, typer.Argument(help="Python file (or module) defining headwater.Module objects")],
    data: Annotated[str, typer.Option(help="data directory; restarting on it resumes")] = "./data",
    host: Annotated[str, typer.Option(help="address to listen on (non-loopback needs tokens)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    tasks: Annotated[int | None, typer.Option(
        help=f"tasks per module at first deploy (default {APP_TASKS_DEFAULT}); over stored data it must match")] = None,
    auth: Annotated[str | None, typer.Option(help="TOML file of bearer tokens and scopes")] = None,
    max_body_bytes: Annotated[int, typer.Option(help="largest request body accepted")] = 1024 * 1024,
    workers: Annotated[int, typer.Option(help="run the tasks in N worker processes (0: in this process)")] = 0,
    replication: Annotated[int, typer.Option(help="keep each task on R workers at first deploy (needs --workers)")] = 1,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="ADDRESS",
        help="run the tasks in worker processes that Ray places on the nodes of a Ray cluster: 'auto' joins the "
             "one this machine is a node of, HOST:PORT the one whose head is there; this process serves HTTP")] = None,
    reload: Annotated[bool, typer.Option(
        "--reload", help="apply every saved change of APP_FILE to the running modules; code that does not load, or "
                         "that the stored data cannot follow, leaves the old code serving and is reported")] = False,
) -> None:
    """Deploy the modules of APP_FILE on an embedded cluster and serve the API and the web UI."""
    from headwater.server.auth import AuthConfigError, load_auth
    from headwater.server.run import serve as run_server

    errors = Output(False)
    try:
        tokens = load_auth(auth)
        run_server(app_file, data=data, host=host, port=port, tasks=tasks, auth=tokens, workers=workers,
                   replication=replication, ray_address=ray, max_body_bytes=max_body_bytes, reload=reload,
                   announce=functools.partial(_announce, data=data))
    except (AuthConfigError, HeadwaterError) as e:
        errors.error(e)
        if isinstance(e, StorageError):  # above all a data directory another process has open
            errors.errors.print(f"(the data directory is {data}; --data DIR serves another)")
        raise typer.Exit(ExitCode.USAGE) from None
    except KeyboardInterrupt:
        pass
    print("headwater: stopped; the data is in", data, flush=True)


def _announce(url: str, cluster: Any, *, data: str) -> None:
    from headwater.server.catalog import describe_module, runtime_of

    described = [describe_module(runtime_of(cluster, name)) for name in cluster.modules()]
    print(f"headwater: serving modules {', '.join(cluster.modules())} (data in {data})")
    print(f"  UI       {url}/ui/")
    print(f"  API      {url}/api/openapi.json")
    print(f"  metrics  {url}/metrics")
    depot = next(((m, d) for m in described for d in m["depots"] if d["client_appends"]), None)
    if depot is not None:
        module, found = depot
        schema = found["event_schema"]
        event = to_json(example_value(schema, schema.get("$defs", {})))
        print("try:")
        print(f"  curl -X POST '{url}/api/modules/{module['name']}/depots/{found['name']}/append' "
              f"-H 'Content-Type: application/json' -d '{event}'")
    print("Ctrl-C stops.", flush=True)


# ---- update ---------------------------------------------------------------------------------------


@app.command()
@command
def update(
    app_file: Annotated[str, typer.Argument(help="the new version of the Python file the server serves")],
    url: Url = DEFAULT_URL, token: Token = None, json: Json = False,
    delete: Annotated[list[str] | None, typer.Option(
        "--delete", metavar="NAME", help="drop the data of a depot, PState or topology (repeat; 'module/name' when "
                                         "the file defines several modules)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only check: change nothing")] = False,
    tasks: Annotated[int | None, typer.Option(
        help=f"tasks of a module the file adds (default {APP_TASKS_DEFAULT})")] = None,
    *, output: Output,
) -> None:
    """Send a new version of APP_FILE to a running server (admin scope): every module in it is checked
    against the stored data, then updated; an incompatible change is listed with its fix, and nothing changes."""
    from pathlib import Path

    path = Path(app_file)
    if not path.is_file():
        raise NotFound("app file", app_file, [], where="this directory")
    with _client(url, token) as client:
        try:
            report = client.apply_app(path.read_bytes(), filename=path.name, delete=delete or [], dry_run=dry_run,
                                      tasks=tasks)
        except DefinitionError as e:
            if output.json or not e.changes:
                raise
            output.table("not applied: changes to stored data", ["kind", "name", "change", "needs", "fix"],
                         [(c["kind"], c["name"], c["change"], c["needs"], c["fix"]) for c in e.changes])
            raise
    if output.json:
        output.value({"modules": report, "dry_run": dry_run})
        return
    verb = "would be" if dry_run else "was"
    for row in report:
        print(f"module {row['module']} {verb} {row['action']}: version {row['version']}")


# ---- backup and restore ---------------------------------------------------------------------------


@app.command()
@command
def backup(
    destination: Annotated[str, typer.Argument(help="the backup directory, on the server's machine (every worker "
                                                    "must be able to write it)")],
    url: Url = DEFAULT_URL, token: Token = None,
    keep: Annotated[int | None, typer.Option("--keep", min=1, help="then delete all but the KEEP newest backups "
                                             "in DESTINATION, and the files only they named")] = None,
    json: Json = False, *, output: Output,
) -> None:
    """Back up every module of a running server into DESTINATION (admin scope): consistent across tasks, and
    incremental (files an earlier backup there holds are not copied again). A relative path is taken from here."""
    import os

    with _client(url, token) as client:
        info = client.backup(os.path.abspath(destination), keep=keep)
    if output.json:
        output.value(info.to_json())
        return
    output.table(f"backup {info.id} in {info.destination}", ["modules", "files copied", "bytes copied",
                                                             "files reused", "seconds", "stall ms"],
                 [(", ".join(f"{name} ({tasks} tasks)" for name, tasks in info.modules.items()) or "none",
                   info.files_copied, f"{info.bytes_copied:,}", info.files_reused, f"{info.duration_s:.2f}",
                   f"{info.stall_s * 1000:.1f}")])
    if keep is not None:
        print(f"removed {len(info.backups_removed)} older backup(s), {info.bytes_removed:,} bytes")


@app.command("prune-backups")
@command
def prune_backups(
    destination: Annotated[str, typer.Argument(help="a directory `headwater backup` (or cluster.backup) wrote to")],
    keep: Annotated[int, typer.Option("--keep", min=1, help="how many of the newest backups stay")],
    json: Json = False, *, output: Output,
) -> None:
    """Delete all but the KEEP newest backups in DESTINATION (on this machine), and every file only they named.
    The latest backup always stays; nothing is deleted if a kept backup's manifest is damaged; refused while a
    backup writes there."""
    from headwater.cluster.backups import prune_backups as prune

    pruned = prune(destination, keep=keep)
    if output.json:
        output.value(pruned)
        return
    print(f"kept {len(pruned['kept'])} backup(s) in {destination}; removed {len(pruned['removed'])} "
          f"({', '.join(pruned['removed']) or 'none'}), {pruned['files_removed']} files, "
          f"{pruned['bytes_removed']:,} bytes")


@app.command()
@command
def restore(
    source: Annotated[str, typer.Argument(help="a directory `headwater backup` (or cluster.backup) wrote to")],
    data: Annotated[str, typer.Option("--data", help="the data directory to create: absent or empty")],
    backup_id: Annotated[str | None, typer.Option("--backup",
                                                  help="the backup to restore (default: the latest)")] = None,
    json: Json = False, *, output: Output,
) -> None:
    """Lay out a backup from SOURCE as a data directory: `headwater serve APP.py --data DIR` (or a cluster over DIR)
    then reattaches to it. Every file is checked; a missing, incomplete or corrupt backup, or a non-empty DIR, is an
    error that names it."""
    from headwater.cluster.backups import restore as restore_backup

    restored = restore_backup(source, data, backup=backup_id)
    if output.json:
        output.value(restored)
        return
    modules = ", ".join(f"{name} ({tasks} tasks)" for name, tasks in restored["modules"].items()) or "no modules"
    print(f"restored backup {restored['id']} into {data}: {modules}, {restored['files']} files, "
          f"{restored['bytes']:,} bytes")


# ---- status ---------------------------------------------------------------------------------------


@app.command()
@command
def status(url: Url = DEFAULT_URL, token: Token = None, json: Json = False, *, output: Output) -> None:
    """Modules, depots and topologies with their live numbers: records, lag, dead letters."""
    with _client(url, token) as client:
        stats = client.stats()
    if output.json:
        output.value(stats)
        return
    for module in stats["modules"]:
        output.table(f"module {module['name']} (version {module.get('version', 1)}, {module['tasks']} tasks) — depots",
                     ["depot", "partitions", "records", "appended", "ack p50 ms", "ack p99 ms"],
                     [(d["name"], len(d["partitions"]), d["records"], d["appended"],
                       _ms(d["ack_latency_ms"]["p50"]), _ms(d["ack_latency_ms"]["p99"])) for d in module["depots"]])
        output.table(f"module {module['name']} — topologies",
                     ["topology", "depots", "processed", "lag", "caught up", "dead letters"],
                     [(t["name"], ", ".join(t["depots"]), t["processed"], t["lag"], _percent(t["processed"], t["lag"]),
                       t["dead_letters"]) for t in module["topologies"]])
        if module.get("migrations"):
            output.table(f"module {module['name']} — migrations",
                         ["migrated", "migration", "version", "rewritten", "done"],
                         [(f"{g['kind']} {g['name']}", ", ".join(g["ids"]), g["version"],
                           f"{g['moved']} / {g['total']}", "yes" if g["done"] else "no")
                          for g in module["migrations"]])
        hosts = module.get("hosts", [])
        on_nodes = any("node_ip" in h for h in hosts)  # a RayCluster's: which node each worker is on
        output.table(f"module {module['name']} — tasks",
                     ["task", "worker", "pid", "up", "appends in flight", "followers (in sync, lag)",
                      *(["node"] if on_nodes else [])],
                     [(h["task"], "this process" if h["worker"] is None else h["worker"], h["pid"],
                       "yes" if h["up"] else f"NO{': ' + h['error'] if h.get('error') else ''}",
                       "-" if h.get("appends_in_flight") is None else h["appends_in_flight"],
                       _followers(h.get("followers") or []), *([h.get("node_ip") or "?"] if on_nodes else []))
                      for h in hosts])


def _followers(followers: list[dict[str, Any]]) -> str:
    """`worker 1 (in sync, lag 0)`, or `-` for a task kept once."""
    return ", ".join(f"worker {f['worker']} ({'in sync' if f['in_sync'] else 'catching up'}, lag "
                     f"{'?' if f['lag'] is None else f['lag']})" for f in followers) or "-"


def _percent(processed: int, lag: int) -> str:
    """How much of its depots' records a topology has processed: a backfill's progress."""
    total = processed + lag
    return "100%" if total == 0 else f"{100 * processed // total}%"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


# ---- append ---------------------------------------------------------------------------------------


@app.command()
@command
def append(
    module: str, depot: str,
    event: Annotated[str | None,
                     typer.Argument(help="the event as JSON; omit (or -) to read JSON lines from stdin")] = None,
    file: Annotated[str | None, typer.Option("--file", help="read JSON lines (one event each) from this file")] = None,
    ack: Annotated[str, typer.Option(help="full, append or none")] = "full",
    idempotency_key: Annotated[str | None, typer.Option(help="a repeat with this key appends nothing")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the ack")] = 30.0,
    url: Url = DEFAULT_URL, token: Token = None, json: Json = False, *, output: Output,
) -> None:
    """Append one event (JSON argument) or many (JSON lines from --file or stdin, with a progress bar)."""
    with _client(url, token) as client:
        target = client.depot(module, depot)
        if event is not None and event != "-":
            result = target.append(_event(event, 1), ack=ack, timeout=timeout, idempotency_key=idempotency_key)
            output.value(_result(result), title=None)
            return
        lines = _lines(file)
        counts = _append_lines(target, lines, ack, timeout, output)
    output.value({"appended": counts}) if output.json else output.console.print(f"appended {counts} events")


def _event(text: str, line: int) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as e:
        raise SchemaError(f"event on line {line} is not valid JSON: {e}") from None


def _lines(file: str | None) -> list[str]:
    if file is None:
        return [line for line in sys.stdin.read().splitlines() if line.strip()]
    try:
        with open(file) as f:
            return [line for line in f.read().splitlines() if line.strip()]
    except OSError as e:
        raise ValueError(f"cannot read {file!r}: {e.strerror}") from None


def _append_lines(target: Any, lines: list[str], ack: str, timeout: float, output: Output) -> int:
    events = [_event(line, n + 1) for n, line in enumerate(lines)]  # all parsed before any is sent
    with _progress(output, len(events), f"{target.module}.{target.name}") as advance:
        for start in range(0, len(events), APPEND_BATCH):
            batch = events[start:start + APPEND_BATCH]
            target.append_many(batch, ack=ack, timeout=timeout)
            advance(len(batch))
    return len(events)


class _progress:
    """A rich progress bar on a terminal; silent with --json or when stderr is not a terminal."""

    def __init__(self, output: Output, total: int, label: str) -> None:
        self._bar = None if output.json or not output.errors.is_terminal else Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=output.errors)
        self._total, self._label = total, label

    def __enter__(self) -> Callable[[int], None]:
        if self._bar is None:
            return lambda n: None
        self._bar.start()
        task = self._bar.add_task(self._label, total=self._total)
        return lambda n: self._bar.advance(task, n)  # type: ignore[union-attr]

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()


def _result(result: Any) -> Any:
    if result is None:
        return {"accepted": True}
    return {"partition": result.partition, "offset": result.offset, "results": result.results}


# ---- tail -----------------------------------------------------------------------------------------


@app.command()
@command
def tail(
    module: str, depot: str,
    lines: Annotated[int, typer.Option("-n", "--lines", min=0,
                                       help="how many of the latest records to show, in all (across partitions)")] = 10,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep printing records as they are appended")] = False,
    partition: Annotated[list[int] | None, typer.Option(help="only these partitions (repeatable)")] = None,
    idle_timeout: Annotated[float | None, typer.Option(help="with --follow, stop after this many idle seconds")] = None,
    url: Url = DEFAULT_URL, token: Token = None, json: Json = False, *, output: Output,
) -> None:
    """The latest records of a depot, oldest first, like `tail`; --follow keeps printing new ones (Ctrl-C stops)."""
    with _client(url, token) as client:
        target = client.depot(module, depot)
        chosen = partition or list(range(target.partitions))
        ends = {p: target.partition_info(p).end_offset for p in chosen}
        # The latest `lines` in all are among the latest `lines` of each partition; ordered by time.
        candidates = [r for p in chosen for r in target.read(p, max(0, ends[p] - lines), ends[p])]
        latest = sorted(candidates, key=lambda r: (r.timestamp, r.partition, r.offset))[-lines:] if lines else []
        for record in latest:
            _print_record(output, record)
        if follow:
            for record in target.tail(from_offset=ends, partitions=chosen, idle_timeout_s=idle_timeout):
                _print_record(output, record)


def _print_record(output: Output, record: Any) -> None:
    row = {"partition": record.partition, "offset": record.offset, "timestamp": record.timestamp, "event": record.event}
    if output.json:
        print(to_json(row), flush=True)
    else:
        output.console.print(f"[dim]{record.timestamp:%Y-%m-%d %H:%M:%S.%f}[/dim] "
                             f"[cyan]p{record.partition}@{record.offset}[/cyan] {to_json(record.event)}")


# ---- get / select ---------------------------------------------------------------------------------

_OPS = ("get", "exists", "size", "keys", "values", "items", "slice", "contains")
_ABSENT = object()  # the default `get` answers with when nothing is stored (a stored value may be null)


class NothingStored(NotFound):
    """`headwater get` found nothing stored at its path: exit 2 (ExitCode.NOT_FOUND), like an unknown name."""

    def __init__(self, module: str, pstate: str, path: list[str]) -> None:
        self.kind, self.name, self.known = "value", " ".join(path), []
        where = f"at path {' '.join(path)} " if path else ""
        HeadwaterError.__init__(  # not NotFound's "no ... named": this is a missing value, not a wrong name
            self, f"nothing is stored {where}in PState {module}.{pstate}; to ask without failing, "
                  f"`--op exists` answers true or false")


@app.command()
@command
def get(
    module: str, pstate: str,
    path: Annotated[list[str] | None, typer.Argument(help="steps: map keys, list indexes, record fields")] = None,
    op: Annotated[str, typer.Option(help="get, exists, size, keys, values, items, slice or contains")] = "get",
    start: Annotated[str | None, typer.Option(help="range start (inclusive) or slice start")] = None,
    stop: Annotated[str | None, typer.Option(help="range stop (exclusive) or slice stop")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many elements")] = None,
    reverse: Annotated[bool, typer.Option(help="descending key order")] = False,
    element: Annotated[str | None, typer.Option(help="the element for --op contains")] = None,
    task: Annotated[int | None, typer.Option(help="the task to read (per-task PStates, whole maps)")] = None,
    url: Url = DEFAULT_URL, token: Token = None, json: Json = False, *, output: Output,
) -> None:
    """Read a PState at a path: `headwater get bank funds 1`, `headwater get registration users --op keys`."""
    if op not in _OPS:
        raise ValueError(f"--op {op!r} is not one of {', '.join(_OPS)}")
    with _client(url, token) as client:
        view = client.pstate(module, pstate, task=task)
        for step in path or []:
            view = view[_step(view.schema, step)]
        value = _run(view, op, start, stop, limit, reverse, element)
    if value is _ABSENT:
        raise NothingStored(module, pstate, path or [])
    output.value(value)


def _step(schema: Any, text: str) -> Any:
    """A command-line step as the schema's key type ("7" is an int key of Map(int, ...), a str of Map(str, ...))."""
    from headwater.schema import List, Map, Set
    from headwater.server.paths import convert_key

    if isinstance(schema, (Map, Set)):
        key_type = schema.key_type if isinstance(schema, Map) else schema.element_type
        return convert_key(text if key_type is not Any else parse_value(text), key_type)
    if isinstance(schema, List):
        return convert_key(text, int)
    return text


def _run(view: Any, op: str, start: str | None, stop: str | None, limit: int | None, reverse: bool,
         element: str | None) -> Any:
    if op in ("keys", "values", "items"):
        bound = functools.partial(_step, view.schema)
        return getattr(view, op)(None if start is None else bound(start), None if stop is None else bound(stop),
                                 limit=limit, reverse=reverse)
    if op == "slice":
        return view.slice(None if start is None else int(start), None if stop is None else int(stop))
    if op == "contains":
        if element is None:
            raise ValueError("--op contains needs --element")
        return view.contains(_step(view.schema, element))
    if op == "get":
        return view.get(_ABSENT)
    return getattr(view, op)()


@app.command()
@command
def select(
    module: str, pstate: str,
    navigators: Annotated[list[str], typer.Argument(help='keys and navigators: ALL, MAP_KEYS, MAP_VALS, FIRST, '
                                                         'LAST, SIZE, must:KEY, nth:I, range:START:STOP, or '
                                                         '{"nav": ...} JSON')],
    one: Annotated[bool, typer.Option("--one", help="select_one: exactly one result, else an error")] = False,
    task: Annotated[int | None, typer.Option(help="the task to read")] = None,
    url: Url = DEFAULT_URL, token: Token = None, json: Json = False, *, output: Output,
) -> None:
    """Select with navigators: `headwater select bank outgoing 1 MAP_VALS`."""
    from urllib.parse import quote

    with _client(url, token) as client:
        client.pstate(module, pstate, task=task)  # NotFound with a suggestion, before anything else
        params: dict[str, Any] = {"path": to_json([_navigator(n) for n in navigators])}
        if task is not None:
            params["task"] = task
        op = "select_one" if one else "select"
        body = client.request("GET", f"/api/modules/{quote(module, safe='')}/pstates/{quote(pstate, safe='')}/{op}",
                              params=params)
        output.value(body["value"])


_PLAIN_NAVIGATORS = {"ALL": "all", "MAP_KEYS": "map_keys", "MAP_VALS": "map_vals", "FIRST": "first", "LAST": "last",
                     "SIZE": "size"}


def _navigator(text: str) -> Any:
    if text in _PLAIN_NAVIGATORS:
        return {"nav": _PLAIN_NAVIGATORS[text]}
    kind, _, rest = text.partition(":")
    if kind == "must" and rest:
        return {"nav": "must", "key": parse_value(rest)}
    if kind == "nth" and rest:
        return {"nav": "nth", "index": int(rest)}
    if kind == "range":
        start, _, stop = rest.partition(":")
        return {"nav": "range", "start": parse_value(start) if start else None,
                "stop": parse_value(stop) if stop else None}
    return parse_value(text)


# ---- query ----------------------------------------------------------------------------------------


@app.command()
@command
def query(
    module: str, name: str,
    args: Annotated[list[str] | None, typer.Argument(help="arguments: JSON values, or plain text for strings")] = None,
    url: Url = DEFAULT_URL, token: Token = None, json: Json = False, *, output: Output,
) -> None:
    """Invoke a query: `headwater query registration signups_on 2025-01-01`."""
    with _client(url, token) as client:
        output.value(client.query(module, name)(*[parse_value(a) for a in args or []]))


# ---- dead letters ---------------------------------------------------------------------------------


@app.command("dead-letters")
@command
def dead_letters(
    module: str, topology: str,
    action: Annotated[str,
                      typer.Argument(help="list, or retry (every dead letter, or the one given by --id)")] = "list",
    letter_id: Annotated[int | None, typer.Option("--id", help="retry only this dead letter")] = None,
    timeout: Annotated[float, typer.Option(help="seconds each retry may take")] = 30.0,
    url: Url = DEFAULT_URL, token: Token = None, json: Json = False, *, output: Output,
) -> None:
    """List a topology's dead letters, or retry them (exit 4 if any fails again)."""
    if action not in ("list", "retry"):
        raise ValueError(f"action {action!r} is not list or retry")
    with _client(url, token) as client:
        letters = client.dead_letters(module, topology)
        if action == "list":
            # Few, narrow columns, so that a table of 80 columns holds every id whole: the record's
            # place in tail's notation (p1@0), and what failed ("record": the topology's root handler,
            # or "hop STEP").
            output.table(f"dead letters of {module}.{topology}", ["id", "record", "failed in", "error", "attempts"],
                         [(d.id, f"p{d.partition}@{d.offset}", f"{d.kind} {d.step}" if d.step else d.kind, d.error_type,
                           d.attempts) for d in letters],
                         records=lambda: [_letter(d) for d in letters], whole=("id", "record"))
            return
        chosen = [d for d in letters if letter_id is None or d.id == letter_id]
        if letter_id is not None and not chosen:
            from headwater.errors import NotFound

            raise NotFound("dead letter", str(letter_id), [str(d.id) for d in letters],
                           where=f"topology {module}.{topology}")
        _retry_all(chosen, timeout, output)


def _letter(letter: Any) -> dict[str, Any]:
    return {k: getattr(letter, k) for k in ("id", "topology", "kind", "task", "partition", "offset", "step",
                                            "error_type", "traceback", "attempts")}


def _retry_all(letters: list[Any], timeout: float, output: Output) -> None:
    outcomes: list[dict[str, Any]] = []
    with _progress(output, len(letters), "retrying") as advance:
        for letter in letters:
            try:
                outcomes.append({"id": letter.id, "ok": True, "value": letter.retry(timeout=timeout)})
            except HandlerError as e:
                outcomes.append({"id": letter.id, "ok": False, "error": str(e).split("\n\nremote traceback:")[0]})
            advance(1)
    failed = [o for o in outcomes if not o["ok"]]
    if output.json:
        output.value(outcomes)
    else:
        output.console.print(f"retried {len(outcomes)}: {len(outcomes) - len(failed)} succeeded, "
                             f"{len(failed)} failed again")
        for outcome in failed:
            output.errors.print(f"  dead letter {outcome['id']}: {outcome['error']}")
    if failed:
        raise typer.Exit(ExitCode.HANDLER)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `headwater` console script."""
    app(args=argv, prog_name="headwater")
