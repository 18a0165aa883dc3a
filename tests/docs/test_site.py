"""The documentation site builds with `mkdocs build --strict`: a broken link, a missing page in the
nav or an API reference to a name that does not exist fails the test suite, not a reader."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.docs.blocks import ROOT

pytest.importorskip("mkdocs", reason="the docs extra is not installed: run `make install` (or make test)")
pytest.importorskip("mkdocstrings", reason="the docs extra is not installed: run `make install` (or make test)")


def test_the_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert (tmp_path / "site" / "reference" / "api.html").is_file()


def test_the_api_reference_covers_every_public_name():
    import headwater as hw

    reference = (ROOT / "docs" / "reference" / "api.md").read_text()
    missing = [name for name in hw.__all__ if f"::: headwater.{name}\n" not in reference]
    assert not missing, (f"docs/reference/api.md lacks {missing}: add a `::: headwater.NAME` entry for each "
                         "(and say what it is in the guides)")
