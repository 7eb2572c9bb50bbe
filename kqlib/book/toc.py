"""The book's table of contents and folders: the book root, the toc's documents, which are notebook chapters, where
their executed copies go."""

from __future__ import annotations

import os
from pathlib import Path

from kqlib.errors import ParameterError



BUILD = "_build"
EXECUTED = "executed"
# not under _static: Jupyter Book adds every .js below a source `_static` folder to every page
MATHJAX_DEST = "_mathjax/mathjax"




# ------------------------------------------------------------------------------------------ the toc


def find_root(start: str | Path | None = None) -> Path:
    """The book root: the nearest folder at or above ``start`` (default cwd) that holds ``_toc.yml``."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists():
            return folder
    raise ParameterError(f"No _toc.yml in {here} or above: run this inside the book's repository (or pass --root).")


def toc_documents(root: Path) -> list[str]:
    """Every document of ``_toc.yml`` in reading order (root first), as extension-less relative paths."""
    import yaml  # heavy: yaml (~30 ms), only to read _toc.yml; `kq` imports this module at start

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    docs = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                docs.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    return [str(Path(d).with_suffix("")) if Path(d).suffix in (".md", ".ipynb", ".py") else d for d in docs]


def source_of(root: Path, doc: str) -> Path:
    for suffix in (".py", ".ipynb", ".md"):
        path = root / (doc + suffix)
        if path.exists():
            return path
    raise ParameterError(f"_toc.yml lists {doc!r} but {root / doc}.py/.ipynb/.md does not exist.")


def notebook_chapters(root: Path) -> list[Path]:
    """The chapters to execute: toc entries whose source is a ``.py`` notebook."""
    return [p for p in (source_of(root, d) for d in toc_documents(root)) if p.suffix == ".py"]


def match_chapter(root: Path, prefix: str) -> Path:
    """The one notebook chapter whose file name starts with ``prefix`` (``"01"``, ``"01_kn"``)."""
    chapters = notebook_chapters(root)
    hits = [p for p in chapters if p.name.startswith(prefix)]
    if len(hits) == 1:
        return hits[0]
    listing = "\n".join(f"  {p.relative_to(root)}" for p in chapters) or "  (none)"
    what = "matches no" if not hits else "is ambiguous between"
    raise ParameterError(f"Chapter prefix {prefix!r} {what} chapter{'s' if hits else ''}. Chapters:\n{listing}")


def executed_path(root: Path, chapter: Path) -> Path:
    return root / BUILD / EXECUTED / chapter.relative_to(root).with_suffix(".ipynb")
