"""The built book, checked in a real browser (headless Debian Chromium driven by Playwright from pip).

The book is built once per session by ``ci/build_book.py --profile smoke`` (every chapter in ``_toc.yml`` executed
with papermill, then ``jupyter-book build --all -W -n``), unless ``EV2_BOOK_HTML`` points at an already built
``_build/html`` folder. Then every page is opened at a desktop width (1280 px) and a phone width (390 px), with
nothing outside the machine reachable: status 200, no request leaves the book (MathJax is served with it), no broken
image, no console error, no raw LaTeX delimiters left in the text, nothing wider than the page outside a scroll
container, and at the desktop width no figure shrunk below its natural size (a figure drawn wider than the text
column shows its text smaller than the body text). Every chapter has a Colab launch link to itself and a rendered
figure, and the intro links every chapter. A full-page screenshot of every page at both widths is saved under
``_build/screenshots/`` (a CI artifact). Negative controls: a page with a planted raw ``$$`` equation and one with a
planted three-panel figure must fail these checks. A chapter that raises must fail the build with its name and
failing cell.

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

from ev2lib import book

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ci"))
import build_book  # noqa: E402

CHROMIUM = os.environ.get("EV2_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# Known console noise: sphinx-thebe's double declaration and the theme-mode message. Every request must stay on the
# book's own server except the favicon the browser asks for by itself.
ALLOWED_CONSOLE = ("Identifier 'THEBE_JS_URL' has already been declared", "Got invalid theme mode")
WIDTHS = {"desktop": 1280, "phone": 390}
MIN_FIGURE_SCALE = 0.96  # desktop: a figure shown at >= 96 % of its natural width keeps ev2lib.book's 12 pt text >= 16 px
SCREENSHOTS = ROOT / "_build" / "screenshots"
# Evaluated on a page once MathJax has typeset it: what the layout and equation checks need.
LAYOUT_JS = """() => {
  const vw = document.documentElement.clientWidth;
  const article = document.querySelector('article') || document.body;
  const scrolls = el => { for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const s = getComputedStyle(p);
      if ((s.overflowX === 'auto' || s.overflowX === 'scroll') && p.getBoundingClientRect().right <= vw + 1) return true;
    } return false; };
  const wide = [...article.querySelectorAll('img, table, pre, svg, mjx-container, .cell_output > *')]
    .filter(el => { const r = el.getBoundingClientRect(); return r.width > 0 && (r.right > vw + 1 || r.left < -1); })
    .filter(el => !scrolls(el)).map(el => el.tagName.toLowerCase() + ' ' + (el.getAttribute('src') || el.className || '').toString().slice(0, 80));
  const prose = article.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, mjx-container, .highlight').forEach(e => e.remove());
  const raw = (prose.innerText.match(/\\$\\$|\\\\\\[|\\\\\\(|\\\\begin\\{/g) || []);
  const figures = [...article.querySelectorAll('.cell_output img')].filter(i => i.naturalWidth > 0)
    .map(i => ({src: i.getAttribute('src'), natural: i.naturalWidth, shown: i.getBoundingClientRect().width}));
  const math = article.querySelectorAll('.math').length, typeset = article.querySelectorAll('.math mjx-container').length;
  const headers = [...article.querySelectorAll('table th')].map(th => th.innerText.trim())
    .filter(t => /^[a-z0-9]+(_[a-z0-9]+)+$/i.test(t) || /\b[a-z]+_[a-z_]+\b/.test(t));
  const stderr = article.querySelectorAll('.output.stderr, .stderr').length;
  // In each section (h2), is there a smoke-profile figure before the section's first reference figure?
  const order = [...article.querySelectorAll('h2, .cell_output img')].map(e => e.tagName === 'H2' ? 'h2' :
    (e.closest('details.this-run.smoke') ? 'smoke' : 'reference'));
  const smokeFirst = [];
  order.join(' ').split('h2').forEach((sec, i) => { const s = sec.indexOf('smoke'), r = sec.indexOf('reference');
    if (s >= 0 && r >= 0 && s < r) smokeFirst.push(i); });
  const words = (prose.innerText.match(/\\b(unverified|recalled|third-party transcription)\\b/gi) || []);
  return {scrollWidth: document.documentElement.scrollWidth, viewport: vw, wide, raw, figures, math, typeset,
          headers, stderr, smokeFirst, words};
}"""
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
    proc = subprocess.run([sys.executable, str(ROOT / "ci" / "build_book.py"), "--profile", "smoke", "--jobs", "2"],
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
    return urlparse(url).path == "/favicon.ico"


def _open(browser, url: str, width: int, origin: str):
    """A page at ``width`` px with every request outside ``origin`` aborted (and recorded), loaded and typeset."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors = []

    def route(r):
        if urlparse(r.request.url).netloc == origin:
            return r.continue_()
        errors.append(("external", "a request that leaves the book", r.request.url))
        return r.abort()

    page.route("**/*", route)
    page.on("console", lambda m, e=errors: e.append(("console", m.text, m.location.get("url", "")))
            if m.type == "error" else None)
    page.on("pageerror", lambda exc, e=errors: e.append(("pageerror", str(exc), "")))
    page.on("response", lambda r, e=errors: e.append(("http", str(r.status), r.url)) if r.status >= 400 else None)
    response = page.goto(url, wait_until="load")
    page.wait_for_timeout(300)
    page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise ? "
                  "MathJax.startup.promise.then(() => true) : true")  # equations typeset before we look
    return page, response, errors


def _layout_problems(layout: dict, desktop: bool) -> list[str]:
    """What a reader would see wrong on a page, from :data:`LAYOUT_JS`'s record; empty when the page is fine."""
    bad = []
    if layout["scrollWidth"] > layout["viewport"] + 1:
        bad.append(f"the page scrolls sideways ({layout['scrollWidth']} px in a {layout['viewport']} px window)")
    bad += [f"wider than the page without a scroll container: {w}" for w in layout["wide"]]
    if layout["raw"]:
        bad.append(f"raw LaTeX delimiters in the text: {sorted(set(layout['raw']))}")
    if layout["typeset"] < layout["math"]:
        bad.append(f"only {layout['typeset']} of {layout['math']} equations typeset by MathJax")
    if desktop:
        bad += [f"figure {f['src']} shrunk to {f['shown']:.0f} of its {f['natural']} px: its text is smaller than the "
                f"body text (draw it with ev2lib.book.subplots, at most two panels side by side)"
                for f in layout["figures"] if f["shown"] < MIN_FIGURE_SCALE * f["natural"]]
    else:  # the text of a figure drawn with ev2lib.book's style, as the phone shows it
        bad += [f"figure {f['src'][:60]} shown at {f['shown']:.0f} of its {f['natural']} px: its text is "
                f"{_font_px(f):.1f} px on a phone, under {book.MIN_PHONE_FONT_PX} px (draw it narrower)"
                for f in layout["figures"] if f["shown"] > 0 and _font_px(f) < book.MIN_PHONE_FONT_PX]
    bad += [f"table headers a reader cannot scan: {layout['headers']}"] if layout["headers"] else []
    bad += [f"{layout['stderr']} stderr block(s) on the page"] if layout["stderr"] else []
    bad += [f"a smoke-profile figure precedes the reference figure in section(s) {layout['smokeFirst']}"] \
        if layout["smokeFirst"] else []
    bad += [f"words that doubt the paper's numbers: {sorted(set(w.lower() for w in layout['words']))}"] \
        if layout["words"] else []
    return bad


def _font_px(fig: dict) -> float:
    """The rendered size of ev2lib.book's FONT_PT text in a figure shown at ``shown`` of its ``natural`` pixels."""
    return book.FONT_PT * book.DPI / 72 * fig["shown"] / fig["natural"]


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: install Debian's browser with "
                    f"`apt-get update && apt-get install -y chromium` (do not run `playwright install`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def visited(browser, server, html_dir):
    """Open every page of the toc (plus index.html) once per width; record what each test below checks, and save
    a full-page screenshot of each under _build/screenshots/."""
    out = {}
    origin = urlparse(server).netloc
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for doc in ["index"] + PAGES:
        for view, width in WIDTHS.items():
            page, response, errors = _open(browser, f"{server}/{doc}.html", width, origin)
            if doc == "index":  # a redirect to the root page: check where it points, do not evaluate it
                out[doc] = dict(status=response.status, errors=[], broken=[], links=[], figures=0, layout={},
                                text=(html_dir / "index.html").read_text())
                page.close()
                break
            info = out.setdefault(doc, {"layout": {}, "errors": []})
            info["errors"] += errors
            if view == "desktop":
                info.update(page.evaluate("""() => ({
                    title: document.title,
                    broken: [...document.images].filter(i => i.complete && i.naturalWidth === 0).map(i => i.src),
                    figures: [...document.querySelectorAll('.cell_output img')].filter(i => i.naturalWidth > 0).length,
                    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
                    text: document.body.innerText,
                })"""), status=response.status if response else None)
            info["layout"][view] = page.evaluate(LAYOUT_JS)
            page.screenshot(path=str(SCREENSHOTS / f"{doc.replace('/', '_')}-{view}.jpg"), full_page=True, type="jpeg",
                            quality=60)
            page.close()
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
def test_pages_are_legible_at_desktop_and_phone_width(visited):
    for doc, info in visited.items():
        for view, layout in info["layout"].items():
            bad = _layout_problems(layout, desktop=view == "desktop")
            assert not bad, f"{doc}.html at {WIDTHS[view]} px: " + "; ".join(bad)
    typeset = {doc: info["layout"]["desktop"]["typeset"] for doc, info in visited.items() if info["layout"]}
    assert typeset.get("book/nas", 0) > 0, f"the reward equation in nas is not typeset offline: {typeset}"
    shots = sorted(p.name for p in SCREENSHOTS.glob("*.jpg"))
    assert len(shots) == 2 * len(PAGES), f"screenshots missing in {SCREENSHOTS}: {shots}"


@pytest.mark.slow
def test_the_checks_catch_every_planted_fault(browser, server, html_dir, tmp_path):
    """Negative controls: copies of a real chapter page with a planted raw $$ equation, a three-panel figure, a
    figure whose text is too small on a phone, a snake_case table header, a stderr block, a smoke figure before the
    section's reference figure and words that doubt the paper's numbers must each fail the checks (and the
    unplanted copy pass at both widths)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ev2lib import book

    chapter = html_dir / f"{CHAPTERS[0]}.html"
    page_html = chapter.read_text()
    assert "<article" in page_html, f"{chapter} has no <article>: the layout checks need the theme's page structure"
    with matplotlib.rc_context():
        book.style()
        fig, _ = plt.subplots(1, 3, figsize=(3 * book.TEXT_WIDTH / 2, 3.4))  # three legible half-width panels
        fig.savefig(chapter.parent / "_planted_wide.png")
        plt.close(fig)
    with matplotlib.rc_context():  # a one-panel figure drawn 1.7x the column's width: small text on a phone
        book.style()
        fig, _ = plt.subplots(figsize=(1.7 * book.TEXT_WIDTH, 3.0))
        fig.savefig(chapter.parent / "_planted_big.png")
        plt.close(fig)
    # The equation plant is the failure this check exists for: MathJax from a CDN, unreachable offline, leaves it raw.
    cdn = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
    img = '<div class="cell_output docutils container"><img alt="planted" src="{}" /></div>'
    plants = {"clean": ("", ""), "equation": ("<p>The reward is $$A \\cdot S^w \\cdot P^v$$ here.</p>", cdn),
              "figure": (img.format("_planted_wide.png"), ""), "phone": (img.format("_planted_big.png"), ""),
              "header": ("<table><tr><th>test_acc</th></tr><tr><td>1</td></tr></table>", ""),
              "stderr": ('<div class="output stderr"><pre>W1203 No CUDA runtime is found</pre></div>', ""),
              "smoke": ('<h2>Planted</h2><details class="this-run smoke" open>' + img.format("_planted_big.png")
                        + "</details>" + img.format("_planted_big.png"), ""),
              "words": ("<p>These values are recalled, from a third-party transcription.</p>", "")}
    origin = urlparse(server).netloc
    found = {}
    try:
        for name, (plant, mathjax) in plants.items():
            html = page_html.replace("</article>", plant + "</article>", 1)
            if mathjax:
                html, n = re.subn(r'src="[^"]*_static/mathjax/tex-chtml\.js"', f'src="{mathjax}"', html)
                assert n == 1, "the chapter page does not load MathJax from _static/mathjax (sphinx-mathjax-offline)"
            (chapter.parent / f"_planted_{name}.html").write_text(html)
            for width in (1280, 390):
                page, _, _ = _open(browser, f"{server}/{CHAPTERS[0].rsplit('/', 1)[0]}/_planted_{name}.html", width,
                                   origin)
                found[name, width] = _layout_problems(page.evaluate(LAYOUT_JS), desktop=width == 1280)
                page.close()
    finally:
        for f in chapter.parent.glob("_planted_*"):
            f.unlink()
    assert found["clean", 1280] == [] and found["clean", 390] == [], (found["clean", 1280], found["clean", 390])
    assert any("raw LaTeX" in b for b in found["equation", 1280]), found["equation", 1280]
    assert any("_planted_wide.png" in b and "shrunk" in b for b in found["figure", 1280]), found["figure", 1280]
    assert any("_planted_big.png" in b and "on a phone" in b for b in found["phone", 390]), found["phone", 390]
    assert any("headers" in b for b in found["header", 390]) and any("stderr" in b for b in found["stderr", 390])
    assert any("smoke-profile figure precedes" in b for b in found["smoke", 1280]), found["smoke", 1280]
    assert any("recalled" in b and "third-party transcription" in b for b in found["words", 1280]), found["words", 1280]


def _leaks(html_dir: Path) -> dict:
    """Pages that name the build machine's folders: the clone's, its parent, the temporary and the home folder."""
    import tempfile

    needles = [str(ROOT), str(ROOT.parent) + "/", tempfile.gettempdir() + "/", str(Path.home()) + "/"]
    leaks = {}
    for page in html_dir.rglob("*.html"):
        if "_static" in page.parts or "_sources" in page.parts:
            continue
        hits = [n for n in needles if n in page.read_text(errors="replace")]
        if hits:
            leaks[str(page.relative_to(html_dir))] = hits
    return leaks


@pytest.mark.slow
def test_no_page_names_the_build_machines_folders(html_dir):
    """Nothing a reader sees names where the book was built (a long path there also widened phone pages)."""
    assert not _leaks(html_dir), f"pages that name the build machine's folders: {_leaks(html_dir)}"
    planted = html_dir / "book" / "_planted_path.html"
    planted.write_text(f"<p>data from {ROOT.parent}/shared/data/cifar10_jpeg.npz</p>")  # a negative control
    try:
        assert "book/_planted_path.html" in _leaks(html_dir)
    finally:
        planted.unlink()


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
                           "smoke", "--jobs", "2"], capture_output=True, text=True, timeout=170)
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


def test_injected_parameters_are_removed_from_the_page(tmp_path):
    nb = nbformat.v4.new_notebook()
    injected = nbformat.v4.new_code_cell('profile = "smoke"')
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), injected, nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, tmp_path / "t.ipynb")
    build_book.retag_parameters(tmp_path / "t.ipynb")
    tags = [c.metadata.get("tags", []) for c in nbformat.read(tmp_path / "t.ipynb", as_version=4).cells]
    assert tags == [[], ["injected-parameters", "remove-cell"], []]
