"""Procedural natural-like images: the dead-leaves model, deterministic by seed.

Occluding shapes (discs, ellipses, rectangles) are painted back to front over a smooth
background; their sizes follow a power law ``p(r) ∝ r^-3`` between ``r_min`` and ``r_max``, which
makes the image statistics scale invariant, with the ~1/f² power spectrum and heavy-tailed gradient
histograms of photographs (Lee, Mumford & Huang, "Occlusion models for natural images", IJCV 2001).
Each shape gets a colour drawn around a per-image palette, a smooth gradient and sometimes a
sinusoidal texture; the whole picture is blurred slightly (optics) and receives sensor-like noise.
"""

from __future__ import annotations

import numpy as np


def _radius(rng: np.random.Generator, r_min: float, r_max: float, alpha: float = 3.0) -> float:
    """Inverse-CDF sample of p(r) ∝ r^-alpha on [r_min, r_max]."""
    u = rng.random()
    a = 1.0 - alpha
    return float((r_min**a + u * (r_max**a - r_min**a)) ** (1.0 / a))


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.05:
        return img
    radius = max(1, int(3 * sigma))
    x = np.arange(-radius, radius + 1)
    k = np.exp(-(x**2) / (2 * sigma**2))
    k /= k.sum()
    padded = np.pad(img, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    tmp = sum(k[i] * padded[i : i + img.shape[0], :, :] for i in range(len(k)))
    return sum(k[i] * tmp[:, i : i + img.shape[1], :] for i in range(len(k)))


def dead_leaves(
    height: int, width: int, seed: int | tuple[int, ...], *, shapes: int = 1000
) -> np.ndarray:
    """An RGB float32 image in [0, 1] of shape (height, width, 3), the same for the same seed.

    ``shapes`` leaves are painted back to front over a smooth background (later ones occlude
    earlier ones); their total area is many times the canvas, so little background survives.
    """
    rng = np.random.default_rng(seed)
    size = max(height, width)
    r_min, r_max = max(1.0, size / 200), size / 1.5
    # a muted per-image palette: luminance plus a small chroma, as in photographs
    lum = rng.uniform(0.15, 0.85, size=(5, 1))
    palette = np.clip(lum + rng.normal(0, 0.12, size=(5, 3)), 0.02, 0.98)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    g = rng.normal(0, 0.3, 2) / size
    img = (
        palette[0][None, None, :]
        * (1.0 + g[0] * (yy - height / 2) + g[1] * (xx - width / 2))[..., None]
    ).astype(np.float32)
    for _ in range(shapes):
        r = _radius(rng, r_min, r_max)
        cy, cx = rng.uniform(-r / 2, height + r / 2), rng.uniform(-r / 2, width + r / 2)
        y0, y1 = max(0, int(cy - r)), min(height, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(width, int(cx + r) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        kind = rng.integers(3)
        if kind == 0:
            mask = dy**2 + dx**2 <= r**2
        elif kind == 1:
            theta, ratio = rng.uniform(0, np.pi), rng.uniform(0.3, 1.0)
            u, v = dx * np.cos(theta) + dy * np.sin(theta), -dx * np.sin(theta) + dy * np.cos(theta)
            mask = (u / r) ** 2 + (v / (r * ratio)) ** 2 <= 1.0
        else:
            mask = (np.abs(dy) <= r * rng.uniform(0.4, 1.0)) & (
                np.abs(dx) <= r * rng.uniform(0.4, 1.0)
            )
        if not mask.any():
            continue
        base = np.clip(palette[rng.integers(5)] + rng.normal(0, 0.08, 3), 0, 1)
        gy, gx = rng.normal(0, 0.25, 2) / max(r, 1.0)
        shade = 1.0 + gy * dy + gx * dx
        if rng.random() < 0.25:  # texture: a sinusoidal grating
            f, phase, theta = (
                rng.uniform(0.15, 1.0),
                rng.uniform(0, 2 * np.pi),
                rng.uniform(0, np.pi),
            )
            shade = shade + rng.uniform(0.03, 0.15) * np.sin(
                f * (dx * np.cos(theta) + dy * np.sin(theta)) + phase
            )
        img[y0:y1, x0:x1][mask] = (base[None, :] * shade[mask][:, None]).astype(np.float32)
    img = _blur(img, rng.uniform(0.2, 0.7))
    img = img + rng.normal(0, rng.uniform(0.002, 0.012), img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)
