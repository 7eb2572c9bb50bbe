"""The built HTML book in headless Chromium (``book``): every page of ``_toc.yml`` loads over ``file://``, its
images decode, it shows no error output, its math is typeset by the bundled MathJax, and it is screenshotted.

The book: a copy of the repository's book tree in a temporary folder, built with ``kq book --profile smoke``
(all chapters executed, then the HTML). Executed notebooks that an earlier fixture of this pytest session left
under the session's temporary folder (e.g. chapter 00 of ``test_book.py``: same chapter source, smoke profile)
are copied in and not executed again; a temporary book of this session that already has the whole site is
used as it is. ``KQ_BROWSER_BOOK=<book root>`` checks an existing build instead (its ``_build/html``), e.g.
``KQ_BROWSER_BOOK=. pytest tests/book/test_browser.py`` after ``kq book`` (it writes ``_build/screenshots`` there).

Chromium: Debian's ``chromium`` (``/usr/bin/chromium``); when it is missing the fixture installs it with
apt-get (root only: otherwise the tests are skipped), waiting up to 10 minutes for another apt-get's dpkg lock
(``-o DPkg::Lock::Timeout=600``). A failed installation fails the tests.

Per page, two Chromium processes (each with a fresh profile, a timeout and its process group killed after):

* ``--dump-dom`` of a probe copy of the page (the page plus one inline ``<script>`` at the top of ``<head>``,
  written beside it so that every relative URL is the same). The script records script errors and failed
  resource loads (scripts, style sheets, images) and, once the page has loaded and MathJax's startup promise
  has settled, writes each ``<img>``'s ``complete`` and ``naturalWidth`` and the MathJax state as attributes
  into the DOM that Chromium dumps. ``--virtual-time-budget`` lets the page's timers and MathJax finish first.
* ``--screenshot`` of the page itself (1280x2000) into ``<book>/_build/screenshots/<page>.png``.

Checks on the dumped DOM (the main content is ``article.bd-article`` of the Sphinx book theme):

* loads: the probe ran to the end (``load`` fired, MathJax settled), no script errors (but the upstream ones
  in ``KNOWN_ERRORS``), no failed resources, the article has a non-empty ``<h1>``;
* images: every ``<img>`` of the article is complete with ``naturalWidth > 0``, and its file exists, is larger
  than 1 kB and starts like a PNG/JPEG/GIF/WebP/SVG file (data: URIs: decoded size only);
* no error output: no myst-nb ``.output.traceback`` blocks, no ``.output.stderr`` block mentioning a traceback
  or an error, no output of any kind containing "Traceback (most recent call last)" or an ANSI-red "...Error";
* math: every Sphinx math element (``.math``) of the article holds an ``mjx-container``, MathJax reported no
  TeX error (``mjx-merror``, or an undefined macro shown in red), and no text outside code/scripts (myst marks
  prose ``mathjax_ignore``: MathJax only typesets ``.math``) still contains ``\\(``, ``\\[``, ``$$`` or
  ``\\begin{``;
* screenshot: a 1280x2000 PNG that is not blank.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from kqlib.book.run.runner import notebook_chapters, toc_documents

from test_book import REPO

pytestmark = [pytest.mark.book, pytest.mark.timeout(3600)]

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--disable-dev-shm-usage", "--disable-extensions", "--no-default-browser-check", "--mute-audio",
         "--hide-scrollbars"]
VIRTUAL_TIME_MS = 10000
PAGE_TIMEOUT_S = 90
WINDOW = (1280, 2000)
PROFILE = "smoke"
GIVEN_BOOK = os.environ.get("KQ_BROWSER_BOOK")  # check this book's existing build instead of building one
DOCS = toc_documents(Path(GIVEN_BOOK).resolve() if GIVEN_BOOK else REPO)  # the pages: root document first
PROBE_SUFFIX = ".kq-probe.html"
# Errors of the theme/extension stack that are not the book's: Jupyter Book 1.x emits sphinx-thebe's inline
# `<script>const THEBE_JS_URL = ...</script>` twice in every page's <head>, so the second one throws (the first has
# already set the constants; the launch button still works).
KNOWN_ERRORS = [re.compile(r"Identifier 'THEBE_JS_URL' has already been declared")]

PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) errors.push('failed to load ' + (t.src || t.href));
    else errors.push('script error: ' + (e.message || e) + ' at ' + (e.filename || '?') + ':' + (e.lineno || '?'));
  }, true);
  window.addEventListener('unhandledrejection', function (e) {
    errors.push('unhandled rejection: ' + ((e.reason && e.reason.message) || e.reason));
  });
  window.addEventListener('load', function () {
    function finish(state) {
      document.querySelectorAll('img').forEach(function (img) {
        img.setAttribute('data-kq-complete', img.complete ? '1' : '0');
        img.setAttribute('data-kq-natural-width', String(img.naturalWidth));
      });
      var root = document.documentElement;
      root.setAttribute('data-kq-mathjax', state);
      root.setAttribute('data-kq-errors', JSON.stringify(errors));
      root.setAttribute('data-kq-done', '1');
    }
    var mj = window.MathJax;
    if (mj && mj.startup && mj.startup.promise) {
      mj.startup.promise.then(function () { finish('typeset'); },
                              function (e) { finish('error: ' + ((e && e.message) || e)); });
    } else {
      finish(mj ? 'not started' : 'absent');
    }
  });
})();
</script>
"""


