"""kqlib's shape: imports only go downward through the layers, no import cycle, no module over 450 lines, and an
import inside a function says why it is not at the top (``# heavy:``, ``# optional:`` or ``# cycle:``).

core <- attribution <- runs <- paper <- book / teaching <- cli, commands, bench (errors is below everything).
Imports inside functions count too. This is what let two copies of one concept drift apart before (a cache key
derived in three modules, ``batch`` <-> ``distributed`` importing each other)."""

import ast
import io
import pathlib
import tokenize

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


# ------------------------------------------------------------------------------- imports inside functions
# An import sits at the top of its module unless it is heavy, optional or would close an import cycle; then it
# says which, in a comment on its line or on the comment line(s) right above it (or above the run of imports it
# belongs to): `# heavy: <why>`, `# optional: <package> (<when it is needed>)` or `# cycle: <modules>`.
REASONS = ("# heavy:", "# optional:", "# cycle:")
FUNCTION_IMPORTS_EXEMPT: tuple[str, ...] = ()  # paths under kqlib/ exempt from the rule (none)


def _comments(text: str) -> dict[int, tuple[str, bool]]:
    """line -> (comment, the line holds nothing but the comment)."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = (tok.string, not tok.line[: tok.start[1]].strip())
    return out


def _says_why(comment: str) -> bool:
    return any(comment.startswith(r) and comment[len(r):].strip() for r in REASONS)


def _unexplained_function_imports(path: pathlib.Path) -> list[str]:
    text = path.read_text()
    comments = _comments(text)
    bad, seen = [], set()
    for fn in ast.walk(ast.parse(text)):  # outer functions come first: a nested import is named by its outer one
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        imports = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)) and n.lineno not in seen]
        seen.update(n.lineno for n in imports)
        spanned = {line for n in imports for line in range(n.lineno, n.end_lineno + 1)}
        for node in imports:
            if _says_why(comments.get(node.lineno, ("", False))[0]):
                continue
            line = node.lineno - 1
            while line in spanned and not comments.get(line, ("", False))[1]:  # up through the run of imports
                line -= 1
            above = []
            while comments.get(line, ("", False))[1]:  # the comment lines right above
                above.append(comments[line][0])
                line -= 1
            if not any(_says_why(c) for c in above):
                bad.append(f"{path.relative_to(KQLIB)}:{node.lineno} in {fn.name}(): {ast.unparse(node)}")
    return bad


CHECKED = [p for p in FILES if not p.relative_to(KQLIB).as_posix().startswith(FUNCTION_IMPORTS_EXEMPT)]


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(KQLIB)))
def test_imports_inside_functions_say_why(path):
    bad = _unexplained_function_imports(path)
    assert not bad, ("imports inside a function without `# heavy: ...`, `# optional: ...` or `# cycle: ...` "
                     "(move them to the top of the module, or say why not):\n  " + "\n  ".join(bad))


# ------------------------------------------------------------------------------- rooms inside kqlib.book
# run/ (runner, resume, progress) is the top of the book layer; site/ (HTML build, explorer, data export) and
# the notebook API (chapter.py) sit below it; chapters/ (one module per notebook) is imported by notebooks only;
# claims/ (claims.toml, verdicts, scorecard) sits below everything that judges or shows a claim.
BOOK_ROOMS_NOT_IMPORTING = {
    "kqlib.book.claims": ("kqlib.book.run", "kqlib.book.site.html", "kqlib.book.chapters", "kqlib.book.chapter"),
    "kqlib.book.chapters": ("kqlib.book.run", "kqlib.book.site.html", "kqlib.book.chapter"),
    "kqlib.book.site.html": ("kqlib.book.run", "kqlib.book.chapters"),
    "kqlib.book.chapter": ("kqlib.book.run", "kqlib.book.chapters"),
    "kqlib.book.report": ("kqlib.book.run", "kqlib.book.site.html", "kqlib.book.chapters"),
    "kqlib.book.figures": ("kqlib.book.run", "kqlib.book.site.html", "kqlib.book.chapters"),
}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(KQLIB)))
def test_book_rooms(path):
    me = _module(path)
    for room, banned in BOOK_ROOMS_NOT_IMPORTING.items():
        if _in(me, room):
            bad = sorted(t for t in _imports(path) for b in banned if _in(t, b))
            assert not bad, f"{me} (room {room}) imports {bad}: see the rooms above"
    if _in(me, "kqlib.book.chapters"):  # a chapter module never imports another chapter's module
        others = sorted(t for t in _imports(path) if _in(t, "kqlib.book.chapters") and t != me)
        assert not others, f"{me} imports another chapter's module {others}: move what they share below chapters/"


def test_only_notebooks_import_chapter_modules():
    for path in FILES:
        me = _module(path)
        if _in(me, "kqlib.book.chapters"):
            continue
        users = sorted(t for t in _imports(path) if _in(t, "kqlib.book.chapters"))
        assert not users, f"{me} imports {users}: chapter modules belong to their notebooks"


@pytest.mark.parametrize("path", sorted((KQLIB / "paper").glob("*.py")), ids=lambda p: p.name)
def test_paper_layer_has_no_figures_and_no_claims(path):
    text = path.read_text()
    for banned in ("matplotlib", "seaborn", ".claim("):
        assert banned not in text, f"kqlib/paper/{path.name} uses {banned!r}: figures and claims live in the chapter modules"


NOTEBOOKS = sorted((KQLIB.parent / "book").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_imports_only_chapter_and_its_own_module(path):
    """A notebook imports Chapter and its own chapter module (kqlib/book/chapters/chNN_<notebook name>.py)."""
    own = f"kqlib.book.chapters.ch{path.stem}"
    assert (KQLIB / "book" / "chapters" / f"ch{path.stem}.py").exists(), f"{path.name} has no chapter module {own}"
    for target in _imports(path):
        assert target in ("kqlib.book.chapter", "kqlib.book.chapters", own), (
            f"book/{path.name} imports {target}: a notebook imports only Chapter and {own}")


@pytest.mark.parametrize("path", sorted((KQLIB / "book" / "chapters").glob("ch*.py")), ids=lambda p: p.name)
def test_chapter_modules_never_hold_the_chapter(path):
    """A chapter module takes frames, models and values and returns frames, figures and claim measurements
    (kqlib.book.claims.verdicts.measurement); the notebook judges them with ch.claims_from. No function of it
    receives the Chapter (`ch`) or calls ch.claim / ch.localize / ch.models back up."""
    tree = ast.parse(path.read_text())
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
            assert "ch" not in names, f"{path.name}:{fn.lineno} {fn.name}() receives the Chapter"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ch":
            pytest.fail(f"{path.name}:{node.lineno} uses ch.{node.attr}")


@pytest.mark.parametrize("path", sorted((KQLIB / "book" / "chapters").glob("ch*.py")), ids=lambda p: p.name)
def test_chapter_modules_take_plain_values_not_the_parameter_namespace(path):
    """A chapter module's function takes the values it reads as keyword-only parameters named as the chapter's
    parameters (``*, cs_kind, n_boot, seed``), which the notebook fills with ``ch.call(K.fn, ...)``; none takes
    the parameter namespace ``p`` (``ch.p``)."""
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = fn.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x is not None]
            where = f"{path.name}:{fn.lineno} {getattr(fn, 'name', 'lambda')}()"
            assert "p" not in names, f"{where} takes the parameter namespace p: take the values it reads instead"
