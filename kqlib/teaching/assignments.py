"""Classroom assignments: build student / instructor notebooks from marked sources and grade submissions.

Sources are jupytext percent files ``book/assignments/NN_name.py`` (one per assignment; the file stem is the
assignment's name). The marking convention:

* **Solution regions.** Inside a code cell, the lines between ``### BEGIN SOLUTION qID`` and
  ``### END SOLUTION`` (markers on their own lines, any indentation) are the model solution of question
  ``qID``. The student version replaces them by::

      # YOUR CODE HERE
      raise NotImplementedError("qID: your code here")

  at the marker's indentation (so a region may sit inside a function body). In a markdown cell a region is a
  written answer; the student version shows ``*YOUR ANSWER HERE (qID)*`` and it is graded by hand. The
  instructor version keeps code regions with their markers and drops the marker lines of markdown regions.
* **Checks.** A code cell whose first line is ``# check: qID (N points)`` (``N`` may be fractional) is a check of
  question ``qID`` worth ``N`` points. Tag it ``check`` (jupytext ``# %% tags=["check"]``) to leave it visible to
  students, or ``hidden-check`` to remove it from the student version. A question scores the points of the
  checks it passes; it passes when all its checks pass. Every solution region must name a question that has
  at least one check, or a written answer.
* **Metadata.** Generated notebooks carry ``metadata.kq_assignment = "NN_name"`` (the source to grade against)
  and ``metadata.kq_version = "student" | "instructor"``; nothing else from the source's metadata.

``kq assignments --out DIR`` writes ``DIR/student/NN_name.ipynb`` and ``DIR/instructor/NN_name.ipynb`` (no
outputs). Before writing, every line of every code solution region that holds a letter or digit is checked to
be absent from the student notebook's JSON (a build error names the line otherwise), and no hidden check may
remain there.

``kq grade NOTEBOOK`` executes the notebook with nbclient (kernel ``python3``, in the notebook's folder, a
per-cell timeout, errors recorded rather than fatal; the submission's own check cells are skipped), then runs
*every* check cell of the source (visible
and hidden, taken from the source, not from the submission) in the same kernel, each wrapped so that a failure
is recorded for its question instead of stopping. A question whose solution stub still raised
``NotImplementedError("qID: your code here")`` (or whose check hits one) is reported as "not attempted".
Exit status 0 only when every check passes, 1 otherwise; input problems (missing notebook, no assignment
metadata, unknown assignment) are :class:`~kqlib.errors.KqError` (exit 2).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from kqlib.errors import KqError, ParameterError

BEGIN = re.compile(r"^(?P<indent>\s*)### BEGIN SOLUTION(?:\s+(?P<qid>[A-Za-z][\w.-]*))?\s*$")
END = re.compile(r"^\s*### END SOLUTION\s*$")
CHECK = re.compile(r"^#\s*check:\s*(?P<qid>[A-Za-z][\w.-]*)\s*\(\s*(?P<points>\d+(?:\.\d+)?)\s*points?\s*\)\s*$")
STUB = re.compile(r"(?P<qid>[A-Za-z][\w.-]*): your code here")
CHECK_TAG, HIDDEN_TAG = "check", "hidden-check"
RESULT_PREFIX = "KQ-GRADE-RESULT "
ANSWER_HERE = "*YOUR ANSWER HERE ({qid})*"


class AssignmentError(KqError, ValueError):
    """A malformed assignment source, an unknown assignment or a notebook that is not an assignment."""


class NotebookNotFoundError(KqError, FileNotFoundError):
    pass


# -------------------------------------------------------------------------------------------- sources


@dataclass
class Check:
    qid: str
    points: float
    hidden: bool
    source: str
    cell: int  # index in the source notebook


@dataclass
class Assignment:
    name: str
    path: Path
    notebook: object  # nbformat.NotebookNode (jupytext.read of the source)
    checks: list[Check] = field(default_factory=list)
    solutions: dict[str, list[str]] = field(default_factory=dict)  # qid -> solution lines (code regions)
    written: list[str] = field(default_factory=list)  # qids of markdown (hand-graded) regions

    @property
    def questions(self) -> list[str]:
        """Auto-graded question ids in order of first appearance."""
        out: list[str] = []
        for c in self.checks:
            if c.qid not in out:
                out.append(c.qid)
        return out

    def points(self, qid: str) -> float:
        return sum(c.points for c in self.checks if c.qid == qid)

    @property
    def total(self) -> float:
        return sum(c.points for c in self.checks)

    def solution_lines(self) -> list[str]:
        return [ln for lines in self.solutions.values() for ln in lines]


def default_source_dir() -> Path:
    """``$KQ_ASSIGNMENTS``, else ``book/assignments/`` beside the book's ``_toc.yml`` (cwd or above), else the one
    beside the kqlib package (an editable install of this repository)."""
    env = os.environ.get("KQ_ASSIGNMENTS")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists() and (folder / "book" / "assignments").is_dir():
            return folder / "book" / "assignments"
    return Path(__file__).resolve().parents[2] / "book" / "assignments"


def source_paths(source_dir: Path | None = None) -> list[Path]:
    folder = Path(source_dir) if source_dir else default_source_dir()
    if not folder.is_dir():
        raise AssignmentError(f"No assignment folder {folder} (pass --source DIR or set KQ_ASSIGNMENTS).")
    paths = sorted(p for p in folder.glob("[0-9]*.py") if p.is_file())
    if not paths:
        raise AssignmentError(f"No assignment sources (NN_name.py) in {folder}.")
    return paths


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def is_check_cell(cell) -> bool:
    return bool({CHECK_TAG, HIDDEN_TAG} & set(_tags(cell)))


def _regions(lines: list[str], where: str):
    """Yield ("text", line) and ("solution", indent, qid, [lines]) items of a cell's lines."""
    i = 0
    while i < len(lines):
        m = BEGIN.match(lines[i])
        if END.match(lines[i]):
            raise AssignmentError(f"{where}: '### END SOLUTION' without a BEGIN (line {i + 1} of the cell).")
        if not m:
            yield ("text", lines[i])
            i += 1
            continue
        if not m.group("qid"):
            raise AssignmentError(f"{where}: '### BEGIN SOLUTION' must name its question, e.g. "
                                  "'### BEGIN SOLUTION q1'.")
        j = i + 1
        while j < len(lines) and not END.match(lines[j]):
            if BEGIN.match(lines[j]):
                raise AssignmentError(f"{where}: nested '### BEGIN SOLUTION' (line {j + 1} of the cell).")
            j += 1
        if j == len(lines):
            raise AssignmentError(f"{where}: '### BEGIN SOLUTION {m.group('qid')}' has no '### END SOLUTION'.")
        yield ("solution", m.group("indent"), m.group("qid"), lines[i + 1:j])
        i = j + 1


