"""Reading a prior from disk: a diffusers `UNet2DModel` folder (config.json + diffusion_pytorch_model.safetensors),
a diffusers pipeline folder (unet/ + scheduler/, and vae/ or vqvae/ for a latent diffusion model), or a guided-diffusion
(ADM) state dict read with `torch.load(weights_only=True)` (adm.py). Folders are read with safetensors only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from priorflow.errors import PriorLoadError
from priorflow.solvers.device import resolve_device
from priorflow.solvers.priors.autoencoder import Autoencoder, load_autoencoder
from priorflow.solvers.priors.checkpoints import load_adm_checkpoint
from priorflow.solvers.priors.diffusion import NoiseSchedule
from priorflow.solvers.priors.files import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, read_json, sha256_file
from priorflow.solvers.priors.prior import DiffusionPrior

AUTOENCODER_FOLDERS = ("vae", "vqvae")


def _schedule(root: Path) -> NoiseSchedule:
    """The training schedule: the pipeline's scheduler config if there is one, else linear 1e-4..0.02 over 1000."""
    config_path = root / "scheduler" / "scheduler_config.json"
    if not config_path.is_file():
        return NoiseSchedule.linear()
    from diffusers import DDPMScheduler

    config = read_json(config_path)
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise PriorLoadError(f"{config_path}: only epsilon-prediction priors are supported, got {config['prediction_type']!r}")
    try:
        scheduler = DDPMScheduler.from_config(config)
    except (ValueError, NotImplementedError) as exc:
        raise PriorLoadError(f"{config_path}: {exc}") from exc
    return NoiseSchedule.from_alphas_cumprod(scheduler.alphas_cumprod, config.get("beta_schedule", "linear"))


