"""`python -m examples.tour` runs beside `make run`, and a data directory in use is a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import headwater as hw
from examples.registration import registration
from headwater.server.run import deploy_all, load_modules

ROOT = Path(__file__).parents[2]
TOUR_TIMEOUT_S = 120


def tour(cwd: Path, *args: str, temporary: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temporary)}
    return subprocess.run([sys.executable, "-m", "examples.tour", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=TOUR_TIMEOUT_S)


def test_the_tour_runs_while_make_run_serves_dot_data(tmp_path: Path) -> None:
    work, temporary = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    temporary.mkdir()
    # What `make run` holds open: the modules of examples/app.py in ./data.
    with hw.InProcessCluster(work / "data") as served:
        deploy_all(served, load_modules(ROOT / "examples" / "app.py"), tasks=4)
        first = tour(work, temporary=temporary)
        assert first.returncode == 0, first.stderr
        assert f"data in {str(temporary / 'headwater-tour')!r}" in first.stdout  # it says where
        second = tour(work, temporary=temporary)
        assert second.returncode == 0, second.stderr
    registered = next(line for line in second.stdout.splitlines() if "['register']" in line)
    assert registered.endswith("-> True")  # already registered: its own data survived the first run


def test_a_tour_on_a_directory_in_use_names_the_process_holding_it(tmp_path: Path) -> None:
    with hw.InProcessCluster(tmp_path / "data") as holder:
        holder.deploy(registration, tasks=2)
        result = tour(tmp_path, "--data", str(tmp_path / "data"), temporary=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert "locked by" in result.stderr and "another data directory" in result.stderr and "--data" in result.stderr
    if sys.platform == "linux":
        assert f"process {os.getpid()}" in result.stderr
