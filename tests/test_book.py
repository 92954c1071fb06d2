"""The built book, checked in a real browser (headless Debian Chromium driven by Playwright from pip).

The book is built once per session by ``ci/build_book.py --profile smoke`` (every chapter in ``_toc.yml`` executed
with papermill, then ``jupyter-book build --all -W -n``), unless ``EV2_BOOK_HTML`` points at an already built
``_build/html`` folder. Then every page is opened: status 200, no broken image, no console error beyond the known
offline CDN noise (book-tooling.md §9), a Colab launch link and a rendered figure on every chapter, and an intro
page that links to every chapter. A chapter that raises must fail the build with its name and failing cell.

Needs ``chromium`` from Debian (``apt-get install -y chromium``); never ``playwright install``.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ci"))
import build_book  # noqa: E402

CHROMIUM = os.environ.get("EV2_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# Offline noise (book-tooling.md §9): CDN scripts (require.js, the ipywidgets html-manager, MathJax) that cannot
# load without internet, sphinx-thebe's double declaration, the theme-mode message and a missing favicon.
CDN_HOSTS = ("cdnjs.cloudflare.com", "cdn.jsdelivr.net", "unpkg.com")
ALLOWED_CONSOLE = ("Identifier 'THEBE_JS_URL' has already been declared", "Got invalid theme mode")
CHAPTERS = [c[:-len(".ipynb")] for c in build_book.chapters(ROOT)]  # e.g. "book/anatomy"
PAGES = build_book.toc_files(ROOT / "_toc.yml")


@pytest.fixture(scope="session")
def html_dir() -> Path:
    """The built HTML: $EV2_BOOK_HTML, or a fresh smoke build (slow: executes every chapter)."""
    if os.environ.get("EV2_BOOK_HTML"):
        path = Path(os.environ["EV2_BOOK_HTML"]).resolve()
        assert (path / "index.html").exists(), f"EV2_BOOK_HTML={path} has no index.html"
        return path
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    proc = subprocess.run([sys.executable, str(ROOT / "ci" / "build_book.py"), "--profile", "smoke"],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    print(proc.stdout)
    assert proc.returncode == 0, f"the book build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "zero warnings" in proc.stdout
    return ROOT / "_build" / "book_exec" / "_build" / "html"


@pytest.fixture(scope="session")
def server(html_dir):
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _is_noise_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return any(host == h or host.endswith("." + h) for h in CDN_HOSTS) or urlparse(url).path == "/favicon.ico"


@pytest.fixture(scope="session")
def visited(server, html_dir):
    """Open every page of the toc (plus index.html) once; record what each test below checks."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: install Debian's browser with "
                    f"`apt-get update && apt-get install -y chromium` (do not run `playwright install`)")
    from playwright.sync_api import sync_playwright

    out = {}
    origin = urlparse(server).netloc
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for doc in ["index"] + PAGES:
            page = browser.new_page()  # one page per document: no listener or late error leaks between them
            # Nothing outside this machine is reachable: fail external requests at once instead of waiting on DNS.
            page.route("**/*", lambda route: route.continue_() if urlparse(route.request.url).netloc == origin
                       else route.abort())
            errors = []
            page.on("console", lambda m, e=errors: e.append(("console", m.text, m.location.get("url", "")))
                    if m.type == "error" else None)
            page.on("pageerror", lambda exc, e=errors: e.append(("pageerror", str(exc), "")))
            page.on("requestfailed", lambda r, e=errors: e.append(("requestfailed", r.failure or "", r.url)))
            page.on("response", lambda r, e=errors: e.append(("http", str(r.status), r.url)) if r.status >= 400
                    else None)
            response = page.goto(f"{server}/{doc}.html", wait_until="load")
            if doc == "index":  # a redirect to the root page: check where it points, do not evaluate it
                out[doc] = dict(status=response.status, errors=[], broken=[], links=[], figures=0,
                                text=(html_dir / "index.html").read_text())
                page.close()
                continue
            page.wait_for_timeout(300)
            info = page.evaluate("""() => ({
                title: document.title,
                broken: [...document.images].filter(i => i.complete && i.naturalWidth === 0).map(i => i.src),
                figures: [...document.querySelectorAll('.cell_output img')].filter(i => i.naturalWidth > 0).length,
                links: [...document.querySelectorAll('a[href]')].map(a => a.href),
                text: document.body.innerText,
            })""")
            info.update(status=response.status if response else None, errors=errors)
            out[doc] = info
            page.close()
        browser.close()
    return out


