"""The fact explorer's script (kqlib/book/site/static/explorer.js) on a damaged data file, run by Node with a minimal
DOM: a missing or truncated explorer-data.js and a malformed entry each show a message naming the file and what to
do (never a blank page, never "No facts in this build")."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kqlib.book.site.explorer import write_explorer

STATIC = Path(__file__).resolve().parents[2] / "kqlib" / "book" / "site" / "static"
NODE = shutil.which("node") or shutil.which("nodejs")

# a browser runs each <script> on its own: one that does not parse sets nothing and the next still runs
HARNESS = r"""
const fs = require("fs"), vm = require("vm");
function node(tag) {
  const n = {tag, attrs: {}, children: [], textContent: "", className: "", style: {},
    appendChild(c) { this.children.push(c); return c; },
    removeChild(c) { this.children.splice(this.children.indexOf(c), 1); return c; },
    get firstChild() { return this.children[0] || null; },
    setAttribute(k, v) { this.attrs[k] = String(v); }, getAttribute(k) { return this.attrs[k]; },
    addEventListener() {}, querySelectorAll() { return []; }, querySelector() { return null; }};
  return new Proxy(n, {get: (t, k) => (k in t ? t[k] : () => node("x"))});
}
function text(n) { return n.tag === undefined ? n.text : n.textContent + n.children.map(text).join(""); }
const root = node("div");
const document = {readyState: "complete", getElementById: (id) => (id === "kq-explorer" ? root : null),
  createElement: node, createElementNS: (ns, t) => node(t), createTextNode: (t) => ({text: t}),
  addEventListener() {}};
const ctx = vm.createContext({document, location: {hash: ""}, console, JSON});
ctx.window = ctx; ctx.addEventListener = () => {};
for (const file of process.argv.slice(2)) {
  try { vm.runInContext(fs.readFileSync(file, "utf8"), ctx, {filename: file}); }
  catch (e) { if (e.name !== "SyntaxError" && e.code !== "ENOENT") throw e; }
}
process.stdout.write(JSON.stringify({text: text(root), ready: root.attrs["data-kq-ready"] || null}));
"""

GOOD = {"facts": [{"key": "m|ig|f1", "model": "m", "method": "ig", "fact_id": "f1", "relation": "P36",
                   "subject": "France", "obj": "Paris", "n_queries": 2, "cs2": 0.5}],
        "details": {"m|ig|f1": {"queries": []}}, "sources": {}, "warnings": [], "kn_cap": 50}


def _show(tmp_path, data_text: str | None) -> dict:
    if NODE is None:
        pytest.skip("node is not installed")
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    data = tmp_path / "explorer-data.js"
    if data_text is not None:
        data.write_text(data_text)
    out = subprocess.run([NODE, str(harness), str(data), str(STATIC / "explorer.js")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _written(tmp_path, data) -> str:
    return write_explorer(tmp_path / "site", data).read_text()


def test_a_truncated_data_file_says_so(tmp_path):
    shown = _show(tmp_path, _written(tmp_path, GOOD)[:-40])
    assert shown["ready"] == "1" and "did not load" in shown["text"] and "damaged" in shown["text"]
    assert "kq book --no-execute" in shown["text"] and "No facts" not in shown["text"]


def test_a_missing_data_file_says_so(tmp_path):
    shown = _show(tmp_path, None)
    assert "did not load" in shown["text"] and "missing" in shown["text"]


@pytest.mark.parametrize("facts,expect", [([{"model": "m"}], "fact 1 of 1 lacks its key"),
                                          ([GOOD["facts"][0], None], "fact 2 of 2"),
                                          ("not a list", "has no list of facts")])
def test_a_malformed_entry_is_named(tmp_path, facts, expect):
    shown = _show(tmp_path, _written(tmp_path, {**GOOD, "facts": facts}))
    assert "malformed" in shown["text"] and expect in shown["text"] and "kq book --no-execute" in shown["text"]


def test_an_empty_build_and_a_good_file(tmp_path):
    assert "No facts in this build" in _show(tmp_path, _written(tmp_path, {**GOOD, "facts": []}))["text"]
    shown = _show(tmp_path, _written(tmp_path, GOOD))
    assert "malformed" not in shown["text"] and "did not load" not in shown["text"]
