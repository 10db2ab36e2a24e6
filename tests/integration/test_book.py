"""Build the book on a tiny run and check the HTML: every chapter, no errors, no remote scripts."""
import re

import pytest

pytestmark = pytest.mark.integration
CHAPTERS = ["intro", "01_data", "02_synthetic_gap", "03_autoencoders", "04_transfer", "05_cnn", "06_validation",
            "07_apply", "reference", "bibliography"]


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
    for name, least in (("01_data", 5), ("02_synthetic_gap", 5), ("05_cnn", 3), ("06_validation", 5), ("07_apply", 1)):
        page = (html / "book" / f"{name}.html").read_text()
        imgs = re.findall(r'<img[^>]*src="([^"]+)"', page)
        assert len(imgs) >= least, (name, len(imgs))
        for src in imgs:
            assert (html / "book" / src).resolve().exists(), src


def test_launch_buttons_for_binder_and_colab_on_every_chapter(html):
    for name in CHAPTERS[1:8]:
        page = (html / "book" / f"{name}.html").read_text()
        assert f"https://mybinder.org/v2/gh/carmenes-dtl/carmenes-dtl/main?urlpath=lab/tree/book/{name}.ipynb" in page
        assert f"https://colab.research.google.com/github/carmenes-dtl/carmenes-dtl/blob/main/book/{name}.ipynb" in page
