"""The HTML build: stage the executed book (config, toc, pages, MathJax served from the site), add the data
downloads and the fact explorer, run Jupyter Book 1.x."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

from kqlib.book.site.explorer import prepare_site
from kqlib.book.toc import BUILD, EXECUTED, MATHJAX_DEST, executed_path, notebook_chapters, source_of, toc_documents
from kqlib.errors import ChapterFailed, MissingDependencyError, ParameterError

# --------------------------------------------------------------------------------------------- HTML


def mathjax_source() -> Path:
    """MathJax 3's ES5 build inside the ``django-static-mathjax`` package."""

    spec = importlib.util.find_spec("mathjax")
    if spec is not None and spec.submodule_search_locations:
        src = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
        if (src / "tex-chtml.js").exists():
            return src

    raise MissingDependencyError("Offline math needs MathJax 3: pip install django-static-mathjax==3.2.2.1")


# bundles the site does not load (it loads tex-chtml.js, which loads fonts/extensions on demand)
_MATHJAX_SKIP = {"tex-svg.js", "tex-svg-full.js", "tex-mml-svg.js", "tex-mml-chtml.js", "mml-chtml.js",
                 "mml-svg.js", "tex-chtml-full.js", "tex-chtml-full-speech.js", "node-main.js"}


def stage(root: Path) -> Path:
    """Make ``_build/executed`` a complete book: config, toc, bib, prose pages, MathJax; check notebooks."""
    dest = root / BUILD / EXECUTED
    dest.mkdir(parents=True, exist_ok=True)
    for path in list(root.glob("*.bib")) + [root / "_config.yml", root / "_toc.yml"]:
        shutil.copy2(path, dest / path.name)
    missing = []
    folders = set()
    for doc in toc_documents(root):
        src = source_of(root, doc)
        folders.add(src.parent)
        if src.suffix == ".py" and not executed_path(root, src).exists():
            missing.append(str(src.relative_to(root)))
    if missing:
        raise ParameterError("Not executed yet (run `kq book` or `kq run CHAPTER` first): " + ", ".join(missing))
    for folder in folders:  # prose pages, images, ... beside the chapters (not the .py sources)
        for path in folder.rglob("*"):
            rel = path.relative_to(root)
            if (path.is_file() and path.suffix not in (".py", ".pyc", ".ipynb")
                    and not any(part.startswith((".", "_")) for part in rel.parts)):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / rel)
    mj = dest / MATHJAX_DEST
    if not (mj / "tex-chtml.js").exists():
        shutil.rmtree(mj, ignore_errors=True)
        shutil.copytree(mathjax_source(), mj, ignore=lambda d, names: [n for n in names if n in _MATHJAX_SKIP])
    return dest


def build_html(root: Path) -> Path:
    """``jupyter-book build`` of the staged book; returns ``_build/html/index.html``."""
    src = stage(root)
    prepare_site(root, src, notebook_chapters(root))  # the data downloads, "reproduce this" and the fact explorer
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(src),
           "--path-output", str(root), "--builder", "html", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (root / BUILD / "html-build.log").write_text(log)
    warnings = [ln for ln in log.splitlines() if "WARNING" in ln or "ERROR" in ln]
    for ln in warnings:
        print(f"[kq book] {ln}", flush=True)
    index = root / BUILD / "html" / "index.html"
    if proc.returncode != 0 or not index.exists():
        tail = "\n".join(log.strip().splitlines()[-20:])
        raise ChapterFailed(f"The HTML build failed (full log: {BUILD}/html-build.log):\n{tail}")
    return index
