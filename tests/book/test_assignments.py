"""Classroom assignments: ``kq assignments`` (student / instructor notebooks) and ``kq grade``.

The fast tests only build notebooks; the ``book``-marked ones execute notebooks in a python3 kernel
(about 15-35 s each on a quiet 2-core machine).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from kqlib.teaching import assignments as asg
from kqlib import cli

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted((REPO / "book" / "assignments").glob("[0-9]*.py"))
NAMES = [p.stem for p in SOURCES]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignments")
    assert cli.main(["assignments", "--out", str(out), "--source", str(REPO / "book" / "assignments")]) == 0
    return out


def _kq(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ------------------------------------------------------------------------------------------- building


def test_at_least_three_assignments_with_checks():
    assert len(SOURCES) >= 3
    for path in SOURCES:
        a = asg.load_assignment(path)
        assert a.checks and a.solutions and a.total > 0
        assert any(c.hidden for c in a.checks), f"{path.name} has no hidden check"
        assert set(a.solutions) <= set(a.questions)


def test_build_writes_both_versions_for_every_source(built):
    for name in NAMES:
        for version in ("student", "instructor"):
            path = built / version / f"{name}.ipynb"
            assert path.exists(), path
            nb = nbformat.read(path, as_version=4)
            nbformat.validate(nb)
            assert nb.metadata["kq_assignment"] == name
            assert nb.metadata["kq_version"] == version
            assert nb.metadata["kernelspec"]["name"] == "python3"
            assert "jupytext" not in nb.metadata
            for cell in nb.cells:
                if cell.cell_type == "code":
                    assert cell.outputs == [] and cell.execution_count is None


def _solution_lines(source: Path) -> list[str]:
    """Every line between the solution markers of the source (code and markdown regions alike)."""
    lines, inside = [], False
    for raw in source.read_text().splitlines():
        if re.match(r"^\s*#*\s*### BEGIN SOLUTION", raw):
            inside = True
        elif re.match(r"^\s*#*\s*### END SOLUTION", raw):
            inside = False
        elif inside:
            text = raw.strip()
            if text.startswith("# ") and not raw.startswith(" "):  # markdown lines are '# text' in the .py
                text = text[2:]
            if any(ch.isalnum() for ch in text):  # a line of brackets alone gives nothing away
                lines.append(text.strip())
    return lines


@pytest.mark.parametrize("source", SOURCES, ids=NAMES)
def test_student_version_has_no_solution_text(built, source):
    raw = (built / "student" / f"{source.stem}.ipynb").read_text()
    nb = nbformat.reads(raw, as_version=4)
    sources = "\n".join(c.source for c in nb.cells)
    lines = _solution_lines(source)
    assert len(lines) >= 5
    for line in lines:
        escaped = json.dumps(line, ensure_ascii=False)[1:-1]
        assert escaped not in raw and line not in sources, f"solution line left in the student notebook: {line!r}"
    assert "BEGIN SOLUTION" not in raw and "END SOLUTION" not in raw
    assert "# YOUR CODE HERE" in sources and "your code here" in sources
    # the instructor version keeps the solutions
    instructor = (built / "instructor" / f"{source.stem}.ipynb").read_text()
    assert all(json.dumps(ln, ensure_ascii=False)[1:-1] in instructor for ln in lines)


@pytest.mark.parametrize("source", SOURCES, ids=NAMES)
def test_hidden_checks_absent_from_student_version(built, source):
    a = asg.load_assignment(source)
    raw = (built / "student" / f"{source.stem}.ipynb").read_text()
    student = nbformat.reads(raw, as_version=4)
    instructor = nbformat.read(built / "instructor" / f"{source.stem}.ipynb", as_version=4)
    assert "hidden-check" not in raw
    for check in a.checks:
        body = [ln.strip() for ln in check.source.splitlines()[1:] if ln.strip()]
        in_student = any(c.source.strip() == check.source.strip() for c in student.cells)
        assert in_student == (not check.hidden), check.qid
        if check.hidden:  # not even a line of it
            assert not any(json.dumps(ln, ensure_ascii=False)[1:-1] in raw for ln in body[-1:]), check.qid
        assert any(c.source.strip() == check.source.strip() for c in instructor.cells)


def test_solution_stub_keeps_indentation():
    a = asg.load_assignment(REPO / "book" / "assignments" / "01_consistency.py")
    nb = asg.render(a, "student")
    cell = next(c for c in nb.cells if c.source.startswith("def cs1("))
    assert '    raise NotImplementedError("q1: your code here")' in cell.source
    compile(cell.source, "cs1", "exec")


def _write_source(folder: Path, body: str, name: str = "01_bad.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(body)
    return folder


GOOD = '''# %%
def f():
    ### BEGIN SOLUTION q1
    return 41 + 1
    ### END SOLUTION

# %% tags=["hidden-check"]
# check: q1 (2 points)
assert f() == 42, "f() should be 42"
'''


@pytest.mark.parametrize("body, message", [
    (GOOD.replace("    ### END SOLUTION\n", ""), "no '### END SOLUTION'"),
    (GOOD.replace("### BEGIN SOLUTION q1", "### BEGIN SOLUTION"), "must name its question"),
    (GOOD.replace("# check: q1 (2 points)", "# check: q2 (2 points)"), "has no check cell"),
    (GOOD.replace("# check: q1 (2 points)", "# q1"), "must start with '# check: qID (N points)'"),
    (GOOD.replace("return 41 + 1", "return 42"), "also appears in the student notebook"),
])
def test_malformed_sources_are_reported(tmp_path, capsys, body, message):
    if "return 42" in body:  # the solution line leaks through a visible cell
        body += '\n# %%\n# hint: the body is `return 42`\n'
    folder = _write_source(tmp_path / "src", body)
    status, out, err = _kq(capsys, "assignments", "--out", tmp_path / "out", "--source", folder)
    assert status == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written when a source is wrong


def test_list_and_help(capsys):
    status, out, _ = _kq(capsys, "assignments", "--list", "--source", REPO / "book" / "assignments")
    assert status == 0
    for name in NAMES:
        assert name in out
    for command in ("assignments", "grade"):
        with pytest.raises(SystemExit) as exc:
            cli.main([command, "--help"])
        assert exc.value.code == 0
        assert "usage: kq " + command in capsys.readouterr().out


def test_grade_input_errors(tmp_path, capsys):
    status, _, err = _kq(capsys, "grade", tmp_path / "missing.ipynb")
    assert status == 2 and "No notebook" in err and "Traceback" not in err
    plain = tmp_path / "plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), plain)
    status, _, err = _kq(capsys, "grade", plain)
    assert status == 2 and "no assignment metadata" in err
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    status, _, err = _kq(capsys, "grade", broken)
    assert status == 2 and "not a readable Jupyter notebook" in err
    nb = nbformat.v4.new_notebook()
    nb.metadata["kq_assignment"] = "99_nope"
    nbformat.write(nb, tmp_path / "unknown.ipynb")
    status, _, err = _kq(capsys, "grade", tmp_path / "unknown.ipynb", "--source", REPO / "book" / "assignments")
    assert status == 2 and "Unknown assignment '99_nope'" in err
    status, _, err = _kq(capsys, "assignments")
    assert status == 2 and "--out" in err


# -------------------------------------------------------------------------------------------- grading


@pytest.mark.book
@pytest.mark.parametrize("name", NAMES)
def test_instructor_version_gets_full_score(built, capsys, tmp_path, name):
    report = tmp_path / "grade.json"
    status, out, err = _kq(capsys, "grade", built / "instructor" / f"{name}.ipynb", "--source", REPO / "book" / "assignments",
                           "--json", report)
    assert status == 0, out + err
    result = json.loads(report.read_text())
    assert result["passed"] and result["score"] == result["total"] > 0
    assert "Errors while running" not in out
    assert f"Score: {result['total']:g}/{result['total']:g} (100%)" in out


@pytest.mark.book
@pytest.mark.parametrize("name", NAMES)
def test_unsolved_student_version_fails_with_feedback(built, capsys, name):
    a = asg.find_assignment(name, REPO / "book" / "assignments")
    status, out, err = _kq(capsys, "grade", built / "student" / f"{name}.ipynb", "--source", REPO / "book" / "assignments")
    assert status == 1, out + err
    for qid in a.questions:
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(qid + " ")), None)
        assert line is not None, f"no feedback line for {qid}:\n{out}"
        if qid in a.solutions:
            assert "NOT ATTEMPTED" in line and f"0/{a.points(qid):g} points" in line
    assert "not attempted: the solution stub still raises NotImplementedError" in out
    assert f"Score: 0/{a.total:g} (0%)" in out
    for qid in a.written:
        assert re.search(rf"{qid}\s+WRITTEN", out)


@pytest.mark.book
def test_partial_submission_is_graded_per_question(built, capsys, tmp_path):
    """q1 right, q2 wrong (fails a hidden check), q3 depends on them, q4 left as the stub."""
    nb = nbformat.read(built / "student" / "01_consistency.ipynb", as_version=4)
    stub = '    # YOUR CODE HERE\n    raise NotImplementedError("{}: your code here")'
    for cell in nb.cells:
        if cell.source.startswith("def cs1("):
            cell.source = cell.source.replace(stub.format("q1"), "    u = set().union(*sets)\n"
                                              "    return len(set.intersection(*map(set, sets))) / len(u) if u else 0.0")
        if cell.source.startswith("def cs2("):  # wrong: forgets the empty-union case and divides by k twice
            cell.source = cell.source.replace(stub.format("q2"), "    u = set().union(*sets)\n"
                                              "    return sum(len(s) for s in sets) / len(sets) / len(u) / len(sets) * 2")
    path = tmp_path / "submission.ipynb"
    nbformat.write(nb, path)
    status, out, _ = _kq(capsys, "grade", path, "--source", REPO / "book" / "assignments", "--save", tmp_path / "graded.ipynb")
    assert status == 1
    rows = {ln.split()[0]: ln for ln in out.splitlines() if re.match(r"^  q\d", ln)}
    assert "PASS" in rows["q1"] and "3/3" in rows["q1"]
    assert "FAIL" in rows["q2"] and "0/3" in rows["q2"]
    assert "NOT ATTEMPTED" in rows["q3"] and "NOT ATTEMPTED" in rows["q4"]
    assert "visible check: k pairwise disjoint sets must score 1/k" in out
    assert "hidden check:" in out and "ZeroDivisionError" in out
    assert "Score: 3/11" in out
    graded = nbformat.read(tmp_path / "graded.ipynb", as_version=4)
    assert any("_kq_grade_check" in c.source for c in graded.cells)
