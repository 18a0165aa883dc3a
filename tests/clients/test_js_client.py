"""The JavaScript client (`clients/js`): built with tsc and tested with node's test runner against a
real server this interpreter runs (`HEADWATER_PYTHON`). Skips, saying why, where node or npm is
missing; `make test` installs them when it can."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "js"
UI_CLIENT = Path(__file__).resolve().parents[2] / "headwater" / "server" / "ui" / "client"
NODE_MAJOR_MIN = 20  # node --test with its reporters, fetch and AbortSignal
INSTALL_TIMEOUT_S = 300.0  # npm ci: fetching typescript and ws the first time
BUILD_TIMEOUT_S = 120.0
TEST_TIMEOUT_S = 180.0


def _node_major(node: str) -> int:
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    return int(version.lstrip("v").split(".")[0]) if version.startswith("v") else 0


def _run(args: list[str], timeout_s: float, env: dict[str, str] | None = None) -> None:
    try:
        done = subprocess.run(args, cwd=CLIENT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"")[-6000:]
        pytest.fail(f"`{' '.join(args)}` in clients/js took more than {timeout_s} s:\n{output!r}")
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(args)}` in clients/js failed ({done.returncode}):\n"
                    f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}")


def _installed() -> bool:
    """Whether node_modules holds what package-lock.json asks for (npm writes its own copy of the lock there)."""
    mine = CLIENT / "node_modules" / ".package-lock.json"
    return mine.exists() and mine.stat().st_mtime >= (CLIENT / "package-lock.json").stat().st_mtime


def _ready() -> str:
    """npm, with node new enough and the client's dev dependencies installed; skips where node is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the JavaScript client's tests need node and npm (apt-get install nodejs npm; `make test` "
                    "installs them as root or with passwordless sudo)")
    if _node_major(node) < NODE_MAJOR_MIN:
        pytest.skip(f"the JavaScript client's tests need node {NODE_MAJOR_MIN} or later")
    if not _installed():
        _run([npm, "ci", "--no-audit", "--no-fund"], INSTALL_TIMEOUT_S)
    return npm


def test_the_javascript_client_against_a_real_server() -> None:
    npm = _ready()
    _run([npm, "run", "build"], BUILD_TIMEOUT_S)
    _run([npm, "test"], TEST_TIMEOUT_S, env={**os.environ, "HEADWATER_PYTHON": sys.executable})


def test_the_web_ui_copy_of_the_client_is_what_its_sources_build(tmp_path: Path) -> None:
    """The web UI serves the client as browser ES modules checked in under headwater/server/ui/client
    (`npm run build:ui`), so `make run` needs no node; building them again must give the same bytes."""
    npm = _ready()
    _run([npm, "exec", "--", "tsc", "-p", "tsconfig.browser.json", "--outDir", str(tmp_path)], BUILD_TIMEOUT_S)
    built = {path.name: path.read_bytes() for path in tmp_path.glob("*.js")}
    checked_in = {path.name: path.read_bytes() for path in UI_CLIENT.glob("*.js")}
    assert sorted(built) == sorted(checked_in), "files differ: run `npm run build:ui` in clients/js and commit"
    stale = [name for name in built if built[name] != checked_in[name]]
    assert not stale, f"{stale} differ from what clients/js/src builds: run `npm run build:ui` in clients/js and commit"
