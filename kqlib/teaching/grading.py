"""Grading an assignment notebook: execute it with the assignment's visible and hidden checks, score each question."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kqlib.errors import KqError



from kqlib.teaching.assignments import (AssignmentError, NotebookNotFoundError, RESULT_PREFIX, STUB, find_assignment, is_check_cell)


# ------------------------------------------------------------------------------------------- grading

_HELPER = r'''
def _kq_grade_check(qid, points, hidden, code):
    import contextlib as _cl, io as _io, json as _json, traceback as _tb
    result = {"qid": qid, "points": points, "hidden": hidden, "status": "pass", "message": ""}
    try:
        with _cl.redirect_stdout(_io.StringIO()), _cl.redirect_stderr(_io.StringIO()):
            exec(compile(code, "<check %s>" % qid, "exec"), globals())
    except NotImplementedError as exc:
        result.update(status="not attempted", message=str(exc) or "NotImplementedError")
    except AssertionError as exc:
        result.update(status="fail", message=str(exc) or "assertion failed (no message)")
    except Exception as exc:
        frames = [f for f in _tb.extract_tb(exc.__traceback__) if not f.filename.startswith("<check")]
        where = ""
        if frames:
            where = " (raised in %s, line %s)" % (frames[-1].filename, frames[-1].lineno)
        result.update(status="fail", message="%s: %s%s" % (type(exc).__name__, exc, where))
    print("@PREFIX@" + _json.dumps(result))
'''.replace("@PREFIX@", RESULT_PREFIX)


@dataclass
class QuestionResult:
    qid: str
    points: float
    earned: float
    status: str  # "pass" | "fail" | "not attempted"
    messages: list[str]


@dataclass
class GradeReport:
    assignment: str
    notebook: Path
    questions: list[QuestionResult]
    notebook_errors: list[str]
    written: list[str]

    @property
    def score(self) -> float:
        return sum(q.earned for q in self.questions)

    @property
    def total(self) -> float:
        return sum(q.points for q in self.questions)

    @property
    def passed(self) -> bool:
        return all(q.status == "pass" for q in self.questions)

    def to_json(self) -> dict:
        return {"assignment": self.assignment, "notebook": str(self.notebook), "score": self.score,
                "total": self.total, "passed": self.passed, "written_answers": self.written,
                "notebook_errors": self.notebook_errors,
                "questions": [q.__dict__ for q in self.questions]}

    def text(self) -> str:
        def pts(x: float) -> str:
            return f"{x:g}"

        rows = [f"Assignment {self.assignment}: {self.notebook}"]
        label = {"pass": "PASS", "fail": "FAIL", "not attempted": "NOT ATTEMPTED"}
        width = max(len(q.qid) for q in self.questions) if self.questions else 2
        for q in self.questions:
            rows.append(f"  {q.qid:<{width}}  {label[q.status]:<13}  {pts(q.earned)}/{pts(q.points)} points")
            for m in q.messages:
                rows.append(f"  {'':<{width}}    - {m}")
        for qid in self.written:
            rows.append(f"  {qid:<{width}}  WRITTEN        graded by hand (not in the automatic score)")
        if self.notebook_errors:
            rows.append("Errors while running the notebook:")
            rows.extend(f"  - {e}" for e in self.notebook_errors)
        pct = 100.0 * self.score / self.total if self.total else 100.0
        rows.append(f"Score: {pts(self.score)}/{pts(self.total)} ({pct:.0f}%)"
                    + ("" if self.passed else f"; {sum(q.status != 'pass' for q in self.questions)} "
                       f"question(s) not passed"))
        return "\n".join(rows)


def read_submission(path: Path):
    import nbformat  # heavy: nbformat (jsonschema), only to read a submission

    path = Path(path)
    if not path.exists():
        raise NotebookNotFoundError(f"No notebook {path}.")
    if path.is_dir():
        raise NotebookNotFoundError(f"{path} is a folder; pass a notebook (.ipynb) file.")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any parse failure reads the same to the user
        raise AssignmentError(f"{path} is not a readable Jupyter notebook ({type(exc).__name__}: {exc}).") from None
    name = nb.metadata.get("kq_assignment")
    if not isinstance(name, str) or not name:
        raise AssignmentError(f"{path} has no assignment metadata (metadata.kq_assignment): grade the notebooks "
                              "written by `kq assignments --out DIR` (student/ or instructor/), or add "
                              '"kq_assignment": "NN_name" to the notebook metadata.')
    return nb, name


def _error_summary(cell_index: int, cell, output) -> str:
    first = next((ln.strip() for ln in cell.source.splitlines() if ln.strip()), "")[:60]
    return f"cell {cell_index + 1} ({first}): {output.get('ename')}: {str(output.get('evalue', ''))[:300]}"


def _timeout_text(timeout: int) -> str:
    return f"timed out: interrupted after {timeout} s (kq grade --timeout)"


def _stub_qid(message: str) -> str | None:
    m = STUB.search(message or "")
    return m.group("qid") if m else None


def grade(path: Path, source_dir: Path | None = None, timeout: int = 120, save: Path | None = None) -> GradeReport:
    """Execute the notebook at ``path`` and run its assignment's checks in the same kernel."""
    # heavy: nbformat and nbclient (a Jupyter kernel client), only to grade
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    path = Path(path)
    nb, name = read_submission(path)
    assignment = find_assignment(name, source_dir)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    n_student = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell(_HELPER))
    for check in assignment.checks:
        call = f"_kq_grade_check({check.qid!r}, {check.points!r}, {check.hidden!r}, {check.source!r})"
        nb.cells.append(nbformat.v4.new_code_cell(call))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(path.resolve().parent)}},
                            extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    fatal = None
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                # the submission's own copies of check cells are skipped: the checks run from the source below
                if cell.cell_type != "code" or (index < n_student and is_check_cell(cell)):
                    continue
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    cell.outputs.append(nbformat.v4.new_output("error", ename="Timeout",
                                                               evalue=f"the cell ran longer than {timeout} s",
                                                               traceback=[]))
                except DeadKernelError as exc:
                    fatal = f"the kernel died ({exc}); cells after cell {index + 1} did not run"
                    break
    except Exception as exc:  # noqa: BLE001 - kernel could not start etc.
        raise KqError(f"Could not execute {path}: {type(exc).__name__}: {exc}") from None

    errors, stubs = [], set()
    for index, cell in enumerate(nb.cells[:n_student]):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                m = STUB.search(str(out.get("evalue", "")))
                if out.get("ename") == "NotImplementedError" and m:
                    stubs.add(m.group("qid"))
                elif out.get("ename") == "KeyboardInterrupt":
                    errors.append(_error_summary(index, cell, out).split(": KeyboardInterrupt")[0] + ": "
                                  + _timeout_text(timeout))
                else:
                    errors.append(_error_summary(index, cell, out))
    if fatal:
        errors.append(fatal)
    results: dict[int, dict] = {}
    for k, cell in enumerate(nb.cells[n_student + 1:]):
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.get("output_type") == "stream" else ""
            for line in text.splitlines():
                if line.startswith(RESULT_PREFIX):
                    results[k] = json.loads(line[len(RESULT_PREFIX):])
        if k not in results:
            errs = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            why = (_timeout_text(timeout) if errs and errs[0].get("ename") == "KeyboardInterrupt"
                   else f"{errs[0].get('ename')}: {errs[0].get('evalue')}" if errs else (fatal or "it did not run"))
            results[k] = {"status": "fail", "message": f"the check could not run ({why})"}

    questions = []
    for qid in assignment.questions:
        checks = [(c, results[k]) for k, c in enumerate(assignment.checks) if c.qid == qid]
        earned = sum(c.points for c, r in checks if r["status"] == "pass")
        total = sum(c.points for c, _ in checks)
        failing = [(c, r) for c, r in checks if r["status"] != "pass"]
        own_stub = qid in stubs or any(r["status"] == "not attempted" and _stub_qid(r["message"]) in (qid, None)
                                       for _, r in failing)
        if not failing:
            status, messages = "pass", []
        elif own_stub:
            status = "not attempted"
            messages = [f"not attempted: the solution stub still raises NotImplementedError "
                        f"(replace '# YOUR CODE HERE' and the raise line in the cell of {qid})"]
        else:
            status, messages = "fail", []
            for c, r in failing:
                other = _stub_qid(r["message"]) if r["status"] == "not attempted" else None
                text = (f"blocked: the check uses your answer to {other}, which is not attempted yet"
                        if other else r["message"])
                messages.append(f"{'hidden' if c.hidden else 'visible'} check: {text}")
        questions.append(QuestionResult(qid, total, earned, status, messages))
    if save is not None:
        nbformat.write(nb, save)
    return GradeReport(name, path, questions, errors, list(dict.fromkeys(assignment.written)))
