"""Every Python block in the prose pages (README.md, CONTRIBUTING.md, book/*.md) is code a reader can copy.

Each block compiles, every `import` in it resolves, and every attribute it reads off an imported kqlib module
(`kqlib.runs.ray_pool.last_run`, `kqlib.hooks.scale_neurons`, ...) exists: a page that prints a script
importing a module that was moved or removed fails here. Blocks that are exercise templates of an assignment
(they contain `YOUR CODE HERE` or a `hidden-check` tag) are fragments by design and only compiled. The README's
quick-start block is also executed on the embedded model (slow)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "book").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
    for page in PAGES:
        for i, m in enumerate(FENCE.finditer(page.read_text())):
            yield pytest.param(page, m.group(1), id=f"{page.relative_to(REPO)}#{i}")


BLOCKS = list(_blocks())


def _template(code: str) -> bool:
    return "YOUR CODE HERE" in code or "hidden-check" in code


def _resolve(dotted: str):
    """Import the longest module prefix of ``dotted`` and getattr the rest; AssertionError naming what is missing."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for j, name in enumerate(parts[cut:], start=cut):
            assert hasattr(obj, name), f"{'.'.join(parts[:j])} has no attribute {name!r}"
            obj = getattr(obj, name)
        return obj
    raise AssertionError(f"no module {parts[0]!r}")


def _dotted(node) -> str | None:
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(names)])
    return None


def test_the_prose_has_python_blocks():
    assert len(BLOCKS) >= 4, [b.id for b in BLOCKS]


@pytest.mark.parametrize("page,code", BLOCKS)
def test_block_compiles_and_its_imports_and_kqlib_names_resolve(page, code):
    tree = ast.parse(code, filename=str(page))
    if _template(code):
        return
    bound = {}  # name in the block -> the dotted kqlib path it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "kqlib":
                    _resolve(a.name)
                    bound[a.asname or a.name.split(".")[0]] = a.asname and a.name or a.name.split(".")[0]
                else:
                    importlib.util.find_spec(a.name.split(".")[0]) or pytest.fail(f"{page.name}: no module {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kqlib":
            for a in node.names:
                _resolve(f"{node.module}.{a.name}")
                bound[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            dotted = _dotted(node)
            if dotted and dotted.split(".")[0] in bound:
                _resolve(bound[dotted.split(".")[0]] + dotted[len(dotted.split(".")[0]):])


def test_the_checker_catches_a_moved_module():
    """The check above can fail: the scale.md snippet as it was before the layout change (`from kqlib import distributed`) does."""
    with pytest.raises(AssertionError, match="distributed"):
        _resolve("kqlib.distributed.last_run")
    with pytest.raises(AssertionError, match="no attribute 'nope'"):
        _resolve("kqlib.runs.ray_pool.nope")


@pytest.mark.slow
def test_readme_quick_start_runs(capsys):
    code = FENCE.search((REPO / "README.md").read_text()).group(1)
    assert "kqlib.load(" in code
    exec(compile(code, "README.md", "exec"), {})
    p = float(capsys.readouterr().out.strip().split()[-1].strip("()tensor,"))
    assert 0.0 < p <= 1.0