def load_assignment(path: Path) -> Assignment:
    """Parse and validate one source."""
    import jupytext  # heavy: jupytext, only to read an assignment source

    path = Path(path)
    if not path.exists():
        raise AssignmentError(f"No assignment source {path}.")
    nb = jupytext.read(path)
    a = Assignment(name=path.stem, path=path, notebook=nb)
    for index, cell in enumerate(nb.cells):
        where = f"{path.name}, cell {index + 1}"
        tags = _tags(cell)
        first = cell.source.lstrip().splitlines()[0] if cell.source.strip() else ""
        is_check = CHECK_TAG in tags or HIDDEN_TAG in tags
        if is_check:
            if cell.cell_type != "code":
                raise AssignmentError(f"{where}: only code cells can be checks.")
            if CHECK_TAG in tags and HIDDEN_TAG in tags:
                raise AssignmentError(f"{where}: tag a check either 'check' or 'hidden-check', not both.")
            m = CHECK.match(first)
            if not m:
                raise AssignmentError(f"{where}: a check cell must start with '# check: qID (N points)', "
                                      f"got {first!r}.")
            if BEGIN.search(cell.source) or "### BEGIN SOLUTION" in cell.source:
                raise AssignmentError(f"{where}: a check cell cannot hold a solution region.")
            a.checks.append(Check(m.group("qid"), float(m.group("points")), HIDDEN_TAG in tags, cell.source, index))
        elif cell.cell_type == "code" and CHECK.match(first):
            raise AssignmentError(f"{where}: starts like a check ('# check: ...') but is not tagged "
                                  "'check' or 'hidden-check'.")
        for item in _regions(cell.source.splitlines(), where):
            if item[0] == "solution":
                _, _indent, qid, body = item
                if cell.cell_type == "markdown":
                    a.written.append(qid)
                else:
                    a.solutions.setdefault(qid, []).extend(body)
    checked = set(a.questions)
    for qid in a.solutions:
        if qid not in checked:
            raise AssignmentError(f"{path.name}: solution region {qid!r} has no check cell "
                                  f"('# check: {qid} (N points)').")
    if not a.checks:
        raise AssignmentError(f"{path.name}: no check cells.")
    return a