# ------------------------------------------------------------------------------------------- chromium


# another apt-get/dpkg (unattended upgrades, a parallel job) may hold the dpkg and list locks: wait for them
APT_GET = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]


def _install_chromium() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([*APT_GET, "update"], [*APT_GET, "install", "-y", "chromium"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
        except (OSError, subprocess.TimeoutExpired) as err:
            pytest.fail(f"Installing chromium failed: `{' '.join(cmd)}`: {err}", pytrace=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            pytest.fail(f"Installing chromium failed: `{' '.join(cmd)}` exited with {proc.returncode}:\n{tail}",
                        pytrace=False)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's chromium; installed with apt-get when missing (as root; otherwise skip)."""
    found = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if not found:
        if os.geteuid() != 0:
            pytest.skip("chromium is not installed and installing it needs root (apt-get install chromium)")
        if not shutil.which("apt-get"):
            pytest.fail("chromium is not installed and there is no apt-get to install it", pytrace=False)
        _install_chromium()
        found = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
        if not found:
            pytest.fail(f"`apt-get install -y chromium` succeeded but {CHROMIUM} is not there", pytrace=False)
    proc = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"`{found} --version` exited with {proc.returncode}:\n{proc.stderr[-2000:]}", pytrace=False)
    return found


def _run_chromium(exe: str, args: list[str], url: str, what: str) -> str:
    """One headless Chromium process with a fresh profile; returns stdout. Its process group is killed after."""
    with tempfile.TemporaryDirectory(prefix="kq-chromium-") as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={VIRTUAL_TIME_MS}", *args, url]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env={**os.environ, "HOME": profile})
        try:
            out, err = proc.communicate(timeout=PAGE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"{what}: chromium did not finish within {PAGE_TIMEOUT_S} s\n{err[-2000:]}", pytrace=False)
        finally:
            try:  # helpers (zygote, renderer) that outlived the browser: same process group, ours
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.returncode != 0:
            pytest.fail(f"{what}: chromium exited with {proc.returncode}\n{err[-3000:]}", pytrace=False)
        return out


# ----------------------------------------------------------------------------------------------- book


def _html_page(root: Path, doc: str) -> Path:
    return root / "_build" / "html" / f"{doc}.html"


def _has_site(root: Path) -> bool:
    return (root / "_build" / "html" / "index.html").exists() and all(_html_page(root, d).exists() for d in DOCS)


def _copy_book_tree(dest: Path) -> None:
    """The book sources as in the repository: config, toc, bibliography and the folders of the toc's documents."""
    dest.mkdir(parents=True)
    for path in [REPO / "_config.yml", REPO / "_toc.yml", *REPO.glob("*.bib")]:
        shutil.copy2(path, dest / path.name)
    ignore = shutil.ignore_patterns("_build", ".*", "__pycache__", "*.ipynb")
    for folder in sorted({(REPO / d).parent for d in DOCS}):
        if folder == REPO:
            continue
        shutil.copytree(folder, dest / folder.relative_to(REPO), ignore=ignore)
    for doc in DOCS:  # prose pages at the top level of the repository
        for suffix in (".md", ".py"):
            src = REPO / (doc + suffix)
            if src.parent == REPO and src.exists():
                shutil.copy2(src, dest / src.name)


def _session_books(basetemp: Path, exclude: Path) -> list[Path]:
    """Book roots that other fixtures of this session built under the session's temporary folder."""
    roots = {p.parent for p in basetemp.glob("*/_toc.yml")} | {p.parent for p in basetemp.glob("*/*/_toc.yml")}
    return sorted(r for r in roots if r.resolve() != exclude.resolve())


def _reusable_notebook(candidate: Path, chapter: Path) -> Path | None:
    """``candidate``'s executed notebook of ``chapter`` when it ran the same source with the smoke profile."""
    rel = chapter.relative_to(REPO)
    source, executed = candidate / rel, candidate / "_build" / "executed" / rel.with_suffix(".ipynb")
    try:
        if not executed.exists() or source.read_text() != chapter.read_text():
            return None
        meta = json.loads(executed.read_text()).get("metadata", {}).get("papermill", {})
    except (OSError, ValueError):
        return None
    return executed if meta.get("parameters", {}).get("profile") == PROFILE else None


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """A book root whose ``_build/html`` holds every page of the toc (see the module docstring)."""
    if GIVEN_BOOK:
        root = Path(GIVEN_BOOK).resolve()
        assert _has_site(root), f"KQ_BROWSER_BOOK={GIVEN_BOOK}: {root}/_build/html lacks pages of its toc: run `kq book`"
        return root
    basetemp = tmp_path_factory.getbasetemp()
    toc = (REPO / "_toc.yml").read_text()
    for candidate in _session_books(basetemp, exclude=basetemp / "none"):
        if (candidate / "_toc.yml").read_text() == toc and _has_site(candidate):
            return candidate
    root = tmp_path_factory.mktemp("browser_book") / "bookroot"
    _copy_book_tree(root)
    others = _session_books(basetemp, exclude=root)
    missing = []
    for chapter in notebook_chapters(REPO):
        found = next((nb for c in others if (nb := _reusable_notebook(c, chapter))), None)
        if found is None:
            missing.append(chapter.name.split("_")[0])
            continue
        dest = root / "_build" / "executed" / chapter.relative_to(REPO).with_suffix(".ipynb")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(found, dest)
        # the rest of what that execution wrote: its results JSON and its tidy data (the page links them)
        other_build = found.parent.parent.parent  # <book>/_build (found: _build/executed/book/NN.ipynb)
        for sub in (Path("results") / f"{chapter.stem}.json", Path("data") / chapter.stem):
            src = other_build / sub
            if src.is_file():
                (root / "_build" / sub).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, root / "_build" / sub)
            elif src.is_dir():
                shutil.copytree(src, root / "_build" / sub, dirs_exist_ok=True)
    kq = Path(sys.executable).with_name("kq")
    cmd = [str(kq), "book", "--profile", PROFILE, "--root", str(root)]
    cmd += [a for p in missing for a in ("--only", p)] if missing else ["--no-execute"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3300, env=env, cwd=root)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
    assert _has_site(root), f"{' '.join(cmd)} left pages of the toc unbuilt:\n{proc.stdout[-3000:]}"
    return root


# ------------------------------------------------------------------------------------------- rendering


class Rendered:
    def __init__(self, doc: str, page: Path, soup, screenshot: Path, seconds: float):
        self.doc, self.page, self.soup, self.screenshot, self.seconds = doc, page, soup, screenshot, seconds
        root = soup.find("html")
        self.attrs = dict(root.attrs) if root is not None else {}
        self.article = soup.select_one("article.bd-article") or soup.find("main") or soup.body


def _screenshot_name(doc: str) -> str:
    names = [Path(d).name for d in DOCS]
    return (Path(doc).name if names.count(Path(doc).name) == 1 else doc.replace("/", "-")) + ".png"


@pytest.fixture(scope="module")
def render(chromium, built_book):
    """``render(doc)``: the page's dumped DOM and screenshot (rendered once per page)."""
    from bs4 import BeautifulSoup

    cache: dict[str, Rendered] = {}
    shots = built_book / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)

    def get(doc: str) -> Rendered:
        if doc in cache:
            return cache[doc]
        page = _html_page(built_book, doc)
        assert page.exists(), f"{doc}: {page} was not built"
        t0 = time.time()
        text = page.read_text()
        head = re.search(r"<head[^>]*>", text)
        assert head, f"{doc}: {page} has no <head>"
        probe = page.with_name(page.stem + PROBE_SUFFIX)
        probe.write_text(text[:head.end()] + PROBE + text[head.end():])
        try:
            dom = _run_chromium(chromium, ["--dump-dom"], probe.as_uri(), f"{doc} (dump-dom)")
        finally:
            probe.unlink(missing_ok=True)
        shot = shots / _screenshot_name(doc)
        shot.unlink(missing_ok=True)
        _run_chromium(chromium, [f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}"],
                      page.as_uri(), f"{doc} (screenshot)")
        cache[doc] = Rendered(doc, page, BeautifulSoup(dom, "html.parser"), shot, time.time() - t0)
        return cache[doc]

    return get


