"""``kq bench`` output: the table (text, Markdown, CSV) and the performance targets as MET / NOT MET."""

from __future__ import annotations

import csv
import io


from kqlib.bench.cases import COLUMNS


# ---------------------------------------------------------------------------------------- output


def _cell(row: dict, col: str) -> str:
    v = row.get(col)
    if v is None:
        return "n/a" if col in ("s/query",) else "-"
    if col == "s/query":
        return f"{v:.3f}"
    if col == "min-max s":
        return f"{v[0]:.2f}-{v[1]:.2f}"
    if col == "peak extra MiB":
        return f"{v:.0f}"
    if col in ("max rel diff", "err vs integral"):
        return f"{v:.1e}"
    if col == "top-5 agree":
        return f"{v}/5"
    if col == "kqlib fast x faster":
        return f"{v:.1f}x"
    return str(v)


def table_rows(rows) -> list[list[str]]:
    out = []
    for row in rows:
        cells = [_cell(row, c) for c in COLUMNS]
        if row.get("n/a"):
            cells.append(f"n/a ({row['n/a']})")
        elif row.get("result", {}).get("note") or row.get("compared with"):
            cells.append("; ".join(v for v in (row["result"].get("note"), row.get("compared with") and
                                               f"diff vs {row['compared with']}") if v))
        else:
            cells.append("")
        out.append(cells)
    return out


def format_table(rows) -> str:
    header = list(COLUMNS) + ["note"]
    body = table_rows(rows)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def format_markdown(rows) -> str:
    header = list(COLUMNS) + ["note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in table_rows(rows)]
    return "\n".join(lines)


def format_csv(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(list(COLUMNS) + ["note"])
    w.writerows(table_rows(rows))
    return buf.getvalue()


def verdicts(rows) -> list[str]:
    """The performance targets, each MET / NOT MET from this run's rows (measured side by side)."""
    out = []

    def say(text, ok):
        out.append(f"{text} -> {'MET' if ok else 'NOT MET'}")

    by = {(r["case"], r["implementation"]): r for r in rows}
    for row in rows:
        impl, case, x, diff = row["implementation"], row["case"], row.get("kqlib fast x faster"), row.get("max rel diff")
        if x is None:
            continue
        if impl == "knowledge-neurons":
            say(f"{case}: kqlib fast >= 20x faster than knowledge-neurons at <= 1e-4: {x:.1f}x at {diff:.1e}",
                x >= 20 and diff <= 1e-4)
        elif impl == "kqlib naive" and case != "gpt2-random":
            say(f"{case}: kqlib fast >= 25x faster than the naive reference at <= 1e-3: {x:.1f}x at {diff:.1e}",
                x >= 25 and diff <= 1e-3)
        elif impl == "kqlib gauss-8":
            fast = by.get((case, "kqlib fast"), {})
            if fast.get("err vs integral") is not None:
                say(f"{case}: gauss-8 at least as close to the integral as riemann-{row['steps']}: "
                    f"{row['err vs integral']:.1e} vs {fast['err vs integral']:.1e}",
                    row["err vs integral"] <= fast["err vs integral"])
        elif impl == "kqlib fast 1-busy":
            say(f"{case}: one busy competing process costs <= 2.2x: {x:.2f}x", x <= 2.2)
    for row in rows:
        if row["implementation"] == "kqlib fast" and row.get("peak extra MiB") is not None:
            say(f"{row['case']} ({row['tokens']} tokens): kqlib fast peak extra memory <= 1 GiB: "
                f"{row['peak extra MiB']:.0f} MiB", row["peak extra MiB"] <= 1024)
    return out
