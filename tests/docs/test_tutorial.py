"""The tutorial's shell session is true: `headwater serve social.py` runs, and each curl command and
`hw.connect` block marked `docs-test: server` answers exactly what the page shows.

(The tutorial's module and its tests are docs/tutorial/social.py and test_social.py, which pytest
collects from docs/tutorial; its Python blocks run in test_pages.py.)
"""

from __future__ import annotations

import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.blocks import DOCS, blocks
from tests.server.support import start_serving

PAGE = DOCS / "tutorial" / "index.md"
SHOWN_URLS = ("localhost:8000", "127.0.0.1:8000")


def commands(console: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs of a console block: `$ ` lines, `\\` continuations, output."""
    pairs: list[tuple[str, list[str]]] = []
    continued = False
    for line in console.splitlines():
        if line.startswith("$ ") or continued:
            text = line[2:] if line.startswith("$ ") and not continued else line
            if continued:
                pairs[-1] = (pairs[-1][0] + "\n" + text, pairs[-1][1])
            else:
                pairs.append((text, []))
            continued = line.endswith("\\")
        else:
            pairs[-1][1].append(line)
    return [(command, "\n".join(output)) for command, output in pairs]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(command: str, data: Path, port: int) -> subprocess.Popen[str]:
    argv = shlex.split(command)
    assert argv[:2] == ["headwater", "serve"], command
    argv = [sys.executable, "-m", "headwater.cli", *argv[1:], "--data", str(data), "--port", str(port)]
    return start_serving(argv, port, cwd=PAGE.parent, what=command)


def local(text: str, port: int) -> str:
    for shown in SHOWN_URLS:
        text = text.replace(shown, f"127.0.0.1:{port}")
    return text


@pytest.mark.skipif(shutil.which("curl") is None, reason="the tutorial's HTTP session uses curl, which is not installed")
def test_the_http_session_of_the_tutorial_answers_what_it_shows(tmp_path, monkeypatch):
    server_blocks = [b for b in blocks(PAGE) if b.marker == "server"]
    (start, _), = commands(server_blocks[0].code)
    port = free_port()
    process = serve(start, tmp_path / "data", port)
    monkeypatch.syspath_prepend(str(PAGE.parent))
    try:
        for block in server_blocks[1:]:
            if block.language == "python":
                exec(compile(local(block.code, port), f"<{block.where}>", "exec"), {"__name__": "tutorial_client"})
                continue
            for command, expected in commands(block.code):
                run = subprocess.run(["bash", "-c", local(command, port)], capture_output=True, text=True, timeout=30)
                assert run.returncode == 0, f"{block.where}: {command}\n{run.stderr}"
                assert run.stdout.strip() == expected.strip(), f"{block.where}: {command}"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