# --------------------------------------------------------------------------------------------- checks


def _local_file(page: Path, src: str) -> Path | None:
    parts = urlsplit(src)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme:
        return None
    return (page.parent / unquote(parts.path)).resolve()


def _image_problem(page: Path, src: str) -> str | None:
    if src.startswith("data:"):
        payload = src.split(",", 1)[-1]
        try:
            size = len(base64.b64decode(payload)) if ";base64" in src.split(",", 1)[0] else len(unquote(payload))
        except ValueError:
            return "undecodable data: URI"
        return None if size > 100 else f"data: URI of only {size} bytes"
    path = _local_file(page, src)
    if path is None:
        return f"not a local file ({src}): the book must work offline"
    if not path.is_file():
        return f"file {path} does not exist"
    size = path.stat().st_size
    if size <= 1024:
        return f"file {path} has only {size} bytes"
    head = path.read_bytes()[:512]
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff") or head[:6] in (b"GIF87a", b"GIF89a") \
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or b"<svg" in head.lower():
        return None
    return f"file {path} is not a PNG/JPEG/GIF/WebP/SVG image"


@pytest.mark.parametrize("doc", DOCS)
def test_page_loads(render, doc):
    r = render(doc)
    assert r.attrs.get("data-kq-done") == "1", (
        f"{doc}: the page's load event (and MathJax startup) did not finish within the "
        f"{VIRTUAL_TIME_MS} ms virtual-time budget; html attributes: {r.attrs}")
    errors = [e for e in json.loads(r.attrs.get("data-kq-errors", "[]"))
              if not any(k.search(e) for k in KNOWN_ERRORS)]
    assert not errors, f"{doc}: errors while loading {r.page}:\n" + "\n".join(errors)
    assert r.article is not None, f"{doc}: no main content in the rendered page"
    h1 = r.article.find("h1")
    assert h1 is not None and h1.get_text(strip=True), f"{doc}: the main content has no title (<h1>)"


