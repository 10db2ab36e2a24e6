"""Archive file names, URLs, readers and cached downloads (PHOENIX-ACES HiRes, CARMENES VIS).

Readers accept exactly the layouts of the real archives; the demo survey writes the same
layouts, so one code path serves both. Every error names the file at fault.
"""
from __future__ import annotations

import functools
import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from .config import cache_dir

PHOENIX_SERVER = "https://phoenix.astro.physik.uni-goettingen.de/data/HiResFITS"
PHOENIX_LIBRARY = "PHOENIX-ACES-AGSS-COND-2011"
PHOENIX_WAVE_FILE = f"WAVE_{PHOENIX_LIBRARY}.fits"
#: Metallicity folders of the HiRes archive (alpha-enhanced ones add ``.Alpha=±a.aa``).
PHOENIX_Z = (-4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0)
PHOENIX_STEPS = {"teff": 100.0, "logg": 0.5, "mh": 0.5}
_Z_FOLDER = re.compile(r"^Z([+-]\d\.\d)(\.Alpha=([+-]\d\.\d\d))?$")
CARMENES_EXTENSIONS = ("SPEC", "CONT", "SIG", "WAVE")
CARMENES_SHAPE = (61, 4096)


class ArchiveError(ValueError):
    """A file that does not follow its archive's format."""


def _z_text(mh: float) -> str:
    return "-0.0" if abs(mh) < 1e-9 else f"{mh:+.1f}"


def phoenix_folder(mh: float, alpha: float = 0.0) -> str:
    """Metallicity folder name, e.g. ``Z-0.0`` or ``Z-0.5.Alpha=+0.20``."""
    return f"Z{_z_text(mh)}" + (f".Alpha={alpha:+.2f}" if alpha else "")


def phoenix_name(teff: float, logg: float, mh: float, alpha: float = 0.0) -> str:
    """HiRes file name, e.g. ``lte03500-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits``."""
    a = f".Alpha={alpha:+.2f}" if alpha else ""
    return f"lte{int(round(teff)):05d}-{logg:.2f}{_z_text(mh)}{a}.{PHOENIX_LIBRARY}-HiRes.fits"


def phoenix_relpath(teff: float, logg: float, mh: float, alpha: float = 0.0) -> str:
    """Path below the HiResFITS root (also the URL path below `PHOENIX_SERVER`)."""
    return f"{PHOENIX_LIBRARY}/{phoenix_folder(mh, alpha)}/{phoenix_name(teff, logg, mh, alpha)}"


def phoenix_url(teff: float, logg: float, mh: float, alpha: float = 0.0) -> str:
    return f"{PHOENIX_SERVER}/{phoenix_relpath(teff, logg, mh, alpha)}"


def folder_metallicity(folder: str) -> tuple[float, float]:
    """([M/H], alpha) of a metallicity folder name; unknown names raise."""
    m = _Z_FOLDER.match(folder)
    if not m or float(m.group(1)) not in PHOENIX_Z:
        raise ArchiveError(f"unknown PHOENIX metallicity folder {folder!r} (expected e.g. 'Z-0.0', 'Z+0.5')")
    return float(m.group(1)), float(m.group(3) or 0.0)


def _open(path: Path):
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*truncated.*")
            hdul = fits.open(path, memmap=False)
            for hdu in hdul:  # force every header and data block to be read: truncation shows here
                _ = hdu.data
        return hdul
    except (OSError, TypeError, ValueError, Warning) as err:
        raise ArchiveError(f"{path}: not a readable FITS file ({err}); truncated download?") from err


def _monotonic(wave: np.ndarray, path: Path, what: str = "wavelengths") -> None:
    if not np.all(np.diff(wave) > 0):
        bad = int(np.argmin(np.diff(wave) > 0))
        raise ArchiveError(f"{path}: {what} are not strictly increasing (at index {bad})")


@functools.lru_cache(maxsize=4)
def read_phoenix_wavelength(path: Path) -> np.ndarray:
    """The shared wavelength array (vacuum Å) of a HiRes archive."""
    with _open(path) as hdul:
        wave = np.asarray(hdul[0].data, dtype=np.float64)
    if wave.ndim != 1:
        raise ArchiveError(f"{path}: wavelength array must be 1-D, got shape {wave.shape}")
    _monotonic(wave, path)
    return wave


