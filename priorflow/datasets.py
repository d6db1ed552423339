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


def write_digits_array(url: str, split: str = "test", count: int = 32, image_size: int = 16) -> str:
    """Sample data for demos and tests: held-out digits as a float32 (N, 1, S, S) Zarr array at `url`, replacing only
    an array this function wrote before."""
    import zarr

    from priorflow.storage.inputs import LAYOUT_ATTRIBUTE
    from priorflow.storage.location import claim_array_location
    from priorflow.storage.urls import open_store

    claim_array_location(url, DIGITS_WRITER)
    images, _ = load_digits(split, image_size)
    zarr.create_array(open_store(url), data=images[:count].numpy(), chunks=(16, 1, image_size, image_size),
                      overwrite=True, attributes={LAYOUT_ATTRIBUTE: "images", "source": f"sklearn digits, {split} split",
                                                  "written_by": DIGITS_WRITER})
    return url


DIGITS_WRITER = "priorflow sample data"