@pytest.mark.parametrize("doc", DOCS)
def test_images_load(render, doc):
    r = render(doc)
    images = r.article.find_all("img")
    problems = []
    for img in images:
        src = img.get("src", "")
        if img.get("data-kq-complete") != "1" or img.get("data-kq-natural-width", "0") in ("", "0"):
            problems.append(f"{src}: not loaded in the browser (complete={img.get('data-kq-complete')}, "
                            f"naturalWidth={img.get('data-kq-natural-width')})")
        problem = _image_problem(r.page, src)
        if problem:
            problems.append(f"{src}: {problem}")
    assert not problems, f"{doc}: {len(problems)} of {len(images)} image(s) broken:\n" + "\n".join(problems)


_TRACEBACK = "Traceback (most recent call last)"
_ERROR_WORD = re.compile(r"\b(Traceback|[A-Z]\w*Error|Error|Exception)\b")


@pytest.mark.parametrize("doc", DOCS)
def test_no_error_output(render, doc):
    r = render(doc)
    found = []
    for node in r.article.select(".output.traceback, .output_error"):
        found.append(f"traceback block: {node.get_text()[:300]!r}")
    for node in r.article.select(".output.stderr"):
        text = node.get_text()
        if _ERROR_WORD.search(text):
            found.append(f"stderr output: {text.strip()[:300]!r}")
    for node in r.article.select(".cell_output, .output"):
        text = node.get_text()
        if _TRACEBACK in text:
            found.append(f"output with a traceback: {text.strip()[:300]!r}")
        for red in node.select('[class*="ansi-red"]'):
            if _ERROR_WORD.search(red.get_text()):
                found.append(f"red (ANSI) error text: {red.get_text().strip()[:200]!r}")
    found = list(dict.fromkeys(found))
    assert not found, f"{doc}: error output on the page:\n" + "\n".join(found)


_RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{")
_NOT_PROSE = {"script", "style", "pre", "code", "textarea", "kbd", "samp", "mjx-assistive-mml", "math"}


@pytest.mark.parametrize("doc", DOCS)
def test_math_typeset(render, doc):
    r = render(doc)
    maths = r.article.select(".math")
    untypeset = [m for m in maths if m.find("mjx-container") is None]
    assert not untypeset, (f"{doc}: {len(untypeset)} of {len(maths)} math element(s) not typeset by MathJax "
                           f"(state {r.attrs.get('data-kq-mathjax')!r}), e.g. {untypeset[0].get_text()[:120]!r}")
    if maths:
        assert r.attrs.get("data-kq-mathjax") == "typeset", f"{doc}: MathJax: {r.attrs.get('data-kq-mathjax')}"
    errors = [e.get("data-mjx-error") or e.get_text() for e in r.article.find_all("mjx-merror")]
    # an undefined macro is not an error for MathJax: it shows the macro's name in red (noundefined extension)
    errors += [f"undefined {t.get_text()}" for t in r.article.select('mjx-assistive-mml mtext[mathcolor="red"]')]
    assert not errors, f"{doc}: TeX errors: " + "; ".join(errors)
    raw = []
    for text in r.article.find_all(string=_RAW_TEX):
        if any(p.name in _NOT_PROSE for p in text.parents):
            continue
        raw.append(text.strip()[:120])
    assert not raw, f"{doc}: raw TeX left in the text (MathJax did not process it):\n" + "\n".join(map(repr, raw))


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("doc", DOCS)
def test_screenshot(render, doc):
    r = render(doc)
    assert r.screenshot.is_file(), f"{doc}: chromium wrote no screenshot {r.screenshot}"
    assert _png_size(r.screenshot) == WINDOW, f"{doc}: screenshot {r.screenshot} is {_png_size(r.screenshot)}"
    assert r.screenshot.stat().st_size > 20_000, f"{doc}: screenshot {r.screenshot} looks empty"
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(r.screenshot) as img:
        low, high = img.convert("L").getextrema()
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
    assert high - low > 100 and (colours is None or len(colours) > 50), \
        f"{doc}: screenshot {r.screenshot} is (nearly) blank"


# ------------------------------------------------------------------------ data downloads and the explorer

CHAPTER_DOCS = [str(c.relative_to(REPO).with_suffix("")) for c in notebook_chapters(REPO)]
EXPLORER_DOC = "book/explorer"
EXPLORER_PREFIX = "window.KQ_EXPLORER_DATA = "


def _explorer_data(root: Path) -> dict:
    text = (root / "_build" / "html" / "explorer" / "explorer-data.js").read_text()
    assert text.startswith(EXPLORER_PREFIX)
    return json.loads(text[len(EXPLORER_PREFIX):].rstrip().rstrip(";"))


@pytest.mark.parametrize("doc", CHAPTER_DOCS)
def test_chapter_links_its_data(built_book, doc):
    """Every chapter page links its tables (CSV), its results JSON and its notebook, each an existing file of
    the site that reads back; it shows the `kq run` command and the run record; every figure drawn from a
    table has the table linked under it."""
    from bs4 import BeautifulSoup
    import pandas as pd

    page = _html_page(built_book, doc)
    soup = BeautifulSoup(page.read_text(), "html.parser")
    stem = Path(doc).name
    site = built_book / "_build" / "html"
    manifest = json.loads((site / "data" / stem / "manifest.json").read_text())
    top = soup.select_one(".kq-repro")
    assert top is not None, f"{doc}: no 'Data and reproduction' block"
    links = {}
    for a in top.select("a.kq-data-link"):
        target = _local_file(page, a["href"])
        assert target is not None and target.is_file(), f"{doc}: link {a['href']} does not resolve to a file"
        assert site.resolve() in target.resolve().parents, f"{doc}: {a['href']} points outside the site"
        links[target.name] = target
    expected = {t["file"] for t in manifest["tables"].values()} | {f"{stem}.json", f"{stem}.ipynb", f"{stem}.py"}
    assert set(links) == expected, f"{doc}: links {sorted(links)} != {sorted(expected)}"
    for name, t in manifest["tables"].items():
        df = pd.read_csv(links[t["file"]])
        assert len(df) == t["rows"] and list(df.columns) == [c["name"] for c in t["columns"]], name
    results = json.loads(links[f"{stem}.json"].read_text())
    assert results == json.loads((built_book / "_build" / "results" / f"{stem}.json").read_text())
    text = top.get_text(" ")
    assert f"kq run {stem.split('_')[0]} --profile {PROFILE}" in text
    assert results["run"]["git_revision"] in text
    assert all(fp in text for fp in results["run"]["fingerprints"].values())
    nb = json.loads(links[f"{stem}.ipynb"].read_text())
    assert nb["metadata"]["papermill"]["parameters"]["profile"] == PROFILE
    # the theme's download button offers the executed notebook
    sources = [a["href"] for a in soup.find_all("a", href=True) if a["href"].endswith(f"_sources/{doc}.ipynb")]
    assert sources and all(_local_file(page, h).is_file() for h in sources), f"{doc}: no working notebook download"
    figures = {f for t in manifest["tables"].values() for f in t["figures"]}
    blocks = soup.select(".kq-figure-data")
    saved = [f for f in figures if f + ".png" in json.dumps(results.get("numbers", {}).get("figures", {}))]
    assert len(blocks) >= len(saved), f"{doc}: {len(blocks)} figure data blocks for the figures {saved}"
    for block in blocks:
        for a in block.select("a.kq-data-link"):
            target = _local_file(page, a["href"])
            assert target is not None and target.is_file(), f"{doc}: figure link {a['href']} is broken"


EXPLORER_PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    errors.push('script error: ' + (e.message || e) + ' at ' + (e.filename || '?') + ':' + (e.lineno || '?'));
  }, true);
  function keys() {
    return Array.prototype.map.call(document.querySelectorAll('#kq-facts tbody tr'),
                                    function (tr) { return tr.getAttribute('data-key'); });
  }
  function done() {
    var root = document.documentElement;
    root.setAttribute('data-kq-errors', JSON.stringify(errors));
    root.setAttribute('data-kq-done', '1');
  }
  window.addEventListener('load', function () {
    var root = document.documentElement;
    var app = document.getElementById('kq-explorer');
    if (!app || app.getAttribute('data-kq-ready') !== '1') { errors.push('explorer not ready'); done(); return; }
    root.setAttribute('data-kq-all', JSON.stringify(keys()));
    document.querySelector('#kq-facts th[data-col="cs2"]').click();
    root.setAttribute('data-kq-sorted', JSON.stringify(keys()));
    var box = document.getElementById('kq-search');
    box.value = SEARCH_TERM;
    box.dispatchEvent(new Event('input', {bubbles: true}));
    root.setAttribute('data-kq-found', JSON.stringify(keys()));
    var link = document.querySelector('#kq-facts tbody tr a.kq-open');
    if (!link) { errors.push('no row after the search'); done(); return; }
    root.setAttribute('data-kq-clicked', link.closest('tr').getAttribute('data-key'));
    link.click();
    setTimeout(done, 500);
  });
})();
</script>
"""


def test_explorer_search_and_detail(chromium, built_book, tmp_path):
    """The explorer lists every fact of the run; sorting, the search box and a click on a fact work in the
    browser (in a copy of the site: nothing outside _build/html is needed), and the fact's detail shows its
    queries, Jaccard heatmap and KN sets from the data."""
    from bs4 import BeautifulSoup
    import pandas as pd

    data = _explorer_data(built_book)
    facts = {f["key"]: f for f in data["facts"]}
    expected = set()
    for cs_path in (built_book / "_build" / "html" / "data").glob("*/consistency.csv"):
        folder = cs_path.parent
        if not {(folder / n).exists() for n in ("queries.csv", "kn_sets.csv")} == {True}:
            continue
        cs = pd.read_csv(cs_path)
        expected |= {"|".join(map(str, r)) for r in cs[["model", "method", "fact_id"]].itertuples(index=False)}
    assert expected and set(facts) == expected, "the explorer does not hold every fact of the run"
    used = set()  # every fact any chapter's table mentions is in the explorer
    for table in (built_book / "_build" / "html" / "data").glob("*/*.csv"):
        df = pd.read_csv(table)
        if {"model", "fact_id"} <= set(df.columns):
            used |= set(df[["model", "fact_id"]].itertuples(index=False, name=None))
    assert used and used <= {(f["model"], f["fact_id"]) for f in facts.values()}
    # search for the object of the fact with the most queries: the expected hits are computed here
    target = max(facts.values(), key=lambda f: (f["n_queries"], f["key"]))
    term = target["obj"]
    def hay(f):
        d = data["details"][f["key"]]
        return " ".join(str(x) for x in [f["model"], f["method"], f["relation"], f["subject"], f["obj"], f["fact_id"],
                                         f["class_static"], f["class_otsu"]] + [q["prompt"] for q in d["queries"]]).lower()
    hits = {k for k, f in facts.items() if all(t in hay(f) for t in term.lower().split())}

    copied = tmp_path / "copied-site"
    shutil.copytree(built_book / "_build" / "html", copied)
    page = copied / f"{EXPLORER_DOC}.html"
    text = page.read_text()
    head = re.search(r"<head[^>]*>", text)
    probe = page.with_name(page.stem + PROBE_SUFFIX)
    probe.write_text(text[:head.end()] + EXPLORER_PROBE.replace("SEARCH_TERM", json.dumps(term)) + text[head.end():])
    try:
        dom = _run_chromium(chromium, ["--dump-dom"], probe.as_uri(), "explorer (dump-dom)")
    finally:
        probe.unlink(missing_ok=True)
    soup = BeautifulSoup(dom, "html.parser")
    attrs = soup.find("html").attrs
    assert attrs.get("data-kq-done") == "1", f"the explorer probe did not finish: {attrs}"
    errors = [e for e in json.loads(attrs.get("data-kq-errors", "[]")) if not any(k.search(e) for k in KNOWN_ERRORS)]
    assert not errors, errors
    shown = json.loads(attrs["data-kq-all"])
    assert sorted(shown) == sorted(facts), "the table does not show every fact"
    order = [facts[k]["cs2"] for k in json.loads(attrs["data-kq-sorted"])]
    assert order == sorted(order), "clicking the CS2 header did not sort by CS2"
    found = json.loads(attrs["data-kq-found"])
    assert set(found) == hits and target["key"] in found, (term, found, hits)
    key = attrs["data-kq-clicked"]
    detail = soup.select_one("#kq-detail")
    assert detail is not None and detail.get("data-key") == key and not detail.has_attr("hidden")
    f, d = facts[key], data["details"][key]
    assert detail.select_one("#kq-detail-title").get_text() == f"{f['subject']} → {f['obj']}"
    q_rows = detail.select("#kq-queries tbody tr")
    assert len(q_rows) == f["n_queries"] == len(d["queries"])
    for tr, q in zip(q_rows, d["queries"]):
        cells = [td.get_text() for td in tr.find_all("td")]
        assert cells[1].startswith(q["prompt"]) and cells[3] == str(q["rank"])
        assert float(cells[2]) == pytest.approx(q["prob"], abs=5e-4)
    rects = detail.select("svg#kq-jaccard rect.kq-cell")
    assert len(rects) == len(d["queries"]) ** 2
    for r in rects:
        assert float(r["data-value"]) == pytest.approx(d["jaccard"][int(r["data-i"])][int(r["data-j"])])
    kn_sets = detail.select("#kq-kn-sets details")
    assert len(kn_sets) == len(d["queries"])
    for det, q in zip(kn_sets, d["queries"]):
        assert len(det.select("tbody tr")) == min(q["n_kns"], data["kn_cap"]) == len(q["kns"])
    assert len(detail.select("h4.kq-appearance")) == len(d["appearances"])
