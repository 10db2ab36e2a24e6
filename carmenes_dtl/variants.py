"""The variants a run estimates with: which CNN input space each trains on and predicts from.

Words used across the package:

- *encoder*: ``"pre"`` (the autoencoder before fine-tuning) or ``"ft"`` (after);
- *space*: what a CNN ensemble sees, the latents of one encoder (``"pre"``, ``"ft"``), the
  fine-tuned latents mapped back to the original encoder's (``"aligned"``, prediction only) or
  the ``"spectra"`` themselves;
- *variant*: a (training space, prediction space) pair. The authors' code trains on the
  synthetic latents of the original encoder and predicts from the observed latents of the
  fine-tuned one (``method``).
"""
from __future__ import annotations

from dataclasses import dataclass

#: The CNN input spaces, in the order their seeds are drawn (`config.stage_seed`).
SPACES = ("pre", "ft", "spectra")
#: The spaces that see only the synthetic set and the original encoders: their ensembles are
#: the same for every observed set (the pipeline's stage ``cnn-synthetic``).
SYNTHETIC_SPACES = ("pre", "spectra")


@dataclass(frozen=True)
class Variant:
    """CNNs trained on synthetic inputs of space `train`, applied to observed inputs of space `apply`."""

    name: str
    train: str
    apply: str
    description: str

    @property
    def latent(self) -> bool:
        """True when the CNNs see latents (not spectra)."""
        return self.train != "spectra"


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("method", "pre", "ft", "the authors' pairing: CNNs on synthetic latents of the original encoder, "
                                   "applied to observed latents of the fine-tuned encoder"),
    Variant("finetuned_both", "ft", "ft",
            "both domains through the fine-tuned encoder, CNNs retrained on its synthetic latents"),
    Variant("no_finetune", "pre", "pre", "both domains through the original encoder"),
    Variant("direct", "spectra", "spectra", "CNN on the spectra themselves"),
    Variant("method_aligned", "pre", "aligned",
            "the authors' CNNs applied to observed latents of the fine-tuned encoder mapped back by the affine map "
            "from fine-tuned to original latents fitted on synthetic spectra (no labels): a drift correction"),
)}
#: The variants whose CNNs see latents.
LATENT_VARIANTS = tuple(name for name, v in VARIANTS.items() if v.latent)


def get(name: str) -> Variant:
    """The variant called `name`; a one-line ValueError listing the others when there is none."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose one of {list(VARIANTS)}") from None


def descriptions() -> dict[str, str]:
    """{variant: description}, as run.json and the model bundle record them."""
    return {name: v.description for name, v in VARIANTS.items()}
