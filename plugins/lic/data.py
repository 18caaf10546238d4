"""Datasets for LIC training and evaluation: folders, the embedded ``synthetic`` pictures and the
``samples`` photographs; deterministic crops and batch order for exact resumption.

Rules (also in the docs):

* images are converted to RGB (grayscale replicated, alpha dropped, 16-bit scaled to 8 bits);
* a training image smaller than ``--patch-size`` on either side is skipped, and the run says how
  many were; when none is large enough, that is an error naming the largest image;
* crops and the batch order are functions of ``(seed, epoch, index)`` only, so a run resumed at
  step k sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from plugins.lic.errors import UsageError
from plugins.lic.synthetic import dead_leaves

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
#: real photographs shipped inside scikit-image's wheel (skimage/data), used by ``samples``
SAMPLE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "rocket.jpg",
)
#: size of a ``synthetic`` picture and how many make each split
SYNTHETIC_SIZE = 256
SYNTHETIC_COUNT = {"train": 512, "test": 16}


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """An (H, W, 3) float32 array in [0, 1]; 16-bit images are scaled, alpha is dropped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float32)
        a = a / (65535.0 if a.max() > 255 else 255.0)
        return np.repeat(a[..., None], 3, axis=2).clip(0, 1)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _read(path: Path, decode: bool) -> Image.Image:
    """Open an image (decoding its pixels when asked); an unreadable file is the one-line error."""
    try:
        with Image.open(path) as img:
            if decode:
                img.load()
            return img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UsageError(
            f"{path}: not a readable image ({exc}); remove it from the folder or replace it"
        ) from None


