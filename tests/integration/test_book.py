"""Build the book on a tiny run and check the HTML: every chapter, no errors, no remote scripts."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = ["intro", "01_data", "02_synthetic_gap", "03_autoencoders", "04_transfer", "05_cnn", "06_validation",
            "reference", "bibliography"]


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    from test_cli import cli

    run = tmp_path_factory.mktemp("bookrun")
    cli("run", "--demo", "--profile", "tiny", "--seed", "1", "--out", run, "--quiet")
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).with_name("jupyter-book")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend shows figures
    res = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(out), "-W", "--keep-going"],
                         capture_output=True, text=True, env={**env, "CARMENES_DTL_RUN": str(run)})
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-3000:]
    return out / "_build" / "html"


def test_every_chapter_present(html):
    assert (html / "index.html").exists()
    for name in CHAPTERS:
        page = (html / "book" / f"{name}.html").read_text()
        assert len(page) > 5000, name


def test_no_error_output_in_executed_cells(html):
    for name in CHAPTERS:
        page = (html / "book" / f"{name}.html").read_text()
        assert "Traceback" not in page and 'class="output traceback' not in page, name
        assert "output stderr" not in page, name


def test_no_remote_scripts_or_styles_and_local_mathjax(html):
    for page in html.rglob("*.html"):
        text = page.read_text()
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        remote = [u for u in remote if not u.endswith((".html", "/"))]
        assert not remote, (page.name, remote)
    intro = (html / "book" / "intro.html").read_text()
    assert 'src="../_static/mathjax/tex-chtml.js"' in intro
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()


def test_figures_rendered_and_present(html):
    for name, least in (("01_data", 5), ("02_synthetic_gap", 5), ("05_cnn", 3), ("06_validation", 5)):
        page = (html / "book" / f"{name}.html").read_text()
        imgs = re.findall(r'<img[^>]*src="([^"]+)"', page)
        assert len(imgs) >= least, (name, len(imgs))
        for src in imgs:
            assert (html / "book" / src).resolve().exists(), src