@dataclass
class PhoenixSpectrum:
    path: Path
    teff: float
    logg: float
    mh: float
    alpha: float
    flux: np.ndarray  # erg/s/cm^2/cm, on the archive wavelength grid
    nan_pixels: int = 0


def read_phoenix(path: Path, wave: np.ndarray) -> PhoenixSpectrum:
    """Read a HiRes flux file; isolated NaNs are interpolated over and counted."""
    path = Path(path)
    folder_mh, folder_alpha = folder_metallicity(path.parent.name)
    with _open(path) as hdul:
        head, flux = hdul[0].header, np.asarray(hdul[0].data, dtype=np.float64)
    missing = [k for k in ("PHXTEFF", "PHXLOGG", "PHXM_H", "PHXALPHA") if k not in head]
    if missing:
        raise ArchiveError(f"{path}: header lacks {', '.join(missing)}")
    if flux.shape != wave.shape:
        raise ArchiveError(f"{path}: flux has {flux.size} samples, the wavelength file {wave.size}")
    if abs(head["PHXM_H"] - folder_mh) > 1e-6:
        raise ArchiveError(f"{path}: PHXM_H={head['PHXM_H']} disagrees with folder {path.parent.name}")
    flux, nans = fill_nans(flux, path)
    return PhoenixSpectrum(path, float(head["PHXTEFF"]), float(head["PHXLOGG"]), float(head["PHXM_H"]),
                           float(head["PHXALPHA"]), flux, nans)


def fill_nans(flux: np.ndarray, what) -> tuple[np.ndarray, int]:
    """Linearly interpolate over non-finite pixels; all-NaN input raises naming `what`."""
    bad = ~np.isfinite(flux)
    if bad.all():
        raise ArchiveError(f"{what}: all values are NaN")
    if bad.any():
        idx = np.arange(flux.size)
        flux = flux.copy()
        flux[bad] = np.interp(idx[bad], idx[~bad], flux[~bad])
    return flux, int(bad.sum())


def scan_phoenix(root: Path) -> list[Path]:
    """Every HiRes flux file below `root` (a HiResFITS folder), sorted."""
    root = Path(root)
    files = sorted(root.glob(f"{PHOENIX_LIBRARY}/Z*/lte*-HiRes.fits"))
    if not files:
        raise ArchiveError(f"{root}: no '{PHOENIX_LIBRARY}/Z*/lte*-HiRes.fits' files found")
    for f in files:
        folder_metallicity(f.parent.name)
    return files


@dataclass
class CarmenesSpectrum:
    """A CARMENES VIS spectrum as the archive stores it (orders x pixels)."""

    path: Path
    karmn: str
    bjd: float | None  # full BJD (CARACAL stores BJD - 2400000)
    ra: float
    dec: float
    wave: np.ndarray  # vacuum Å, observatory frame (CARACAL) or barycentric (template)
    flux: np.ndarray  # SPEC / CONT
    sigma: np.ndarray  # SIG / CONT
    barycentric: bool
    berv: float | None = None  # km/s, the pipeline's ``HIERARCH CARACAL BERV`` when present


def read_carmenes(path: Path) -> CarmenesSpectrum:
    """Read a CARACAL ``car-*-sci-gtoc-vis_A.fits`` file or a co-added template.

    CARACAL files carry ``SPEC, CONT, SIG, WAVE`` (61 x 4096) and are in the observatory
    frame; co-added templates of the public releases lack ``CONT`` (already normalised)
    and the BJD, and are in the barycentric frame.
    """
    path = Path(path)
    with _open(path) as hdul:
        names = [h.name for h in hdul[1:]]
        needed = [n for n in ("SPEC", "SIG", "WAVE") if n not in names]
        if needed:
            raise ArchiveError(f"{path}: missing extension(s) {', '.join(needed)}; found {names}")
        head = hdul[0].header
        if "OBJECT" not in head:
            raise ArchiveError(f"{path}: primary header lacks OBJECT (the Karmn id)")
        arrays = {n: np.asarray(hdul[n].data, dtype=np.float64) for n in ("SPEC", "SIG", "WAVE")}
        cont = np.asarray(hdul["CONT"].data, np.float64) if "CONT" in names else np.ones_like(arrays["SPEC"])
        bjd = head.get("HIERARCH CARACAL BJD")
        berv = head.get("HIERARCH CARACAL BERV")
        ra, dec = head.get("RA"), head.get("DEC")
    for n, a in arrays.items():
        if a.ndim != 2 or a.shape != arrays["SPEC"].shape:
            raise ArchiveError(f"{path}: extension {n} has shape {a.shape}, expected orders x pixels like SPEC")
    for k, w in enumerate(arrays["WAVE"]):
        _monotonic(w, path, f"WAVE order {k}")
    barycentric = bjd is None
    if not barycentric and (ra is None or dec is None):
        raise ArchiveError(f"{path}: RA/DEC needed for the barycentric correction")
    with np.errstate(divide="ignore", invalid="ignore"):
        return CarmenesSpectrum(path, str(head["OBJECT"]).strip(), None if bjd is None else float(bjd) + 2400000.0,
                                float(ra or 0.0), float(dec or 0.0), arrays["WAVE"], arrays["SPEC"] / cont,
                                arrays["SIG"] / cont, barycentric, None if berv is None else float(berv))


