"""``kq assignments`` and ``kq grade``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kqlib.cli_args import Command, check_output_file, check_writable_folder
from kqlib.errors import ParameterError



from kqlib.teaching.assignments import source_paths, load_assignment, build
from kqlib.teaching.grading import grade


# ------------------------------------------------------------------------------------------ commands


def _assignments_args(p) -> None:
    p.add_argument("--out", help="output folder: writes OUT/student/*.ipynb and OUT/instructor/*.ipynb")
    p.add_argument("--source", help="folder of the assignment sources NN_name.py (default: assignments/ of the "
                   "book repository, or $KQ_ASSIGNMENTS)")
    p.add_argument("--only", action="append", metavar="PREFIX",
                   help="only the assignments whose name starts with PREFIX (repeatable)")
    p.add_argument("--list", action="store_true", help="list the assignments, their questions and points")


def _assignments_run(args) -> int:
    if args.list:
        for path in source_paths(args.source):
            a = load_assignment(path)
            qs = ", ".join(f"{q} ({a.points(q):g})" for q in a.questions)
            extra = f"; written: {', '.join(dict.fromkeys(a.written))}" if a.written else ""
            hidden = sum(c.hidden for c in a.checks)
            print(f"{a.name}: {a.total:g} points; {qs}{extra}; {len(a.checks)} checks ({hidden} hidden)")
        return 0
    if not args.out:
        raise ParameterError("Give the output folder: kq assignments --out DIR (or --list).")
    check_writable_folder(args.out, "--out")
    for student, instructor in build(Path(args.out), args.source, args.only):
        print(f"{student}\n{instructor}")
    return 0


def _grade_args(p) -> None:
    p.add_argument("notebook", help="a notebook written by `kq assignments` (student or instructor version), "
                   "e.g. a student's submission")
    p.add_argument("--source", help="folder of the assignment sources (default: as for `kq assignments`)")
    p.add_argument("--timeout", type=int, default=120, help="seconds per cell before it is interrupted "
                   "(default 120)")
    p.add_argument("--save", metavar="PATH", help="also write the executed notebook, with the check cells, to PATH")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")


def _grade_run(args) -> int:
    if args.timeout < 1:
        raise ParameterError(f"--timeout must be >= 1 second, got {args.timeout}")
    check_output_file(args.save, "--save", (".ipynb",))
    check_output_file(args.json, "--json", (".json",))
    report = grade(Path(args.notebook), args.source, args.timeout, Path(args.save) if args.save else None)
    print(report.text())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n")
    sys.stdout.flush()
    return 0 if report.passed else 1


ASSIGNMENTS = Command("assignments", "write the student and instructor notebooks of the classroom assignments",
                 _assignments_args, _assignments_run)
GRADE = Command("grade", "execute an assignment notebook and grade it with the assignment's (hidden) checks",
                 _grade_args, _grade_run)
