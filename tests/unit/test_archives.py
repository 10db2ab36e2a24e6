"""Readers on files in the exact archive layouts, every bad input, and cached resumable downloads."""
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from carmenes_dtl import archives, prepare
from carmenes_dtl.config import Window


def test_phoenix_names_and_urls():
    assert archives.phoenix_name(3500, 4.5, 0.0) == "lte03500-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits"
    assert archives.phoenix_relpath(2900, 5.0, 0.5) == \
        "PHOENIX-ACES-AGSS-COND-2011/Z+0.5/lte02900-5.00+0.5.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits"
    assert archives.phoenix_folder(-0.5, 0.2) == "Z-0.5.Alpha=+0.20"
    assert archives.phoenix_url(3500, 4.5, -1.0).startswith(
        "https://phoenix.astro.physik.uni-goettingen.de/data/HiResFITS/PHOENIX-ACES-AGSS-COND-2011/Z-1.0/")
    assert archives.folder_metallicity("Z-0.0.Alpha=+0.20") == (0.0, 0.2)
    with pytest.raises(archives.ArchiveError, match="unknown PHOENIX metallicity folder 'Z-0.7'"):
        archives.folder_metallicity("Z-0.7")


def test_read_demo_phoenix(demo_survey):
    root = demo_survey / "phoenix"
    wave = archives.read_phoenix_wavelength(root / archives.PHOENIX_WAVE_FILE)
    spec = archives.read_phoenix(root / archives.phoenix_relpath(3500, 5.0, 0.0), wave)
    assert (spec.teff, spec.logg, spec.mh, spec.alpha) == (3500, 5.0, 0.0, 0.0)
    assert spec.flux.shape == wave.shape and np.all(spec.flux > 0)
    assert len(archives.scan_phoenix(root)) == 23 * 3 * 5


def test_read_demo_carmenes(demo_survey):
    import pandas as pd

    truth = pd.read_csv(demo_survey / "truth.csv")
    for row in truth.itertuples():
        spec = archives.read_carmenes(demo_survey / row.file)
        assert spec.karmn == row.karmn
        assert spec.wave.shape == archives.CARMENES_SHAPE
        assert spec.bjd == pytest.approx(row.bjd)
        assert not spec.barycentric


def _copy(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, dst_dir / src.name))


def test_truncated_fits_is_named(demo_survey, tmp_path):
    src = next((demo_survey / "carmenes").glob("*.fits"))
    bad = tmp_path / src.name
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    with pytest.raises(archives.ArchiveError, match=f"{bad.name}.*truncated"):
        archives.read_carmenes(bad)
    with pytest.raises(archives.ArchiveError, match="file not found"):
        archives.read_carmenes(tmp_path / "missing.fits")


def test_missing_extension_is_named(demo_survey, tmp_path):
    src = next((demo_survey / "carmenes").glob("*.fits"))
    with fits.open(src) as hdul:
        hdus = fits.HDUList([h.copy() for h in hdul if h.name != "WAVE"])
        hdus.writeto(tmp_path / "nowave.fits")
    with pytest.raises(archives.ArchiveError, match=r"nowave.fits: missing extension\(s\) WAVE"):
        archives.read_carmenes(tmp_path / "nowave.fits")


def test_non_monotonic_wavelengths_are_named(demo_survey, tmp_path):
    src = next((demo_survey / "carmenes").glob("*.fits"))
    with fits.open(src) as hdul:
        hdul["WAVE"].data[12, 100] = hdul["WAVE"].data[12, 99] - 0.1
        hdul.writeto(tmp_path / "swap.fits")
    with pytest.raises(archives.ArchiveError, match="swap.fits: WAVE order 12 are not strictly increasing"):
        archives.read_carmenes(tmp_path / "swap.fits")
    wave = np.linspace(1, 2, 10)
    wave[5] = 0.5
    fits.PrimaryHDU(wave).writeto(tmp_path / "wave.fits")
    with pytest.raises(archives.ArchiveError, match="wave.fits: wavelengths are not strictly increasing"):
        archives.read_phoenix_wavelength(tmp_path / "wave.fits")


