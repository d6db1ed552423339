"""guided-diffusion (ADM) checkpoints, as shipped by DPS, MPGD and DMPlug, read and converted into diffusers prior folders.

An ADM checkpoint is a bare state dict; its architecture lives in a separate `model_config.yaml`. We read both and
check every key and shape of the file against what the hyper-parameters imply before converting (the official DPS
loader silently falls back to random weights on a mismatch; we refuse). Files are read with
`torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import json
import pickle
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from priorflow.errors import PriorLoadError
from priorflow.solvers.priors.adm import (
    AdmConfig,
    adm_to_diffusers,
    convert_adm_state_dict,
    key_map,
    read_adm_config,
    target_shapes,
)
from priorflow.solvers.priors.files import METADATA_FILE, WEIGHTS_FILE, sha256_file

SHOWN = 5  # keys named per kind of mismatch
SCHEDULE = {"kind": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}
"""The schedule every ADM checkpoint of DPS, MPGD and DMPlug was trained with (linear betas)."""


def _find_config(weights: Path) -> Path:
    candidates = [weights.with_suffix(".yaml"), weights.parent / "model_config.yaml", weights.with_suffix(".json")]
    found = next((c for c in candidates if c.is_file()), None)
    if found is not None:
        return found
    raise PriorLoadError(f"{weights} is a bare state dict: its hyper-parameters (guided-diffusion's model_config.yaml) "
                         f"are needed, looked for {', '.join(c.name for c in candidates)} beside it; pass the file "
                         "explicitly (--config)")


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())


def read_state_dict(weights: Path) -> dict[str, Tensor]:
    """A dict of tensors, or one wrapped under "state_dict" or "model" beside non-tensor entries (a step count);
    nothing but tensors and plain containers is unpickled."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols say nothing to the user
            loaded = torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's own text suggests weights_only=False: we never do that
        raise PriorLoadError(f"{weights} is not a state dict: it holds pickled objects other than tensors, or is not "
                             "a torch file at all (priorflow loads checkpoints with weights_only=True only)") from exc
    except (RuntimeError, EOFError, ValueError, AttributeError, ImportError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "the file ends early"
        raise PriorLoadError(f"{weights} is not a state dict: it is not a readable torch file ({detail})") from exc
    if isinstance(loaded, dict) and not _is_state_dict(loaded):
        nested = [k for k, v in loaded.items() if _is_state_dict(v)]
        if len(nested) > 1:  # e.g. model and EMA weights: picking one silently could pick the wrong one
            raise PriorLoadError(f"{weights} is not a state dict but holds several ({', '.join(map(str, nested))}); "
                                 "save the one you mean on its own")
        if nested and nested[0] in ("state_dict", "model") and not any(isinstance(v, Tensor) for v in loaded.values()):
            loaded = loaded[nested[0]]
    if not _is_state_dict(loaded):
        raise PriorLoadError(f"{weights} is not a state dict (a mapping of parameter names to tensors), "
                             f"got a {type(loaded).__name__}")
    return loaded


def check_keys(state: dict[str, Tensor], config: AdmConfig, where: Path, config_path: Path | str) -> None:
    """Refuse weights that do not fit the hyper-parameters, naming the first few offending keys."""
    expected = {k: shape for k, (_, _, shape) in key_map(config, target_shapes(adm_to_diffusers(config))).items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shaped = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
              for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:SHOWN])}{', ...' if len(keys) > SHOWN else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shaped)) if keys]
    if problems:
        raise PriorLoadError(f"{where} does not match the hyper-parameters in {config_path}: " + "; ".join(problems))


def load_adm_checkpoint(weights: Path, config_path: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """(UNet2DModel in eval mode, fp32; metadata) from an ADM state dict and its hyper-parameters.

    The network takes ADM's original timesteps 0..999 of the linear 1e-4..0.02 schedule; with learn_sigma its
    first 3 output channels are epsilon.
    """
    from diffusers.models.unets.unet_2d import UNet2DModel

    weights = Path(weights)
    if not weights.is_file():
        raise PriorLoadError(f"checkpoint {weights} does not exist")
    config_path = Path(config_path) if config_path is not None else _find_config(weights)
    config = read_adm_config(config_path)
    state = read_state_dict(weights)
    check_keys(state, config, weights, config_path)
    network = UNet2DModel.from_config(adm_to_diffusers(config))
    converted = convert_adm_state_dict(state, config)
    del state  # real checkpoints are up to 2 GB: hold at most two copies
    network.load_state_dict(converted, strict=True)
    network.eval().requires_grad_(False).float()
    digest = sha256_file(weights)
    metadata = {
        "name": weights.stem,
        "format": "guided-diffusion (ADM) state dict, epsilon prediction"
                  + (" (first 3 of 6 channels, learned variance)" if config.learn_sigma else "") + ", images in [-1, 1]",
        "source": {"file": weights.name, "sha256": digest, "config": config_path.name},
        "sha256": digest,
        "hyperparameters": config.model_dump(mode="json"),
        "schedule": SCHEDULE,
    }
    return network, metadata


def convert_checkpoint(weights: Path, out: Path, config_path: Path | None = None) -> Path:
    """Write a diffusers prior folder from an ADM checkpoint: all or nothing, never into a non-empty folder."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PriorLoadError(f"{out} exists and is not an empty folder; choose a new --out")
    network, metadata = load_adm_checkpoint(weights, config_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        network.save_config(staging)
        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, staging / WEIGHTS_FILE)
        # A folder's identity is the hash of its safetensors file (load_prior computes it); "source" keeps the .pt's.
        folder_metadata = {k: v for k, v in metadata.items() if k != "sha256"}
        folder_metadata["format"] = "diffusers UNet2DModel converted from a " + metadata["format"]
        (staging / METADATA_FILE).write_text(json.dumps(folder_metadata, indent=1) + "\n")
        staging.replace(out)  # an empty `out` is replaced whole; a non-empty one makes this fail
    except BaseException as exc:  # interrupted or failed: leave no half-written folder behind
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise PriorLoadError(f"cannot write {out}: {exc}") from exc
        raise
    return out
