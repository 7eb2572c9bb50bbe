import os
import pathlib
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# tests mirror the package (tests/core, attribution, runs, paper, book, chapters, cli); shared helpers
# (tiny models, chapter checks) are in tests/helpers; a test module may import another's fixtures by name
TESTS = pathlib.Path(__file__).parent
for _folder in [TESTS / "helpers", *sorted(p for p in TESTS.iterdir() if p.is_dir() and p.name != "helpers")]:
    sys.path.insert(0, str(_folder))

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M (converted once into the user cache; ~1-5 s per later load)."""
    import kqlib

    return kqlib.load("smollm2-135m")
