"""carmenes-dtl: deep transfer learning with autoencoders for M-dwarf stellar parameters.

A reference implementation and executable book of Mas-Buitrago et al. (2024),
A&A 687, A205, doi:10.1051/0004-6361/202449865.
"""
from importlib.metadata import PackageNotFoundError, version

from . import environment

environment.apply_defaults()  # before anything imports JAX, Keras or TensorFlow

try:
    __version__ = version("carmenes-dtl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__bibtex__ = r"""@article{MasBuitrago2024,
  author  = {{Mas-Buitrago}, P. and {Gonz{\'a}lez-Marcos}, A. and {Solano}, E. and others},
  title   = {Using autoencoders and deep transfer learning to determine the stellar
             parameters of 286 CARMENES M dwarfs},
  journal = {Astronomy \& Astrophysics},
  volume  = {687},
  pages   = {A205},
  year    = {2024},
  doi     = {10.1051/0004-6361/202449865}
}"""

__all__ = ["__version__", "__bibtex__"]
