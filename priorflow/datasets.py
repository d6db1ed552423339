"""Image datasets available offline, with fixed splits so that test images are never seen in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from priorflow.errors import PriorflowError

DIGITS_SPLIT_SEED = 0
DIGITS_SPLIT_SIZES = {"test": 200, "val": 100}  # the rest (1497 images) is "train"
SPLITS = ("train", "val", "test")
# The perturbed variant of a split: each image moved by one fixed seeded transform, inside the range of the bundled
# priors' training augmentation (shift=1.5,rotate=12,scale=0.1), so it tests position invariance, not extrapolation.
PERTURB_SEED = 1
PERTURB_RANGE = {"shift": 1.5, "rotate": 12.0, "scale": 0.1}


def digits_split_indices(seed: int = DIGITS_SPLIT_SEED) -> dict[str, list[int]]:
    """Indices into scikit-learn's 1797 digits for each split, from one seeded permutation."""
    order = np.random.default_rng(seed).permutation(1797).tolist()
    n_test, n_val = DIGITS_SPLIT_SIZES["test"], DIGITS_SPLIT_SIZES["val"]
    return {"test": sorted(order[:n_test]), "val": sorted(order[n_test : n_test + n_val]), "train": sorted(order[n_test + n_val :])}


def digits_source(split: str) -> tuple[Tensor, Tensor]:
    """scikit-learn's 8x8 digits of one split as (N, 1, 8, 8) floats in [0, 1], with labels: the source that
    `load_digits` and the training augmentation draw images from."""
    from sklearn.datasets import load_digits as sk_digits

    if split not in SPLITS:
        raise PriorflowError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    bunch = sk_digits()
    index = digits_split_indices()[split]
    return torch.from_numpy(bunch.images[index]).float().div(16.0).unsqueeze(1), torch.from_numpy(bunch.target[index])


def load_digits(split: str, image_size: int = 16, perturbed: bool = False) -> tuple[Tensor, Tensor]:
    """scikit-learn's 8x8 digits of one split, bilinearly upsampled, as (N, 1, S, S) floats in [0, 1], with labels.

    perturbed: each digit moved by its own fixed transform (seed PERTURB_SEED, drawn in split order) before it is
    drawn at S px: shift up to ±1.5 pixels of the returned image on each axis, rotation up to ±12°, scale in
    [0.9, 1.1], black outside; as sharp as the plain images (`training.augment.affine`); the labels are unchanged.
    Held-out digits that sit slightly elsewhere than the training ones, to check that a prior has not memorised
    where digits sit."""
    from priorflow.training.augment import Augmentation, upsample

    source, labels = digits_source(split)
    if perturbed:
        images = Augmentation(**PERTURB_RANGE)(source, torch.Generator().manual_seed(PERTURB_SEED), image_size)
    else:
        images = upsample(source, image_size) if image_size != 8 else source
    return images.clamp(0.0, 1.0), labels


def load_image_array(path: Path) -> Tensor:
    """A training set stored as .npy of shape (N, C, H, W) or (N, H, W), uint8 or float in [0, 1]."""
    array = np.load(path, allow_pickle=False)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or array.shape[2] != array.shape[3]:
        raise PriorflowError(f"{path}: expected square images of shape (N, C, H, W) or (N, H, W), got {array.shape}")
    data = torch.from_numpy(array)
    data = data.float().div(255.0) if array.dtype == np.uint8 else data.float()
    if not torch.isfinite(data).all() or data.min() < 0 or data.max() > 1:
        raise PriorflowError(f"{path}: float images must be finite and in [0, 1]")
    return data


def digit_mosaics(split: str, count: int, height: int, width: int, image_size: int = 16, seed: int = 0) -> Tensor:
    """(count, 1, height, width) pages of held-out digits on a lattice of `image_size` cells, the last row and column
    cut where the page ends: images larger than the prior, with digits wherever a tile falls."""
    digits, _ = load_digits(split, image_size)
    generator = torch.Generator().manual_seed(seed)
    rows, cols = -(-height // image_size), -(-width // image_size)
    picks = torch.randint(0, len(digits), (count, rows, cols), generator=generator)
    pages = digits[picks.flatten()].reshape(count, rows, cols, image_size, image_size)
    pages = pages.permute(0, 1, 3, 2, 4).reshape(count, 1, rows * image_size, cols * image_size)
    return pages[..., :height, :width].contiguous()


def digit_volumes(split: str, count: int, depth: int, image_size: int = 16, shift: float = 2.0, seed: int = 0) -> Tensor:
    """(count, depth, S, S) volumes whose slices move and morph smoothly along depth: a held-out digit drifts by
    2 * `shift` pixels across the volume while it fades into another one."""
    import torch.nn.functional as F

    digits, _ = load_digits(split, image_size)
    generator = torch.Generator().manual_seed(seed)
    pairs = digits[torch.randint(0, len(digits), (count, 2), generator=generator)]  # (count, 2, 1, S, S)
    fade = torch.linspace(0.0, 1.0, depth)
    offsets = torch.linspace(-shift, shift, depth) * 2.0 / image_size  # grid_sample's [-1, 1] units
    theta = torch.zeros(depth, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = offsets
    grid = F.affine_grid(theta, (depth, 1, image_size, image_size), align_corners=False)
    volumes = []
    for first, second in pairs:
        blend = (1 - fade)[:, None, None, None] * first + fade[:, None, None, None] * second
        volumes.append(F.grid_sample(blend, grid, align_corners=False, padding_mode="zeros")[:, 0])
    return torch.stack(volumes).clamp(0.0, 1.0)


SAMPLE_KINDS = ("digits", "mosaics", "volumes")


def write_digits_array(url: str, split: str = "test", count: int = 32, image_size: int = 16, kind: str = "digits",
                       size: int = 64, depth: int = 16) -> str:
    """Sample data for demos, tests and benchmarks, replacing only an array this function wrote before: held-out
    digits as float32 images (N, 1, S, S), pages of them (N, 1, size, size, larger than the prior), or volumes
    (N, depth, S, S) that change smoothly along depth."""
    import zarr

    from priorflow.storage.inputs import LAYOUT_ATTRIBUTE, SAMPLE_DATA
    from priorflow.storage.location import claim_array_location
    from priorflow.storage.urls import open_store

    if kind not in SAMPLE_KINDS:
        raise PriorflowError(f"unknown sample data kind {kind!r}; choose one of {', '.join(SAMPLE_KINDS)}")
    claim_array_location(url, SAMPLE_DATA)
    if kind == "digits":
        data, layout = load_digits(split, image_size)[0][:count], "images"
    elif kind == "mosaics":
        data, layout = digit_mosaics(split, count, size, size, image_size), "images"
    else:
        data, layout = digit_volumes(split, count, depth, image_size), "volumes"
    chunks = (16, *data.shape[1:]) if layout == "images" else (1, *data.shape[1:])
    zarr.create_array(open_store(url), data=data.numpy(), chunks=chunks, overwrite=True,
                      attributes={LAYOUT_ATTRIBUTE: layout, "source": f"sklearn digits, {split} split, {kind}",
                                  "written_by": SAMPLE_DATA})
    return url

