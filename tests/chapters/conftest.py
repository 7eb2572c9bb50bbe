"""Copies of the book in which two chapters ran with the smoke profile (one `kq run` each), shared by the test files
of both chapters: 02 runs after 01 in the same copy (it reuses 01's cached attributions, as in `kq book`), and 03
and 04 run together."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_book import REPO, _book

CHAPTERS_01_02 = {"01": "01_kl_reexamination", "02": "02_consistency_violins"}
CHAPTERS_03_04 = {"03": "03_query_kn_mapping", "04": "04_dynamic_kn_selection"}


def _run(tmp: Path, chapters: dict[str, str], env: dict | None = None, parsed: bool = False) -> Path:
    root = _book(tmp, {f"{name}.py": (REPO / "book" / f"{name}.py").read_text() for name in chapters.values()})
    kq = Path(sys.executable).with_name("kq")
    for prefix, name in chapters.items():
        proc = subprocess.run([str(kq), "run", prefix, "--profile", "smoke", "--root", str(root)],
                              capture_output=True, text=True, timeout=1800, env=env)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert f"book/{name}.py: done" in proc.stdout
        if parsed:
            assert "Unable to parse" not in proc.stdout + proc.stderr  # papermill reads every parameter line
    return root


@pytest.fixture(scope="session")
def book12(tmp_path_factory):
    """Chapters 01 and 02 executed with the smoke profile, in one copy of the book."""
    # one intra-op thread per process: on a small shared machine more threads only oversubscribe the cores
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return _run(tmp_path_factory.mktemp("book12"), CHAPTERS_01_02, env)


@pytest.fixture(scope="session")
def book34(tmp_path_factory):
    """Chapters 03 and 04 executed with the smoke profile, in one copy of the book. They reuse the attributions
    of chapter 01 through the on-disk cache when it ran before with the same profile; from an empty cache they
    compute the IG attributions they need themselves."""
    return _run(tmp_path_factory.mktemp("book34"), CHAPTERS_03_04, parsed=True)
