"""Every page's Python blocks run and every `>>>` output is what the code prints (see blocks.py)."""

from __future__ import annotations

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
    assert len(PAGES) >= 1, [str(p) for p in PAGES]
