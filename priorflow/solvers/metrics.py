"""Per-sample image quality against the ground truth, on images in [0, 1].

PSNR and SSIM follow scikit-image (data_range 1, 7x7 uniform SSIM window), as the DMPlug code reports them.
LPIPS uses the `lpips` package with AlexNet, whose ImageNet backbone comes from torchvision's cache; it is
never downloaded here and never replaced by a random backbone: when the weights are missing LPIPS is reported
as unavailable, once, with the file to provide.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"
LPIPS_MIN_SIZE = 32  # AlexNet's five layers need at least ~31 px


def _pairs(x: Tensor, reference: Tensor) -> tuple[np.ndarray, np.ndarray]:
    if x.shape != reference.shape or x.ndim != 4:
        raise ValueError(f"metrics need two (B, C, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(reference.shape)}")
    return x.detach().double().cpu().numpy(), reference.detach().double().cpu().numpy()


def psnr(x: Tensor, reference: Tensor) -> Tensor:
    """(B,) PSNR in dB with data range 1."""
    a, b = _pairs(x, reference)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    return torch.from_numpy(10.0 * np.log10(1.0 / np.maximum(mse, 1e-20)))


def ssim(x: Tensor, reference: Tensor) -> Tensor:
    """(B,) SSIM, scikit-image's structural_similarity with data_range 1 over channels."""
    from skimage.metrics import structural_similarity

    a, b = _pairs(x, reference)
    return torch.tensor([structural_similarity(p, q, channel_axis=0, data_range=1.0) for p, q in zip(a, b)])


def alexnet_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS


class LPIPSUnavailable(RuntimeError):
    """LPIPS cannot be computed honestly here (missing backbone weights or images too small)."""


_LPIPS: dict[torch.device, torch.nn.Module] = {}
"""The LPIPS network of each device, built once there (never moved: it is shared by every call on that device)."""


def _lpips_model(device: torch.device) -> torch.nn.Module:
    if device not in _LPIPS:
        path = alexnet_weights_path()
        if not path.is_file():
            raise LPIPSUnavailable(
                f"LPIPS unavailable: AlexNet ImageNet weights not found at {path}. Copy {ALEXNET_WEIGHTS} "
                f"(torchvision's AlexNet_Weights.IMAGENET1K_V1) there, or point TORCH_HOME at a cache that has it."
            )
        import lpips

        _LPIPS[device] = lpips.LPIPS(net="alex", verbose=False).eval().to(device)
    return _LPIPS[device]


def lpips_distance(x: Tensor, reference: Tensor) -> Tensor:
    """(B,) LPIPS (AlexNet); raises LPIPSUnavailable when it cannot be computed with real weights."""
    _pairs(x, reference)
    if min(x.shape[-2:]) < LPIPS_MIN_SIZE:
        raise LPIPSUnavailable(f"LPIPS unavailable: AlexNet LPIPS needs images of at least {LPIPS_MIN_SIZE} px, got {tuple(x.shape[-2:])}")
    model = _lpips_model(x.device)
    if x.shape[1] == 1:
        x, reference = x.expand(-1, 3, -1, -1), reference.expand(-1, 3, -1, -1)
    with torch.no_grad():
        return model(x * 2 - 1, reference * 2 - 1).flatten().cpu().double()


def image_metrics(x: Tensor, reference: Tensor) -> dict[str, Tensor | None]:
    """PSNR, SSIM and LPIPS per sample; LPIPS is None (with one logged reason) when unavailable."""
    metrics: dict[str, Tensor | None] = {"psnr": psnr(x, reference), "ssim": ssim(x, reference)}
    try:
        metrics["lpips"] = lpips_distance(x, reference)
    except LPIPSUnavailable as exc:
        _warn_once(str(exc))
        metrics["lpips"] = None
    return metrics


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    log.warning(message)
