"""Every built page opened in headless Chromium, served from localhost with the network cut off:
no console errors, no failed or remote requests, equations typeset by the local MathJax, figures
loaded with real alt text. Screenshots go to `_build/screenshots/`.

Chromium is Debian's package (`make test` installs it: scripts/install_chromium.sh), driven by
Playwright; `$CHROMIUM` names another binary."""
import functools
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "_build" / "screenshots"
#: Pages that must show typeset equations, and how many at least.
MATH = {"book/intro.html": 5, "book/01_data.html": 1, "book/03_autoencoders.html": 3, "book/05_cnn.html": 1}


def chromium() -> str:
    for name in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    pytest.skip("Chromium not found: `make test` installs Debian's package (scripts/install_chromium.sh)")


@pytest.fixture(scope="module")
def server(html):
    handler = functools.partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                                directory=str(html))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=[
            "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def pages(html: Path) -> list[str]:
    return sorted(str(p.relative_to(html)) for p in html.rglob("*.html") if "_static" not in p.parts)


def visit(browser, server: str, page_name: str) -> dict:
    """Open one page; return what went wrong and what was seen."""
    problems, remote = [], []
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    def route(r):
        if r.request.url.startswith(server) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            remote.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text} ({m.location})"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
    page.goto(server + page_name, wait_until="networkidle")  # also follows index.html's redirect
    seen = page.evaluate("""async () => {
        if (window.MathJax && MathJax.startup) { await MathJax.startup.promise; }
        const imgs = [...document.querySelectorAll('article img, main img')];
        await Promise.all(imgs.map(i => i.decode().catch(() => null)));
        const math = [...document.querySelectorAll('.math')];
        return {
            math: math.length,
            typeset: math.filter(m => m.querySelector('mjx-container')).length,
            merror: document.querySelectorAll('mjx-merror').length,
            raw_tex: math.filter(m => /\\\\\\(|\\\\\\[|\\$\\$/.test(m.textContent)).length,
            images: imgs.map(i => ({src: i.getAttribute('src'), alt: i.getAttribute('alt') || '',
                                    figure: !!i.closest('.cell_output'),
                                    width: i.getBoundingClientRect().width,
                                    loaded: i.complete && i.naturalWidth > 0})),
            overflow: document.documentElement.scrollWidth > document.documentElement.clientWidth,
            tables: [...document.querySelectorAll('.cell_output table')].filter(t => !t.closest('details:not([open])'))
                .map(t => ({width: t.getBoundingClientRect().width, room: t.closest('.cell_output').clientWidth,
                            rows: t.querySelectorAll('tbody tr').length,
                            nan: [...t.querySelectorAll('td, th')].some(c => /^\\s*-?nan\\s*$/i.test(c.innerText))})),
        };
    }""")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / (page_name.replace("/", "_").removesuffix(".html") + ".png")
    # whole pages for `make browser-test` on the real book; the first screen on `make test`'s tiny one (13 s less)
    page.screenshot(path=str(shot), full_page=bool(os.environ.get("CARMENES_DTL_SITE")))
    page.close()
    return {"problems": problems, "remote": remote, "screenshot": shot, **seen}


@pytest.fixture(scope="module")
def visits(html, browser, server):
    return {name: visit(browser, server, name) for name in pages(html)}


def test_every_page_opens_without_console_errors_or_remote_requests(visits):
    assert "index.html" in visits and "book/06_validation.html" in visits and len(visits) >= 12
    for name, v in visits.items():
        assert not v["problems"], (name, v["problems"])
        assert not v["remote"], (name, v["remote"])


def test_equations_typeset_by_local_mathjax(visits):
    for name, least in MATH.items():
        v = visits[name]
        assert v["math"] >= least, (name, v["math"])
        assert v["typeset"] == v["math"] and v["merror"] == 0 and v["raw_tex"] == 0, (name, v)


def test_figures_loaded_with_alt_text(visits):
    for name, least in (("book/01_data.html", 5), ("book/02_synthetic_gap.html", 5), ("book/03_autoencoders.html", 3),
                        ("book/04_transfer.html", 3), ("book/05_cnn.html", 3), ("book/06_validation.html", 5)):
        images = visits[name]["images"]
        assert all(img["loaded"] for img in images), (name, [i["src"] for i in images if not i["loaded"]])
        figures = [img for img in images if img["figure"]]
        assert len(figures) >= least, (name, len(figures))
        for img in figures:
            alt = img["alt"]
            assert len(alt) >= 20 and not alt.endswith((".png", ".svg")), (name, img["src"], alt)


def test_tables_fit_the_page_and_figures_are_wide_enough(visits):
    """At 1280 px: no page scrolls sideways; every displayed table fits its column, shows at most 15
    rows (longer ones fold the rest away) and no "nan"; every figure is at least 600 px wide."""
    for name, v in visits.items():
        assert not v["overflow"], name
        for t in v["tables"]:
            assert t["width"] <= t["room"] + 1 and t["rows"] <= 15 and not t["nan"], (name, t)
        narrow = [(i["src"], round(i["width"])) for i in v["images"] if i["figure"] and i["width"] < 600]
        assert not narrow, (name, narrow)


def test_screenshots_saved(visits):
    for name in ("book/intro.html", "book/06_validation.html"):
        shot = visits[name]["screenshot"]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000, shot