def find_assignment(name: str, source_dir: Path | None = None) -> Assignment:
    paths = source_paths(source_dir)
    for p in paths:
        if p.stem == name:
            return load_assignment(p)
    names = ", ".join(p.stem for p in paths)
    raise AssignmentError(f"Unknown assignment {name!r} (sources in {paths[0].parent}: {names}).")


# ----------------------------------------------------------------------------------- student/instructor


def _render_cell(cell, student: bool):
    lines = cell.source.splitlines()
    out: list[str] = []
    for item in _regions(lines, "cell"):
        if item[0] == "text":
            out.append(item[1])
            continue
        _, indent, qid, body = item
        if cell.cell_type == "markdown":
            out.extend([ANSWER_HERE.format(qid=qid)] if student else body)
        elif student:
            out.extend([f"{indent}# YOUR CODE HERE", f'{indent}raise NotImplementedError("{qid}: your code here")'])
        else:
            out.extend([f"{indent}### BEGIN SOLUTION {qid}", *body, f"{indent}### END SOLUTION"])
    return "\n".join(out)


def render(assignment: Assignment, version: str):
    """The ``"student"`` or ``"instructor"`` notebook (nbformat v4, no outputs)."""
    import nbformat  # heavy: nbformat (jsonschema), only to write notebooks

    if version not in ("student", "instructor"):
        raise ParameterError(f"version must be 'student' or 'instructor', got {version!r}")
    student = version == "student"
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "kq_assignment": assignment.name,
        "kq_version": version,
    }
    for cell in assignment.notebook.cells:
        tags = _tags(cell)
        if student and HIDDEN_TAG in tags:
            continue
        source = _render_cell(cell, student)
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(source)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(source)
        else:
            new = nbformat.v4.new_raw_cell(source)
        if tags:
            new.metadata["tags"] = tags
        new.id = f"{assignment.name[:2]}-{len(nb.cells):03d}"  # deterministic ids (no randomness, no hashes)
        nb.cells.append(new)
    return nb


def revealing_lines(assignment: Assignment) -> list[str]:
    """The solution lines (stripped) that must not appear in a student notebook: every line of a code solution
    region with a letter or digit in it (a line of brackets alone gives nothing away)."""
    return [ln.strip() for ln in assignment.solution_lines() if any(ch.isalnum() for ch in ln)]


def check_student_notebook(assignment: Assignment, nb) -> None:
    """Raise if any solution line or hidden check of ``assignment`` is left in the student notebook ``nb``."""
    import nbformat  # heavy: nbformat (jsonschema), only to check a notebook

    text = nbformat.writes(nb)
    for s in revealing_lines(assignment):
        if json.dumps(s, ensure_ascii=False)[1:-1] in text or s in text:
            raise AssignmentError(f"{assignment.path.name}: the solution line {s!r} also appears in the student "
                                  "notebook (outside the solution region); reword one of them so that the student "
                                  "version gives nothing away.")
    for check in assignment.checks:
        if check.hidden and any(c.source.strip() == check.source.strip() for c in nb.cells):
            raise AssignmentError(f"{assignment.path.name}: hidden check of {check.qid} left in the student notebook.")
    if any(HIDDEN_TAG in _tags(c) for c in nb.cells):
        raise AssignmentError(f"{assignment.path.name}: a 'hidden-check' cell is left in the student notebook.")


def build(out: Path, source_dir: Path | None = None, only: list[str] | None = None) -> list[tuple[Path, Path]]:
    """Write ``out/student/NN_name.ipynb`` and ``out/instructor/NN_name.ipynb`` for every source."""
    import nbformat  # heavy: nbformat (jsonschema), only to write notebooks

    paths = source_paths(source_dir)
    if only:
        chosen = [p for p in paths if any(p.stem.startswith(o) for o in only)]
        missing = [o for o in only if not any(p.stem.startswith(o) for p in paths)]
        if missing:
            raise AssignmentError(f"No assignment matches {', '.join(map(repr, missing))} "
                                  f"(available: {', '.join(p.stem for p in paths)}).")
        paths = chosen
    assignments = [load_assignment(p) for p in paths]  # validate everything before writing anything
    rendered = []
    for a in assignments:
        student, instructor = render(a, "student"), render(a, "instructor")
        check_student_notebook(a, student)
        rendered.append((a, student, instructor))
    written = []
    for a, student, instructor in rendered:
        pair = []
        for version, nb in (("student", student), ("instructor", instructor)):
            dest = Path(out) / version / f"{a.name}.ipynb"
            dest.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, dest)
            pair.append(dest)
        written.append(tuple(pair))
    return written
