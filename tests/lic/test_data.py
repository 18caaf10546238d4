"""Datasets: the synthetic generator's statistics, folders and their rules, the samples photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plugins.lic import data
from plugins.lic.errors import UsageError
from plugins.lic.synthetic import dead_leaves


def spectrum_slope(img: np.ndarray) -> float:
    """Slope of the radially averaged power spectrum in log-log (photographs: about −2)."""
    gray = img.mean(axis=2)
    f = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2
    h, w = gray.shape
    yy, xx = np.indices(f.shape)
    r = np.hypot(yy - h / 2, xx - w / 2).astype(int)
    radial = np.bincount(r.ravel(), f.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    k = np.arange(4, min(h, w) // 2 - 8)  # away from DC and the corners
    return float(np.polyfit(np.log(k), np.log(radial[k]), 1)[0])


def test_synthetic_is_deterministic_by_seed() -> None:
    a, b, c = dead_leaves(96, 96, 7), dead_leaves(96, 96, 7), dead_leaves(96, 96, 8)
    assert a.dtype == np.float32 and a.shape == (96, 96, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_synthetic_has_photograph_statistics() -> None:
    slopes, kurtoses = [], []
    for seed in range(6):
        img = dead_leaves(256, 256, seed)
        slopes.append(spectrum_slope(img))
        gx = np.diff(img.mean(axis=2), axis=1).ravel()
        kurtoses.append(float(((gx - gx.mean()) ** 4).mean() / gx.var() ** 2))
    # 1/f^α power spectra with α near 2, and heavy-tailed (sparse) gradients, as photographs have
    assert -3.2 < np.median(slopes) < -1.6, slopes
    assert np.median(kurtoses) > 6.0, kurtoses


def test_samples_are_real_photographs_shipped_with_scikit_image() -> None:
    pics = data.resolve("samples", "test")
    assert len(pics) == len(data.SAMPLE_PHOTOS)
    img = pics[0]
    assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 256
    assert -3.5 < spectrum_slope(img) < -1.5


def _write(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_image_folder_converts_modes_and_skips_small_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _write(tmp_path / "train" / "rgb.png", rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
    _write(tmp_path / "train" / "gray.png", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    _write(tmp_path / "train" / "rgba.png", rng.integers(0, 255, (64, 64, 4), dtype=np.uint8))
    _write(tmp_path / "train" / "deep.png", rng.integers(0, 65535, (64, 64), dtype=np.uint16))
    _write(tmp_path / "train" / "small.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    pics = data.resolve(str(tmp_path), "train")
    for i in range(len(pics)):
        img = pics[i]
        assert img.shape[2] == 3 and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    ds = data.PatchDataset(pics, (32, 32), seed=0)
    assert len(ds) == 4 and ds.skipped == 1
    assert ds[0].shape == (3, 32, 32)
    ds.set_epoch(0)
    first = ds[1]
    ds.set_epoch(1)
    assert not np.array_equal(first.numpy(), ds[1].numpy())  # crops change with the epoch
    ds.set_epoch(0)
    # and are a function of (seed, epoch, index)
    assert np.array_equal(first.numpy(), ds[1].numpy())


def test_folder_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such folder"):
        data.image_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images found"):
        data.image_files(tmp_path / "empty")
    _write(tmp_path / "mixed" / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    (tmp_path / "mixed" / "notes.txt").write_text("hello")
    with pytest.raises(UsageError, match="notes.txt: not an image file"):
        data.image_files(tmp_path / "mixed")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(UsageError, match="broken.jpg: not a readable image"):
        data.folder_pictures(tmp_path / "bad")
    # a truncated JPEG: its header reads, its pixels do not
    _write(
        tmp_path / "trunc" / "full.jpg",
        np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8),
    )
    whole = (tmp_path / "trunc" / "full.jpg").read_bytes()
    (tmp_path / "trunc" / "full.jpg").write_bytes(whole[: len(whole) // 2])
    pictures = data.folder_pictures(tmp_path / "trunc")
    with pytest.raises(UsageError, match="full.jpg: not a readable image"):
        pictures[0]


def test_patch_larger_than_every_image(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", np.zeros((20, 30, 3), dtype=np.uint8))
    with pytest.raises(UsageError, match=r"larger than every image .* 20x30"):
        data.PatchDataset(data.folder_pictures(tmp_path), (32, 32), seed=0)


def test_epoch_sampler_is_a_function_of_seed_and_epoch_and_can_start_late() -> None:
    s = data.EpochSampler(20, 4, seed=3)
    s.set_epoch(2)
    full = list(s)
    assert len(full) == 20 and sorted(full) == list(range(20))
    s.set_epoch(2, start_batch=3)
    assert list(s) == full[12:]
    s.set_epoch(3)
    assert list(s) != full


def test_epoch_sampler_shards_global_batches_over_processes() -> None:
    single = data.EpochSampler(24, 4, seed=1)
    single.set_epoch(0)
    order = list(single)
    shards = []
    for rank in range(2):
        s = data.EpochSampler(24, 2, seed=1, rank=rank, world=2)
        s.set_epoch(0)
        shards.append(list(s))
        assert len(s) == len(shards[-1]) == 12
    for b in range(6):  # global batch b of the two processes = batch b of one process
        assert (
            shards[0][2 * b : 2 * b + 2] + shards[1][2 * b : 2 * b + 2] == order[4 * b : 4 * b + 4]
        )