def scan_carmenes(root: Path) -> list[Path]:
    """CARMENES VIS files below `root`: CARACAL ``car-*vis_A.fits`` and templates ``*.fits``."""
    files = sorted(Path(root).rglob("*.fits"))
    if not files:
        raise ArchiveError(f"{root}: no CARMENES FITS files found")
    return files


# --- downloads ---------------------------------------------------------------------------


class ResumableDownloader:
    """A pooch downloader that resumes interrupted transfers with HTTP Range requests.

    pooch handles caching and checksums but restarts a broken download from zero; for
    6 MB x thousands of PHOENIX files a resume matters, so the partial file is kept
    under a stable name beside the cache and continued.
    """

    def __init__(self, progressbar: bool = True, chunk: int = 1 << 16, timeout: float = 60):
        self.progressbar, self.chunk, self.timeout = progressbar, chunk, timeout

    def __call__(self, url: str, output_file: str, pooch_obj=None, check_only: bool = False):
        import requests
        from tqdm.auto import tqdm

        part = Path(str(output_file)).parent / (hashlib.sha1(url.encode()).hexdigest()[:16] + ".part")
        start = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={start}-"} if start else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
            if r.status_code == 416:  # already complete
                pass
            else:
                r.raise_for_status()
                if start and r.status_code != 206:
                    start = 0  # server ignored Range: restart
                total = int(r.headers.get("Content-Length", 0)) + start
                with open(part, "ab" if start else "wb") as out, tqdm(
                        total=total or None, initial=start, unit="B", unit_scale=True,
                        desc=url.rsplit("/", 1)[-1], disable=not self.progressbar) as bar:
                    for block in r.iter_content(self.chunk):
                        out.write(block)
                        bar.update(len(block))
                if total and part.stat().st_size != total:
                    raise ArchiveError(f"{url}: transfer stopped at {part.stat().st_size} of {total} bytes; "
                                       f"run again to resume from {part}")
        part.replace(output_file)


def download(url: str, relpath: str, sha256: str | None = None, cache: Path | None = None,
             progressbar: bool = True) -> Path:
    """Fetch `url` into the cache at `relpath` (reused when present and matching `sha256`)."""
    import pooch
    import requests

    root = Path(cache or cache_dir())
    target = root / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        return Path(pooch.retrieve(url, known_hash=f"sha256:{sha256}" if sha256 else None,
                                   fname=target.name, path=target.parent,
                                   downloader=ResumableDownloader(progressbar)))
    except (requests.ConnectionError, requests.Timeout, requests.HTTPError,
            requests.exceptions.ChunkedEncodingError) as err:
        raise ArchiveError(f"cannot download {url} ({err}). Offline? Put the file at {target} "
                           f"and run again (a partial download resumes).") from err


def fetch_phoenix(nodes, cache: Path | None = None, progressbar: bool = True) -> Path:
    """Download the wavelength file and the HiRes files of `nodes` ((teff, logg, mh) tuples).

    Returns the HiResFITS root in the cache, ready for ``prepare-synthetic --phoenix-dir``.
    """
    from tqdm.auto import tqdm

    root = Path(cache or cache_dir()) / "HiResFITS"
    download(f"{PHOENIX_SERVER}/{PHOENIX_WAVE_FILE}", PHOENIX_WAVE_FILE, cache=root, progressbar=progressbar)
    for teff, logg, mh in tqdm(list(nodes), desc="PHOENIX", disable=not progressbar):
        download(phoenix_url(teff, logg, mh), phoenix_relpath(teff, logg, mh), cache=root, progressbar=False)
    return root
