"""A locked data directory is a clear StorageError: who holds it, and what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from headwater.errors import StorageError
from headwater.storage.rocks import RocksStore

HOLD = """
import sys
from headwater.storage.rocks import RocksStore
store = RocksStore(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_store_another_process_holds_names_that_process_and_what_to_do(tmp_path: Path) -> None:
    script = tmp_path / "hold_store.py"
    script.write_text(HOLD)
    # Popen as a context manager closes its pipes and waits: closing stdin lets the holder end.
    with subprocess.Popen([sys.executable, str(script), str(tmp_path / "store")], cwd=Path(__file__).parents[2],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StorageError) as raised:
            RocksStore(tmp_path / "store")
    message = str(raised.value)
    assert repr(str(tmp_path / "store")) in message and "locked by" in message
    if sys.platform == "linux":
        assert f"process {holder.pid} (" in message and f"{script} " in message  # its command line
        assert f"kill {holder.pid}" in message
    assert "another data directory" in message
    RocksStore(tmp_path / "store").close()  # the holder is gone: it opens


def test_a_store_this_process_holds_says_so(tmp_path: Path) -> None:
    first = RocksStore(tmp_path / "store")
    try:
        with pytest.raises(StorageError, match=f"already open in this process \\(pid {os.getpid()}\\)"):
            RocksStore(tmp_path / "store")
        assert first.reader("meta").get(b"k") is None  # the failed open left the first store working
    finally:
        first.close()