def _window_order(spec):
    w = Window()
    return int(np.argmax([(o[0] < w.start) & (o[-1] > w.stop) for o in spec.wave]))


def test_all_nan_order_and_partial_nans(demo_survey, tmp_path):
    src = next((demo_survey / "carmenes").glob("*.fits"))
    spec = archives.read_carmenes(src)
    k = _window_order(spec)
    template = prepare.template_from_set(_synthetic_set(demo_survey, tmp_path))
    i = int(np.searchsorted(spec.wave[k], 8815.0))
    with fits.open(src) as hdul:
        hdul["SPEC"].data[k, i:i + 10] = np.nan
        hdul.writeto(tmp_path / "partial.fits")
    res = prepare.process_observed(archives.read_carmenes(tmp_path / "partial.fits"), Window(), template)
    assert res.nan_pixels == 10 and np.isfinite(res.flux).all()
    with fits.open(src) as hdul:
        hdul["SPEC"].data[k, :] = np.nan
        hdul.writeto(tmp_path / "allnan.fits")
    with pytest.raises(archives.ArchiveError, match=f"allnan.fits order {k}: all values are NaN"):
        prepare.process_observed(archives.read_carmenes(tmp_path / "allnan.fits"), Window(), template)


def _synthetic_set(demo_survey, tmp_path):
    import pandas as pd

    nodes = pd.DataFrame({"teff": [3500.0], "logg": [5.0], "mh": [0.0]})
    return prepare.prepare_synthetic(demo_survey / "phoenix", tmp_path / "tpl.h5", [2.0], nodes=nodes, progress=False)


def test_window_outside_coverage(demo_survey, tmp_path):
    with pytest.raises(archives.ArchiveError, match="does not include 9395.0-9436.0 Å"):
        prepare.prepare_synthetic(demo_survey / "phoenix", tmp_path / "x.h5", [2.0], Window(9399, 9432),
                                  progress=False)
    src = next((demo_survey / "carmenes").glob("*.fits"))
    with pytest.raises(archives.ArchiveError, match="no order covers the window 4000-4035 Å"):
        prepare.process_observed(archives.read_carmenes(src), Window(4000, 4035), None)


def test_unknown_metallicity_folder(demo_survey, tmp_path):
    root = tmp_path / "phoenix"
    shutil.copytree(demo_survey / "phoenix", root)
    (root / archives.PHOENIX_LIBRARY / "Z-0.0").rename(root / archives.PHOENIX_LIBRARY / "Z-0.3")
    with pytest.raises(archives.ArchiveError, match="unknown PHOENIX metallicity folder 'Z-0.3'"):
        archives.scan_phoenix(root)


