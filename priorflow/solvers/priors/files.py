"""The files of a prior folder, as diffusers and priorflow name them, and how they are read and identified."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from priorflow.errors import PriorLoadError

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"  # diffusers' name for a model folder's safetensors weights
CONFIG_FILE = "config.json"
METADATA_FILE = "priorflow.json"  # what priorflow records beside weights it trained: data, splits, the command


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PriorLoadError(f"cannot read {path}: {exc}") from exc
