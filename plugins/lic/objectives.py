"""The two objectives of rate-distortion training, always in this order: distortion, then rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

OBJECTIVES = ("distortion", "rate")


@dataclass
class RDLosses:
    distortion: Tensor  # λ·255²·MSE, or λ·(1 − MS-SSIM)
    rate: Tensor  # bpp from the likelihoods
    mse: Tensor

    def as_list(self) -> list[Tensor]:
        return [self.distortion, self.rate]


def bpp(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Σ −log₂ likelihood over every latent, per pixel of the batch."""
    return sum(torch.log(lk).sum() for lk in likelihoods.values()) / (-math.log(2) * num_pixels)  # type: ignore[return-value]


def rd_losses(out: dict, x: Tensor, lmbda: float, metric: str = "mse") -> RDLosses:
    """CompressAI's ``RateDistortionLoss`` split into its two objectives (λ inside the
    distortion)."""
    n, _, h, w = x.shape
    x_hat = out["x_hat"]
    mse = torch.mean((x_hat - x) ** 2)
    if metric == "mse":
        distortion = lmbda * 255**2 * mse
    else:
        from pytorch_msssim import ms_ssim

        distortion = lmbda * (1 - ms_ssim(x_hat, x, data_range=1.0))
    return RDLosses(distortion, bpp(out["likelihoods"], n * h * w), mse)


def select(out: dict, index: Tensor) -> dict:
    """The output of the samples ``index`` of a batch: ``x_hat`` and every likelihood tensor
    (batch-first, as in every CompressAI model) indexed along the batch dimension, so that
    :func:`rd_losses` of it and of ``x[index]`` is the loss of those samples alone (the losses are
    batch means: the same formula on fewer samples)."""
    n = out["x_hat"].shape[0]
    for name, lk in out["likelihoods"].items():
        if lk.shape[0] != n:
            raise ValueError(
                f"likelihoods {name!r} of shape {tuple(lk.shape)} are not batch-first "
                f"(batch {n}): a sub-batch cannot be selected from them"
            )
    return {
        "x_hat": out["x_hat"][index],
        "likelihoods": {name: lk[index] for name, lk in out["likelihoods"].items()},
    }


def psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")
