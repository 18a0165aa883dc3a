"""How the CLI speaks: exit codes scripts can rely on, rich tables for people, JSON for scripts."""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import msgspec
from rich.console import Console
from rich.json import JSON
from rich.table import Table

from headwater.errors import (
    AckTimeout,
    HandlerError,
    HeadwaterError,
    IdempotencyConflict,
    NotFound,
    PathError,
    PermissionDenied,
    ReadOnlyError,
    SchemaError,
    Unavailable,
)

__all__ = ["ExitCode", "Output", "exit_code_for", "to_json"]


class ExitCode(enum.IntEnum):
    """The documented exit codes of every `headwater` command."""

    OK = 0
    USAGE = 1  # bad arguments or options, or a server that cannot start
    NOT_FOUND = 2  # unknown module, depot, PState, query, topology or dead letter; `get` found nothing stored
    INVALID = 3  # the event, path or argument does not fit its schema; bad JSON
    HANDLER = 4  # user code raised (a topology, a query, a retried dead letter)
    TIMEOUT = 5  # no ack in time (the event is durable and still processing)
    UNAVAILABLE = 6  # the server cannot be reached or cannot serve now
    DENIED = 7  # missing or invalid token, or the token lacks the scope


# Most specific first: the first class the error is an instance of decides.
_CODES: list[tuple[type[BaseException], ExitCode]] = [
    (NotFound, ExitCode.NOT_FOUND),
    (SchemaError, ExitCode.INVALID),
    (PathError, ExitCode.INVALID),
    (IdempotencyConflict, ExitCode.INVALID),
    (ReadOnlyError, ExitCode.INVALID),
    (HandlerError, ExitCode.HANDLER),
    (AckTimeout, ExitCode.TIMEOUT),
    (Unavailable, ExitCode.UNAVAILABLE),
    (PermissionDenied, ExitCode.DENIED),
    (ValueError, ExitCode.USAGE),
]


def exit_code_for(error: BaseException) -> ExitCode:
    return next((code for cls, code in _CODES if isinstance(error, cls)), ExitCode.UNAVAILABLE
                if not isinstance(error, HeadwaterError) else ExitCode.USAGE)


def _fallback(value: Any) -> Any:
    return repr(value)


_encoder = msgspec.json.Encoder(enc_hook=_fallback)


def to_json(value: Any) -> str:
    return _encoder.encode(value).decode()


class Output:
    """Writes results as rich text for a terminal, or as one JSON document per result with --json."""

    def __init__(self, json: bool) -> None:
        self.json = json
        self.console = Console(highlight=False, soft_wrap=True)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    def value(self, value: Any, *, title: str | None = None) -> None:
        if self.json:
            print(to_json(value))
            return
        if title:
            self.console.print(f"[bold]{title}[/bold]")
        if isinstance(value, (dict, list)):
            self.console.print(JSON(to_json(value)))
        else:
            self.console.print(repr(value) if not isinstance(value, str) else value)

    def table(self, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
              records: Callable[[], Any] | None = None, *, whole: Collection[str] = ()) -> None:
        """A table for people; with --json, `records()` (or the rows as objects) instead.

        To fit the terminal, cells fold onto more lines, never into an ellipsis; headers stay on one
        line, and the cells of the `whole` columns (ids a person copies) are never folded or cut.
        """
        rows = list(rows)
        if self.json:
            print(to_json(records() if records else [dict(zip(columns, row, strict=True)) for row in rows]))
            return
        cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
        table = Table(title=title, title_justify="left", header_style="bold")
        for i, column in enumerate(columns):
            widest = max((len(row[i]) for row in cells), default=0) if column in whole else 0
            table.add_column(column, justify="right" if column in _NUMERIC else "left", overflow="fold",
                             no_wrap=column in whole, min_width=max(len(column), widest))
        for row in cells:
            table.add_row(*row)
        self.console.print(table)

    def error(self, error: BaseException) -> None:
        name = type(error).__name__
        if self.json:
            print(to_json({"error": name, "message": str(error)}), file=sys.stderr)
        else:
            self.errors.print(f"[bold red]{name}[/bold red]: {error}", markup=True)


_NUMERIC = {"tasks", "partition", "partitions", "offset", "records", "processed", "lag", "dead letters", "attempts",
            "id", "appended", "ack p50 ms", "ack p99 ms", "end offset"}


def example_value(schema: dict[str, Any], definitions: dict[str, Any], depth: int = 0) -> Any:
    """A plausible value for a JSON Schema, to show in the `headwater serve` banner's curl example."""
    if "$ref" in schema and depth < 5:
        return example_value(definitions.get(schema["$ref"].rsplit("/", 1)[-1], {}), definitions, depth + 1)
    kind = schema.get("type")
    if kind == "object":
        return {name: example_value(field, definitions, depth + 1)
                for name, field in schema.get("properties", {}).items()}
    if kind == "array":
        return [example_value(schema.get("items", {}), definitions, depth + 1)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "string":
        return {"uuid": "8a5e3a6c-6f0b-4d38-9f1e-2b7c1d0e9a41", "date-time": "2025-01-01T00:00:00Z",
                "date": "2025-01-01"}.get(schema.get("format", ""), "example")
    return None