def test_prepare_observed_excludes_and_reports(demo_survey, tmp_path):
    folder = tmp_path / "carmenes"
    files = sorted((demo_survey / "carmenes").glob("*.fits"))
    for f in files:
        _copy(f, folder)
    (folder / "car-20990101T00h00m00s-sci-gtoc-vis_A.fits").write_bytes(files[0].read_bytes()[: files[0].stat().st_size // 3])
    dup = folder / "car-20990102T00h00m00s-sci-gtoc-vis_A.fits"
    with fits.open(files[1]) as hdul:  # same star, worse S/N
        noise = np.random.default_rng(0).normal(0, 1, hdul["SPEC"].data.shape) * 3 * hdul["SIG"].data
        hdul["SPEC"].data += noise.astype("f4")
        hdul["SIG"].data *= np.float32(np.sqrt(10))
        hdul.writeto(dup)
    template = prepare.template_from_set(_synthetic_set(demo_survey, tmp_path))
    out, excluded = prepare.prepare_observed(folder, tmp_path / "obs.h5", template=template, progress=False)
    reasons = dict(zip(excluded["file"].map(lambda p: Path(p).name), excluded["reason"]))
    assert len(excluded) == 2
    assert "truncated" in reasons["car-20990101T00h00m00s-sci-gtoc-vis_A.fits"]
    assert reasons[dup.name] == "duplicate star: lower S/N"
    from carmenes_dtl import store

    s = store.read(out)
    assert len(s) == len(files) and s.attrs["n_excluded"] == 2
    with pytest.raises(archives.ArchiveError, match="truncated"):
        prepare.prepare_observed(folder, tmp_path / "obs2.h5", template=template, strict=True, progress=False)


# --- downloads against a local server ---------------------------------------------------


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; can cut the first transfer short."""

    cut_after: int | None = None
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        RangeHandler.requests.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if RangeHandler.cut_after is not None:
            body = body[: RangeHandler.cut_after]
            RangeHandler.cut_after = None
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.requests = []
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_cached_and_checksummed(server, tmp_path):
    root, url = server
    payload = np.random.default_rng(1).bytes(300_000)
    (root / "f.fits").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    got = archives.download(f"{url}/f.fits", "sub/f.fits", sha256=sha, cache=tmp_path / "cache", progressbar=False)
    assert got.read_bytes() == payload
    n = len(RangeHandler.requests)
    archives.download(f"{url}/f.fits", "sub/f.fits", sha256=sha, cache=tmp_path / "cache", progressbar=False)
    assert len(RangeHandler.requests) == n  # served from the cache
    with pytest.raises(ValueError, match="SHA256"):
        archives.download(f"{url}/f.fits", "other/f.fits", sha256="0" * 64, cache=tmp_path / "cache",
                          progressbar=False)


def test_download_resumes_after_interruption(server, tmp_path):
    root, url = server
    payload = np.random.default_rng(2).bytes(500_000)
    (root / "g.fits").write_bytes(payload)
    RangeHandler.cut_after = 200_000
    with pytest.raises(archives.ArchiveError, match="partial download resumes"):
        archives.download(f"{url}/g.fits", "g.fits", cache=tmp_path / "c", progressbar=False)
    partial = next((tmp_path / "c").glob("*.part")).stat().st_size
    assert 0 < partial <= 200_000
    got = archives.download(f"{url}/g.fits", "g.fits", sha256=hashlib.sha256(payload).hexdigest(),
                            cache=tmp_path / "c", progressbar=False)
    assert got.read_bytes() == payload
    assert RangeHandler.requests[-1] == f"bytes={partial}-"


def test_download_offline_message(tmp_path):
    with pytest.raises(archives.ArchiveError, match=r"cannot download http://127.0.0.1:9/x.fits .*Put the file at .*x.fits"):
        archives.download("http://127.0.0.1:9/x.fits", "x.fits", cache=tmp_path, progressbar=False)


def test_coadded_template_layout(demo_survey, tmp_path):
    """Public-release co-added spectra: SPEC/SIG/WAVE only, barycentric, no BJD."""
    src = next((demo_survey / "carmenes").glob("*.fits"))
    with fits.open(src) as hdul:
        head = hdul[0].header.copy()
        del head["HIERARCH CARACAL BJD"]
        hdus = [fits.PrimaryHDU(header=head)] + [fits.ImageHDU(hdul[n].data / (hdul["CONT"].data if n != "WAVE" else 1),
                                                              name=n) for n in ("SPEC", "SIG", "WAVE")]
        fits.HDUList(hdus).writeto(tmp_path / "J00000+000.coadd.fits")
    spec = archives.read_carmenes(tmp_path / "J00000+000.coadd.fits")
    assert spec.barycentric and spec.bjd is None
    assert np.nanmedian(spec.flux) == pytest.approx(np.nanmedian(archives.read_carmenes(src).flux), rel=1e-6)
