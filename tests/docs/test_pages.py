"""Every page's Python blocks run and every `>>>` output is what the code prints (see blocks.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import headwater as hw
from tests.docs.blocks import DOCS, blocks, page_namespace, run

RUNNABLE = ("python", "pycon")
PAGES = sorted(page for page in DOCS.rglob("*.md")
               if any(b.language in RUNNABLE and b.marker == "" for b in blocks(page)))


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_the_code_on_the_page_runs(page, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a page that keeps data in ./data leaves nothing in the checkout
    monkeypatch.syspath_prepend(str(page.parent))  # like a reader's working directory: social.py imports
    namespace = page_namespace(page)
    try:
        for block in blocks(page):
            if block.language in RUNNABLE and block.marker == "":
                run(block, namespace)
    finally:
        for value in list(namespace.values()):
            if isinstance(value, hw.InProcessCluster):
                value.close()
        sys.modules.pop(namespace["__name__"], None)


def test_pages_have_code_to_check():
    assert len(PAGES) >= 12, [str(p) for p in PAGES]


def test_every_option_a_page_gives_headwater_serve_exists():
    shown = {option for page in DOCS.rglob("*.md") for block in blocks(page) if block.language == "console"
             for line in block.code.splitlines() if line.startswith("$ headwater serve")
             for option in re.findall(r"\s(--[a-z-]+)", line)}
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}
    help_text = subprocess.run([sys.executable, "-m", "headwater.cli", "serve", "--help"], capture_output=True,
                               text=True, env=env, timeout=60).stdout
    assert shown and not [option for option in shown if option not in help_text], help_text


def test_the_tests_of_the_testing_how_to_pass_under_pytest(tmp_path):
    page = DOCS / "how-to" / "testing.md"
    code = "\n\n".join(b.code for b in blocks(page) if b.language == "python" and b.marker == "")
    (tmp_path / "test_how_to.py").write_text(code)
    expected = code.count("\ndef test_")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error",
                          str(tmp_path / "test_how_to.py")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and f"{expected} passed" in run.stdout, run.stdout + run.stderr
