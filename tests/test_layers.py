"""kqlib's shape: imports only go downward through the layers, no import cycle, no module over 450 lines.

core <- attribution <- runs <- paper <- book / teaching <- cli, commands, bench (errors is below everything).
Imports inside functions count too. This is what let two copies of one concept drift apart before (a cache key
derived in three modules, ``batch`` <-> ``distributed`` importing each other)."""

import ast
import pathlib

import pytest

KQLIB = pathlib.Path(__file__).resolve().parents[1] / "kqlib"
RANK = {"errors": 0, "core": 1, "attribution": 2, "runs": 3, "paper": 4, "book": 5, "teaching": 5}
TOP = 6  # kqlib/cli.py, cli_args.py, commands.py, kqlib/bench/ and the package's __init__


def _module(path: pathlib.Path) -> str:
    parts = path.relative_to(KQLIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[-1] == "commands":  # the package itself; command-line modules (kq subcommands)
        return TOP  # the kqlib package itself (its __init__ gathers the public API)
    return RANK.get(parts[1], TOP)


def _imports(path: pathlib.Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("kqlib"):
            out.add(node.module)
            for alias in node.names:  # `from kqlib.paper import stats` imports the module kqlib.paper.stats
                if (KQLIB.parent / (node.module.replace(".", "/") + "/" + alias.name + ".py")).exists():
                    out.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level:
            out.add("<relative>")
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("kqlib")}
    return out


FILES = sorted(KQLIB.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(KQLIB)))
def test_imports_go_downward(path):
    me = _module(path)
    for target in _imports(path):
        assert target != "<relative>", f"{me}: use absolute kqlib.* imports"
        if target == "kqlib" and me.startswith("kqlib."):
            continue  # `import kqlib` for kqlib.__file__ / the public API at call time
        if me == "kqlib" or _rank(me) == TOP:
            continue
        assert _rank(target) <= _rank(me), f"{me} (layer {_rank(me)}) imports {target} (layer {_rank(target)})"


def test_no_import_cycle():
    graph = {_module(p): {t for t in _imports(p) if t not in ("kqlib", "<relative>", _module(p))} for p in FILES}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt in graph and not state.get(nxt):
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in graph:
        if not state.get(node):
            visit(node, [node])


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(KQLIB)))
def test_no_module_over_450_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= 450, f"{path.relative_to(KQLIB)} has {n} lines: split it by idea"