def load_image(path: Path) -> np.ndarray:
    return to_rgb_array(_read(path, decode=True))


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder; pass an existing image folder to -d/--dataset")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    others = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if others:
        raise UsageError(
            f"{others[0]}: not an image file (in {folder}); remove it, "
            f"or keep only images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    if not images:
        raise UsageError(f"{folder}: no images found; put .png/.jpg files in it")
    return images


class Pictures:
    """A list of pictures that can be read by index: files, synthetic seeds or sample photos."""

    def __init__(
        self, name: str, count: int, loader, sizes: list[tuple[int, int]] | None = None
    ) -> None:
        self.name, self.count, self._loader, self._sizes = name, count, loader, sizes

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        return self._loader(index)

    def sizes(self) -> list[tuple[int, int]]:
        """(height, width) of every picture, without decoding them when possible."""
        if self._sizes is None:
            self._sizes = [tuple(self[i].shape[:2]) for i in range(self.count)]  # type: ignore[misc]
        return self._sizes


#: a folder whose pictures fit in this many bytes (8-bit RGB) is decoded once and kept in memory
FOLDER_CACHE_BYTES = 2 * 1024**3


def folder_pictures(folder: Path) -> Pictures:
    """The images of a folder. When they fit in :data:`FOLDER_CACHE_BYTES` they are decoded on
    first use and kept as 8-bit arrays (a small photo set is read from disk once, not once per
    crop); larger folders are decoded on every access."""
    files = image_files(folder)
    sizes = [(img.height, img.width) for img in (_read(f, decode=False) for f in files)]
    if sum(h * w * 3 for h, w in sizes) > FOLDER_CACHE_BYTES:
        return Pictures(str(folder), len(files), lambda i: load_image(files[i]), sizes)
    cache: dict[int, np.ndarray] = {}

    def picture(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = np.round(load_image(files[i]) * 255).astype(np.uint8)
        return cache[i].astype(np.float32) / 255.0

    return Pictures(str(folder), len(files), picture, sizes)


#: (seed, split offset, size) → generated pictures, for the life of the process
_SYNTHETIC_CACHE: dict[tuple[int, int, int], dict[int, np.ndarray]] = {}


def synthetic_pictures(
    split: str, seed: int = 0, count: int | None = None, size: int = SYNTHETIC_SIZE
) -> Pictures:
    """Dead-leaves pictures, generated on first use (~35 ms each) and kept as 8-bit arrays
    (512 train pictures of 256² are 100 MB), so that later epochs only crop. The arrays are
    shared by every call in the process (several runs in one process generate them once)."""
    n = SYNTHETIC_COUNT[split] if count is None else count
    offset = 0 if split == "train" else 1_000_000  # disjoint seeds for the held-out split
    cache = _SYNTHETIC_CACHE.setdefault((seed, offset, size), {})

    def picture(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = np.round(dead_leaves(size, size, (seed, offset + i)) * 255).astype(np.uint8)
        return cache[i].astype(np.float32) / 255.0

    return Pictures(f"synthetic/{split}", n, picture, [(size, size)] * n)


def samples_folder() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            "the 'samples' dataset reads the photographs shipped with scikit-image: "
            "pip install 'moo-opt[lic]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sample_pictures() -> Pictures:
    folder = samples_folder()
    files = [folder / name for name in SAMPLE_PHOTOS if (folder / name).exists()]
    if not files:
        raise UsageError(
            f"{folder}: scikit-image's sample photographs are missing; reinstall scikit-image"
        )
    return Pictures("samples", len(files), lambda i: load_image(files[i]))


DATASETS = ("synthetic", "samples")


def resolve(dataset: str, split: str, seed: int = 0) -> Pictures:
    """``synthetic``, ``samples``, an ``ImageFolder`` root (``root/train``, ``root/test``) or, for
    evaluation, a flat folder of images."""
    if dataset == "synthetic":
        return synthetic_pictures(split, seed)
    if dataset == "samples":
        return sample_pictures()
    path = Path(dataset)
    if not path.exists():
        raise UsageError(
            f"-d {dataset}: neither a registered dataset ({', '.join(DATASETS)}) "
            "nor an existing folder"
        )
    if (path / split).is_dir():
        return folder_pictures(path / split)
    if (path / "train").is_dir() or (path / "test").is_dir():
        raise UsageError(
            f"{path / split}: missing; an ImageFolder root needs both 'train' and 'test' subfolders"
        )
    if split == "train":
        raise UsageError(
            f"{path}: training needs CompressAI's ImageFolder layout ({path}/train, {path}/test)"
        )
    return folder_pictures(path)


# --------------------------------------------------------------------------- training patches
def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng((seed, epoch, index))


#: ``crops_per_image="auto"`` gives an epoch at least this many crops
AUTO_EPOCH_CROPS = 512


def auto_crops_per_image(images: int) -> int:
    """Crops per image and epoch for ``--crops-per-image auto``: one for a folder of
    :data:`AUTO_EPOCH_CROPS` images or more (CompressAI's one crop per image), else enough for an
    epoch of at least that many crops (a folder of 24 photographs: 22 crops of each)."""
    return max(1, math.ceil(AUTO_EPOCH_CROPS / max(images, 1)))


class PatchDataset(Dataset):
    """Random crops of ``patch`` pixels, as CHW float tensors in [0, 1]; ``crops_per_image`` of
    each picture per epoch (index ``i`` crops picture ``i mod pictures``). The crop of an index is
    a function of ``(seed, epoch, index)`` (call :meth:`set_epoch`). Pictures smaller than the
    patch are left out (:attr:`skipped` counts them)."""

    def __init__(
        self, pictures: Pictures, patch: tuple[int, int], seed: int, crops_per_image: int = 1
    ) -> None:
        if crops_per_image < 1:
            raise UsageError(f"--crops-per-image {crops_per_image}: must be at least 1")
        ph, pw = patch
        sizes = pictures.sizes()
        self.keep = [i for i, (h, w) in enumerate(sizes) if h >= ph and w >= pw]
        self.skipped = len(sizes) - len(self.keep)
        if not self.keep:
            h, w = max(sizes, key=lambda s: s[0] * s[1])
            raise UsageError(
                f"--patch-size {ph} {pw} is larger than every image of {pictures.name} "
                f"(the largest is {h}x{w}); lower --patch-size"
            )
        self.pictures, self.patch, self.seed, self.epoch = pictures, patch, seed, 0
        self.crops_per_image = crops_per_image

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def images(self) -> int:
        """Pictures large enough for the patch."""
        return len(self.keep)

    def __len__(self) -> int:
        return len(self.keep) * self.crops_per_image

    def __getitem__(self, index: int) -> Tensor:
        img = self.pictures[self.keep[index % len(self.keep)]]
        rng = item_rng(self.seed, self.epoch, index)
        ph, pw = self.patch
        y = int(rng.integers(0, img.shape[0] - ph + 1))
        x = int(rng.integers(0, img.shape[1] - pw + 1))
        crop = img[y : y + ph, x : x + pw]
        if rng.random() < 0.5:  # horizontal flip, a free augmentation
            crop = crop[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))


class EpochSampler(Sampler[int]):
    """A permutation per epoch, from ``(seed, epoch)``; can start part-way through an epoch.

    With ``world`` processes, global batches of ``batch_size × world`` images are cut from the
    permutation and process ``rank`` takes the ``rank``-th share of each, so the processes
    together see what one process would with the global batch.
    """

    def __init__(
        self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        self.size, self.batch_size, self.seed, self.rank, self.world = (
            size,
            batch_size,
            seed,
            rank,
            world,
        )
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def batches_per_epoch(self) -> int:
        # drop_last, as CompressAI's training loader
        return self.size // (self.batch_size * self.world)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=gen).tolist()
        glob = self.batch_size * self.world
        mine: list[int] = []
        for b in range(self.start_batch, self.batches_per_epoch()):
            start = b * glob + self.rank * self.batch_size
            mine.extend(order[start : start + self.batch_size])
        return iter(mine)

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.start_batch) * self.batch_size


class SubBatchIndices:
    """``k`` random positions of a batch, drawn afresh at each call from a private generator (never
    the global RNG, whose stream is the quantisation noise), for ``--update-subbatch``: the samples
    on which Solution 1's amortised update recomputes the losses after the step.

    The generator is seeded from the run's seed (a stream of its own, not the crops' or the batch
    order's) and its state is saved in the checkpoint, so a resumed run draws the sub-batches an
    uninterrupted run would. Under several processes every rank draws the same positions of its
    own batch (same seed, same number of draws: rank 0's saved state is every rank's).
    """

    #: the stream of the seed sequence that seeds the generator (``SeedSequence([seed, STREAM])``)
    STREAM = 0x5B

    def __init__(self, k: int, seed: int) -> None:
        self.k = k
        entropy = np.random.SeedSequence([seed, self.STREAM]).generate_state(1, np.uint64)[0]
        self.generator = torch.Generator().manual_seed(int(entropy) >> 1)

    def draw(self, batch_size: int) -> Tensor:
        """``k`` distinct positions in ``[0, batch_size)``, increasing (CPU, int64)."""
        if not 1 <= self.k <= batch_size:
            raise ValueError(
                f"a sub-batch of {self.k} needs a batch of at least as many, got {batch_size}"
            )
        return torch.randperm(batch_size, generator=self.generator)[: self.k].sort().values

    def state_dict(self) -> dict[str, Any]:
        return {"k": self.k, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The generator's state (``k`` is the run's: the caller checks that it matches)."""
        self.generator.set_state(state["generator"])


def center_crop(img: np.ndarray, patch: tuple[int, int]) -> np.ndarray:
    ph, pw = min(patch[0], img.shape[0]), min(patch[1], img.shape[1])
    y, x = (img.shape[0] - ph) // 2, (img.shape[1] - pw) // 2
    return img[y : y + ph, x : x + pw]


def test_batches(pictures: Pictures, patch: tuple[int, int], batch_size: int) -> list[Tensor]:
    """Centre crops of the held-out pictures (CompressAI tests on centre crops), in batches."""
    crops = []
    for i in range(len(pictures)):
        img = pictures[i]
        if img.shape[0] < patch[0] or img.shape[1] < patch[1]:
            continue
        crops.append(
            torch.from_numpy(np.ascontiguousarray(center_crop(img, patch).transpose(2, 0, 1)))
        )
    if not crops:
        raise UsageError(
            f"--patch-size {patch[0]} {patch[1]} is larger than every test image of "
            f"{pictures.name}; lower --patch-size"
        )
    n = math.ceil(len(crops) / batch_size)
    return [torch.stack(crops[i * batch_size : (i + 1) * batch_size]) for i in range(n)]