def _unexpected(errors):
    bad = []
    for kind, text, url in errors:
        if url and _is_noise_url(url):
            continue
        if kind in ("console", "pageerror") and any(a in text for a in ALLOWED_CONSOLE):
            continue
        bad.append((kind, text, url))
    return bad


@pytest.mark.slow
def test_every_page_loads_without_errors(visited):
    assert set(visited) == {"index", *PAGES}
    for doc, info in visited.items():
        assert info["status"] == 200, f"{doc}.html: HTTP {info['status']}"
        assert not info["broken"], f"{doc}.html: broken images {info['broken']}"
        assert not _unexpected(info["errors"]), f"{doc}.html: unexpected browser errors {_unexpected(info['errors'])}"
        for marker in ("Traceback (most recent call last)", "An Exception was encountered"):
            assert marker not in info["text"], f"{doc}.html shows an error: {marker!r}"


@pytest.mark.slow
def test_chapters_have_colab_link_and_figures(visited):
    assert CHAPTERS, "_toc.yml lists no chapter notebooks"
    url = build_book.yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    owner_repo = urlparse(url).path.strip("/")
    for chapter in CHAPTERS:
        info = visited[chapter]
        colab = [h for h in info["links"] if h.startswith("https://colab.research.google.com/github/")]
        want = f"https://colab.research.google.com/github/{owner_repo}/blob/main/{chapter}.ipynb"
        assert want in colab, f"{chapter}.html: no Colab launch link {want} (found {colab})"
        assert info["figures"] >= 1, f"{chapter}.html: no rendered figure"


@pytest.mark.slow
def test_intro_links_every_chapter(visited, server):
    root = build_book.toc_files(ROOT / "_toc.yml")[0]
    assert f"{root}.html" in visited["index"]["text"], "index.html does not lead to the intro page"
    links = {urlparse(h).path for h in visited[root]["links"] if h.startswith(server)}
    missing = [c for c in PAGES[1:] if f"/{c}.html" not in links]
    assert not missing, f"{root}.html does not link to {missing}"


def _tiny_book(tmp_path: Path, body: str) -> Path:
    (tmp_path / "book").mkdir()
    (tmp_path / "_config.yml").write_text((ROOT / "_config.yml").read_text())
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n- file: book/tiny\n")
    (tmp_path / "book" / "intro.md").write_text("# Tiny\n\n```{tableofcontents}\n```\n")
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "colab"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny chapter"), params, nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "book" / "tiny.ipynb")
    return tmp_path


def test_failing_chapter_fails_build_with_name_and_cell(tmp_path):
    root = _tiny_book(tmp_path, 'assert profile == "smoke"\nraise RuntimeError("deliberate failure")')
    proc = subprocess.run([sys.executable, str(ROOT / "ci" / "build_book.py"), "--root", str(root), "--profile",
                           "smoke"], capture_output=True, text=True, timeout=170)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert "chapter book/tiny.ipynb failed in cell 3 " in err, err  # cell 3 of the committed notebook
    assert '`raise RuntimeError("deliberate failure")`' in err, err  # the failing line
    assert "RuntimeError: deliberate failure" in err, err
    assert "| book/tiny.ipynb" in proc.stdout and "FAILED" in proc.stdout, proc.stdout  # the timing table
    timings = json.loads((root / "_build" / "book_exec" / "timings.json").read_text())
    assert timings[0]["chapter"] == "book/tiny.ipynb" and timings[0]["status"] == "FAILED"


def test_time_budget_is_enforced(tmp_path):
    root = _tiny_book(tmp_path, "import time\ntime.sleep(60)")
    proc = subprocess.run([sys.executable, str(ROOT / "ci" / "build_book.py"), "--root", str(root), "--profile",
                           "smoke", "--budget", "8", "--no-html"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "book/tiny.ipynb exceeded its time budget of 8 s" in proc.stderr, proc.stderr


def test_toc_parsing_and_report(tmp_path):
    assert PAGES[0] == "book/intro" and "book/anatomy" in PAGES
    table = build_book.report([("book/anatomy.ipynb", "smoke", 12.345, "ok")], 180)
    assert re.search(r"\| book/anatomy.ipynb\s+\| smoke\s+\|\s+12.3 \|\s+180 \| ok \|", table), table
    text = textwrap.dedent("""\
        format: jb-book
        root: book/intro
        parts:
        - caption: A
          chapters:
          - file: book/a.ipynb
            sections:
            - file: book/b
        """)
    p = tmp_path / "_toc.yml"
    p.write_text(text)
    assert build_book.toc_files(p) == ["book/intro", "book/a", "book/b"]