def _load_unet(folder: Path) -> tuple[nn.Module, dict[str, Any], Path]:
    """A diffusers UNet2DModel folder: the network with its weights (strict), its config and weights file."""
    from diffusers.models.unets.unet_2d import UNet2DModel
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise PriorLoadError(f"{weights} is missing (priorflow reads safetensors weights only, never pickles)")
    config = read_json(folder / CONFIG_FILE)
    try:
        network = UNet2DModel.from_config(config)
    except (TypeError, ValueError) as exc:
        raise PriorLoadError(f"{folder / CONFIG_FILE} is not a UNet2DModel config: {exc}") from exc
    try:
        network.load_state_dict(load_file(weights), strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise PriorLoadError(f"{weights} is corrupt or does not match {CONFIG_FILE}: {exc}") from exc
    if int(config["out_channels"]) not in (config["in_channels"], 2 * config["in_channels"]):
        raise PriorLoadError(f"{folder}: out_channels must be in_channels or twice it (learned variance)")
    return network, config, weights


def _space_shape(config: dict[str, Any]) -> tuple[int, int, int]:
    size = config["sample_size"]
    height, width = (size, size) if isinstance(size, int) else size
    return (int(config["in_channels"]), int(height), int(width))


def _combined_sha256(*digests: str) -> str:
    """One identity for weights that work together (a UNet and its autoencoder): a change to either changes it."""
    return digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()


def _autoencoder_folder(root: Path) -> Path | None:
    found = [root / name for name in AUTOENCODER_FOLDERS if (root / name / CONFIG_FILE).is_file()]
    if len(found) > 1:
        raise PriorLoadError(f"{root} holds both {' and '.join(f.name + '/' for f in found)}: which autoencoder is meant?")
    return found[0] if found else None


def _read_network(root: Path) -> tuple[nn.Module, Any, NoiseSchedule, str, dict[str, Any]]:
    """The denoiser of a prior file or folder: network, config, noise schedule, weights' sha256 and metadata."""
    if root.is_file():
        network, metadata = load_adm_checkpoint(root)
        return network, network.config, NoiseSchedule.linear(), metadata["sha256"], metadata
    if not root.is_dir():
        raise PriorLoadError(f"prior {root} does not exist")
    folder = root if (root / CONFIG_FILE).is_file() else root / "unet"
    if not (folder / CONFIG_FILE).is_file():
        raise PriorLoadError(
            f"no diffusion prior at {root}: expected a diffusers UNet2DModel folder with {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}, a pipeline folder with unet/ inside, or an ADM checkpoint file"
        )
    network, config, weights = _load_unet(folder)
    metadata = read_json(root / METADATA_FILE) if (root / METADATA_FILE).is_file() else {}
    return network, config, _schedule(root), sha256_file(weights), metadata


def _checked_autoencoder(root: Path, own: Path | None, given: str | Path | None, space_shape: tuple[int, int, int],
                         target: torch.device, scaling_factor: float | None) -> Autoencoder | None:
    """A latent prior's own autoencoder or the one given for MPGD's projections, checked against the prior."""
    if own is not None and given is not None:
        raise PriorLoadError(f"{root} is a latent prior with its own autoencoder ({own.name}/); "
                             "an autoencoder for MPGD's projections goes with a pixel prior")
    path = own or given
    if path is None:
        if scaling_factor is not None:
            raise PriorLoadError("a scaling factor applies to an autoencoder, and this prior has none")
        return None
    ae = load_autoencoder(path, target, scaling_factor)
    if own is None:
        ae.latent_shape(space_shape)  # raises if the autoencoder does not fit the prior's images
    elif ae.latent_channels != space_shape[0]:
        raise PriorLoadError(f"{root}: the UNet works on {space_shape[0]}-channel latents, but {own.name}/ "
                             f"makes {ae.latent_channels}-channel ones")
    return ae


def load_prior(
    path: str | Path,
    device: torch.device | str = "auto",
    autoencoder: str | Path | None = None,
    scaling_factor: float | None = None,
) -> DiffusionPrior:
    """Load a prior in eval mode with frozen weights, on `device` (auto: CUDA if any).

    `path` is a diffusers UNet2DModel folder, a pipeline folder (unet/ + scheduler/; with vae/ or vqvae/ it is a
    latent prior), or a guided-diffusion (ADM) state dict `.pt` with its model_config.yaml beside it.
    `autoencoder` is a VQModel/AutoencoderKL folder for a pixel prior (MPGD's projections); `scaling_factor`
    overrides the autoencoder's latent scaling factor (a latent prior's own, or the projection one).
    """
    root = Path(path)
    target = resolve_device(device)
    network, config, schedule, weights_sha, metadata = _read_network(root)
    space_shape = _space_shape(dict(config))
    own_autoencoder = _autoencoder_folder(root) if root.is_dir() else None
    ae = _checked_autoencoder(root, own_autoencoder, autoencoder, space_shape, target, scaling_factor)
    identity = {
        "path": str(root.resolve()),
        "name": metadata.get("name", root.stem if root.is_file() else root.name),
        "kind": "latent" if own_autoencoder else "pixel",
        "sha256": _combined_sha256(weights_sha, *([ae.identity["sha256"]] if ae else [])),
        "metadata": metadata,
    }
    if ae is not None:
        identity["autoencoder"] = ae.identity
    network.eval().requires_grad_(False).to(target)
    return DiffusionPrior(network, schedule, space_shape, identity, ae, latent=own_autoencoder is not None)


class PriorCache:
    """Priors loaded once and shared by every solve of a process, by what loaded them (path, device, autoencoder,
    scaling factor). Sharing is safe because a DiffusionPrior is frozen and nothing in priorflow moves or changes a
    loaded network; the cache holds at most `size` priors, dropping the one used longest ago."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._priors: dict[tuple[str, str, str | None, float | None], DiffusionPrior] = {}

    def get(self, path: str | Path, device: torch.device | str = "auto", autoencoder: str | Path | None = None,
            scaling_factor: float | None = None) -> DiffusionPrior:
        key = (str(path), str(resolve_device(device)), None if autoencoder is None else str(autoencoder), scaling_factor)
        prior = self._priors.pop(key, None) or load_prior(path, key[1], autoencoder, scaling_factor)
        self._priors[key] = prior  # most recently used last
        while len(self._priors) > self.size:
            del self._priors[next(iter(self._priors))]
        return prior

    def clear(self) -> None:
        self._priors.clear()
