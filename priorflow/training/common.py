"""What the trainers share: training images, the learning-rate schedule, EMA, resumable checkpoints and the loop."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from priorflow.datasets import digits_source, digits_split_indices, load_image_array
from priorflow.errors import PriorflowError

CHECKPOINT_FILE = "checkpoint.pt"


def training_images(data: str, image_size: int) -> Tensor:
    """(N, C, s, s) source images in [0, 1], drawn at image_size by `Augmentation(...)(batch, generator, image_size)`:
    the train split of the 8x8 digits (so that moved digits stay sharp, see `augment.affine`), or a .npy array of
    images at image_size."""
    if data == "digits":
        return digits_source("train")[0]
    path = Path(data)
    if not path.is_file():
        raise PriorflowError(f"training data {path} does not exist (use 'digits' or a .npy file)")
    images = load_image_array(path)
    if images.shape[-1] != image_size:
        raise PriorflowError(f"{path}: images are {images.shape[-1]} px, but image_size is {image_size}")
    return images


def data_metadata(data: str) -> dict[str, Any]:
    """What a trained model records about its data: for the digits, the held-out indices it never saw."""
    if data != "digits":
        return {"source": data}
    split = digits_split_indices()
    return {
        "source": "sklearn.datasets.load_digits (8x8, /16), bilinear upsampling; augmented digits are moved before they are drawn",
        "split_seed": 0,
        "trained_on": "train",
        "held_out": {"test": split["test"], "val": split["val"]},
    }


def learning_rate(peak: float, warmup_steps: int, steps: int, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return peak * (0.1 + 0.45 * (1.0 + math.cos(math.pi * progress)))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """Move the EMA weights towards the model's; the decay ramps up so early EMA weights are not the random init."""
    decay = min(decay, (1 + step) / (10 + step))
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1.0 - decay)


def load_checkpoint(folder: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint in `folder`, or None; one made with another configuration is refused rather than mixed in."""
    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        return None
    state = torch.load(path, weights_only=True)
    if state["config"] != config:
        changed = sorted(k for k in config.keys() | state["config"].keys() if config.get(k) != state["config"].get(k))
        raise PriorflowError(
            f"{path} was made with another configuration ({', '.join(changed)} differ); use a new --out folder"
        )
    return state


def restore_training(state: dict[str, Any], model: torch.nn.Module, ema: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, generator: torch.Generator) -> int:
    """Put a checkpoint's weights, optimiser and random stream back; returns its step."""
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return int(state["step"])


def optimise(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    """One step on `loss`, gradients clipped to norm 1."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Written aside and renamed into place, so a run killed while saving keeps its previous checkpoint."""
    path = folder / CHECKPOINT_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Loop:
    """How a model is trained: `steps` optimiser steps at a peak learning rate `lr` (warm-up, then cosine decay),
    an EMA of the weights (decay 0: none), and a resumable checkpoint in `folder` every `checkpoint_every` steps,
    made with the configuration `identity` (resuming another one is refused)."""

    folder: Path
    identity: dict[str, Any]
    steps: int
    lr: float
    warmup_steps: int
    ema_decay: float
    checkpoint_every: int


def fit(loop: Loop, model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer,
        generator: torch.Generator, losses_of: Callable[[torch.Generator], dict[str, Tensor]],
        on_step: Callable[[int, float], None] | None = None) -> dict[str, float]:
    """The loop of both trainers, resumed from `loop.folder`'s checkpoint if there is one: each step sets the
    learning rate, draws a batch's losses (`losses_of(generator)`, whose "loss" is optimised), takes one clipped
    step, moves the EMA and the losses' running averages, and checkpoints. Returns the running averages."""
    step, averages = 0, {}
    state = load_checkpoint(loop.folder, loop.identity)
    if state is not None:
        step = restore_training(state, model, ema, optimizer, generator)
        averages = state["losses"] if "losses" in state else {"loss": state["loss_ema"]}  # older prior checkpoints
    model.train()
    while step < loop.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(loop.lr, loop.warmup_steps, loop.steps, step)
        losses = losses_of(generator)
        optimise(model, optimizer, losses["loss"])
        if loop.ema_decay:
            ema_update(ema, model, loop.ema_decay, step)
        step += 1
        for key, value in losses.items():
            averages[key] = value.item() if key not in averages else 0.98 * averages[key] + 0.02 * value.item()
        if on_step is not None:
            on_step(step, averages["loss"])
        if step % loop.checkpoint_every == 0 or step == loop.steps:
            save_checkpoint(loop.folder, {"config": loop.identity, "model": model.state_dict(), "ema": ema.state_dict(),
                                          "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                                          "step": step, "losses": averages})
    return averages
