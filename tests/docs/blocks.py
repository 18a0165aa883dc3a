"""The code blocks of a documentation page, as the tests run them.

A page's ```python blocks are executed and its ```pycon blocks are checked like doctests, top to
bottom in one namespace, so a later block uses what an earlier one defined. A block that is only a
snippet include (`--8<-- "path"` or `--8<-- "path:section"`, the pymdownx.snippets syntax the site
uses) runs the included file or section. An HTML comment on the line before a fence changes what
happens to it: `<!-- docs-test: skip -->` (shown, not run) and `<!-- docs-test: server -->` (run only
by the test that starts a server for it).
"""

from __future__ import annotations

import doctest
import linecache
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^```(\w+)[^\n]*$")
_MARKER = re.compile(r"^<!-- docs-test: (\w+) -->$")
_SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"$')


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the block's first code line
    language: str  # "python", "pycon", "console", "sh", ...
    marker: str  # "", "skip" or "server"
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of `page` that starts at the margin, in order, with snippets included."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i] == "```")
        previous = lines[index - 1] if index else ""
        marker = _MARKER.match(previous)
        code = "\n".join(lines[index + 1:end]) + "\n"
        found.append(Block(page, index + 2, fence.group(1), marker.group(1) if marker else "", _include(code)))
        index = end + 1
    return found


def _include(code: str) -> str:
    snippet = _SNIPPET.match(code.strip())
    if snippet is None:
        return code
    text = (ROOT / snippet.group(1)).read_text()
    section = snippet.group(2)
    if section is None:
        return text
    match = re.search(rf"# --8<-- \[start:{section}\]\n(.*?)# --8<-- \[end:{section}\]\n", text, re.S)
    assert match, f"no section {section!r} in {snippet.group(1)}"
    return match.group(1)


def page_namespace(page: Path) -> dict:
    """A fresh module for a page's blocks, in sys.modules so its classes pickle like any module's."""
    name = "docs_page_" + re.sub(r"\W", "_", str(page.relative_to(DOCS).with_suffix("")))
    module = types.ModuleType(name)
    sys.modules[name] = module
    return module.__dict__


def run(block: Block, namespace: dict) -> None:
    """Execute a python block, or check a pycon block's outputs; AssertionError names the line."""
    filename = f"<{block.where}>"
    # The engine reads handler source (to find which PStates each topology writes): keep it findable.
    source = block.code if block.language == "python" else _pycon_source(block.code)
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    if block.language == "python":
        exec(compile(block.code, filename, "exec"), namespace)
        return
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.code, namespace, block.where, filename, block.line - 1)
    test.globs = namespace  # share names with the rest of the page (get_doctest copied them)
    output: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test, out=output.append, clear_globs=False)
    assert result.failed == 0, "".join(output)


def _pycon_source(code: str) -> str:
    return "".join(line[4:] + "\n" for line in code.splitlines() if line.startswith((">>> ", "... ")))
