"""guided-diffusion (ADM) networks as diffusers `UNet2DModel`s: the hyper-parameters of `model_config.yaml`, the
diffusers configuration they imply, and the state dict's keys mapped by walking the UNet's levels rather than
through a hand-written table (checkpoints.py reads and checks the files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator
from torch import Tensor

from priorflow.errors import PriorLoadError

DEFAULT_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}

Kind = Literal["plain", "resnet", "attention", "down", "up"]
# Sub-module names inside one ADM block -> the diffusers names of the same layer (each has .weight and .bias).
SUBMODULES: dict[str, dict[str, str]] = {
    "plain": {"": ""},
    "resnet": {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
               "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"},
    "attention": {"norm": "group_norm", "qkv": "to_q", "proj_out": "to_out.0"},  # qkv: split into to_q/k/v
    "down": {"op": "conv"},
    "up": {"conv": "conv"},
}


class AdmConfig(BaseModel):
    """guided-diffusion's `create_model` arguments; omitted ones take DPS's `create_model` defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(gt=0)
    num_channels: int = Field(gt=0)
    num_res_blocks: int = Field(gt=0)
    channel_mult: tuple[PositiveFloat, ...] = Field("", min_length=1, validate_default=True)  # "": by image_size
    learn_sigma: bool = False
    class_cond: bool = False
    use_checkpoint: bool = False
    attention_resolutions: tuple[PositiveInt, ...] = (16,)
    num_heads: int = Field(1, gt=0)
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    resblock_updown: bool = False
    use_fp16: bool = False
    use_new_attention_order: bool = False
    model_path: str | None = Field(None, exclude=True)  # where the official scripts look for weights; ignored

    @field_validator("channel_mult", mode="before")
    @classmethod
    def _channel_mult(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            size = info.data.get("image_size")
            if size not in DEFAULT_CHANNEL_MULT:
                raise ValueError(f"no default for image_size {size}; give it explicitly, e.g. '1,1,2,2,4,4'")
            return DEFAULT_CHANNEL_MULT[size]
        return value.split(",") if isinstance(value, str) else value

    @field_validator("attention_resolutions", mode="before")
    @classmethod
    def _resolutions(cls, value: Any) -> Any:
        if isinstance(value, int):
            return (value,)
        return [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("num_head_channels", "num_heads_upsample", "class_cond")
    @classmethod
    def _supported(cls, value: int | bool, info: Any) -> int | bool:
        if info.field_name == "class_cond" and value:
            raise ValueError("class-conditional checkpoints are not supported: priors are unconditional")
        if info.field_name != "class_cond" and value != -1 and value <= 0:
            raise ValueError("must be -1 (unset) or positive")
        return value

    @property
    def widths(self) -> list[int]:
        return [int(m * self.num_channels) for m in self.channel_mult]

    @property
    def attention(self) -> list[bool]:
        """Per level: ADM attends where the downsample factor 2**level is some image_size // resolution."""
        factors = {self.image_size // r for r in self.attention_resolutions}
        return [2**level in factors for level in range(len(self.channel_mult))]


def read_adm_config(path: Path) -> AdmConfig:
    """Read an official `model_config.yaml` (or the same fields as JSON) and check diffusers can express it."""
    try:
        text = Path(path).read_text()
        raw = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PriorLoadError(f"cannot read ADM hyper-parameters {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise PriorLoadError(f"{path}: ADM hyper-parameters must be a mapping of create_model arguments")
    try:
        config = AdmConfig.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise PriorLoadError(f"{path}: {fields}") from exc
    adm_to_diffusers(config, source=path)
    return config


def _head_dim(config: AdmConfig, where: Path | str) -> int:
    """diffusers gives every attention block the same head width; ADM fixes either the width or the head count."""
    attended, mid = [w for w, a in zip(config.widths, config.attention) if a], config.widths[-1]
    if config.num_head_channels > 0:
        bad = [c for c in [*attended, mid] if c % config.num_head_channels]
        if bad:
            raise PriorLoadError(f"{where}: num_head_channels {config.num_head_channels} does not divide {bad[0]} channels")
        return config.num_head_channels
    up_heads = config.num_heads if config.num_heads_upsample == -1 else config.num_heads_upsample
    widths = {c / config.num_heads for c in [*attended, mid]} | {c / up_heads for c in attended}
    if len(widths) != 1 or not next(iter(widths)).is_integer():
        raise PriorLoadError(f"{where}: num_heads {config.num_heads} (upsample {up_heads}) gives attention heads of "
                             f"widths {sorted(widths)}; diffusers needs one integer width (set num_head_channels)")
    return int(widths.pop())


def adm_to_diffusers(config: AdmConfig, source: Path | str = "ADM config") -> dict[str, Any]:
    """The `UNet2DModel` config with ADM's layout: one diffusers block per ADM level, mirrored on the way up."""
    if config.channel_mult[0] != 1:
        raise PriorLoadError(f"{source}: channel_mult must start with 1 (diffusers embeds timesteps with the first "
                             f"level's width), got {config.channel_mult}")
    widths = config.widths
    if any(w % 32 for w in widths):
        raise PriorLoadError(f"{source}: num_channels x channel_mult gives widths {widths}; ADM's GroupNorm needs "
                             "multiples of 32")
    head_dim, attn = _head_dim(config, source), config.attention
    down = "ResnetDownsampleBlock2D" if config.resblock_updown else "DownBlock2D"
    up = "ResnetUpsampleBlock2D" if config.resblock_updown else "UpBlock2D"
    sampler = "resnet" if config.resblock_updown else "conv"
    return {
        "sample_size": config.image_size, "in_channels": 3, "out_channels": 6 if config.learn_sigma else 3,
        "time_embedding_type": "positional", "flip_sin_to_cos": True, "freq_shift": 0,  # ADM embeds [cos, sin]
        "down_block_types": ["AttnDownBlock2D" if a else down for a in attn],
        "up_block_types": ["AttnUpBlock2D" if a else up for a in reversed(attn)],
        "block_out_channels": widths, "layers_per_block": config.num_res_blocks,
        "downsample_type": sampler, "upsample_type": sampler, "downsample_padding": 1,
        "dropout": config.dropout, "act_fn": "silu", "attention_head_dim": head_dim,
        "norm_num_groups": 32, "norm_eps": 1e-5, "add_attention": True,
        "attn_norm_num_groups": 32,  # ADM's mid-block attention has a GroupNorm; diffusers drops it otherwise
        "resnet_time_scale_shift": "scale_shift" if config.use_scale_shift_norm else "default",
    }


def _blocks(config: AdmConfig) -> list[tuple[str, str, Kind]]:
    """(ADM prefix, diffusers prefix, kind) for every layer group, walking ADM's levels down and back up."""
    sampler: tuple[Kind, Kind] = ("resnet", "resnet") if config.resblock_updown else ("down", "up")
    pairs: list[tuple[str, str, Kind]] = [("time_embed.0", "time_embedding.linear_1", "plain"),
                                          ("time_embed.2", "time_embedding.linear_2", "plain"),
                                          ("input_blocks.0.0", "conv_in", "plain")]
    k, last = 1, len(config.attention) - 1
    for lv, attends in enumerate(config.attention):
        for j in range(config.num_res_blocks):  # input_blocks[k] = (ResBlock, AttentionBlock?)
            pairs.append((f"input_blocks.{k}.0", f"down_blocks.{lv}.resnets.{j}", "resnet"))
            if attends:
                pairs.append((f"input_blocks.{k}.1", f"down_blocks.{lv}.attentions.{j}", "attention"))
            k += 1
        if lv < last:  # then one block holding only the downsampler
            pairs.append((f"input_blocks.{k}.0", f"down_blocks.{lv}.downsamplers.0", sampler[0]))
            k += 1
    pairs += [("middle_block.0", "mid_block.resnets.0", "resnet"), ("middle_block.1", "mid_block.attentions.0", "attention"),
              ("middle_block.2", "mid_block.resnets.1", "resnet")]
    k = 0
    for u, lv in enumerate(range(last, -1, -1)):
        attends = config.attention[lv]
        for i in range(config.num_res_blocks + 1):  # output_blocks[k] = (ResBlock, AttentionBlock?, upsampler?)
            pairs.append((f"output_blocks.{k}.0", f"up_blocks.{u}.resnets.{i}", "resnet"))
            if attends:
                pairs.append((f"output_blocks.{k}.1", f"up_blocks.{u}.attentions.{i}", "attention"))
            if lv and i == config.num_res_blocks:
                pairs.append((f"output_blocks.{k}.{1 + attends}", f"up_blocks.{u}.upsamplers.0", sampler[1]))
            k += 1
    return [*pairs, ("out.0", "conv_norm_out", "plain"), ("out.2", "conv_out", "plain")]


def key_map(config: AdmConfig, target: dict[str, torch.Size]) -> dict[str, tuple[str, Kind, tuple[int, ...]]]:
    """ADM key -> (diffusers key, kind, expected ADM shape), for the layers the diffusers model actually has."""
    keys: dict[str, tuple[str, Kind, tuple[int, ...]]] = {}
    for adm, diff, kind in _blocks(config):
        for adm_sub, diff_sub in SUBMODULES[kind].items():
            for param in ("weight", "bias"):
                d_key = ".".join(p for p in (diff, diff_sub, param) if p)
                if d_key not in target:
                    continue  # e.g. no conv_shortcut where a resnet keeps its width
                shape = tuple(target[d_key])
                if adm_sub in ("qkv", "proj_out"):  # conv1d weights (C', C, 1); qkv stacks q, k, v rows
                    rows = 3 * shape[0] if adm_sub == "qkv" else shape[0]
                    shape = (rows, *shape[1:], 1) if param == "weight" else (rows,)
                keys[".".join(p for p in (adm, adm_sub, param) if p)] = (d_key, kind, shape)
    return keys


def target_shapes(diffusers_config: dict[str, Any]) -> dict[str, torch.Size]:
    from diffusers.models.unets.unet_2d import UNet2DModel

    with torch.device("meta"):
        return {k: v.shape for k, v in UNet2DModel.from_config(diffusers_config).state_dict().items()}


def _split_qkv(tensor: Tensor, heads: int, legacy: bool) -> tuple[Tensor, Tensor, Tensor]:
    """QKVAttentionLegacy (every official checkpoint) lays the 3C rows out as (heads, 3, head_dim): a plain
    chunk(3) would mix heads. The new order is (3, heads, head_dim)."""
    rest = tensor.shape[1:]
    d = tensor.shape[0] // (3 * heads)
    grouped = tensor.reshape(heads, 3, d, *rest).transpose(0, 1) if legacy else tensor.reshape(3, heads, d, *rest)
    q, k, v = (grouped[i].reshape(heads * d, *rest) for i in range(3))
    return q, k, v


def convert_adm_state_dict(state: dict[str, Tensor], config: AdmConfig) -> dict[str, Tensor]:
    """Rename (and reshape) a checked ADM state dict into `UNet2DModel` keys, in fp32."""
    diffusers_config = adm_to_diffusers(config)
    head_dim = diffusers_config["attention_head_dim"]
    out: dict[str, Tensor] = {}
    for adm_key, (d_key, kind, _) in key_map(config, target_shapes(diffusers_config)).items():
        value = state[adm_key].float()
        if kind == "attention" and ".qkv." in adm_key:
            value = value.squeeze(-1)
            heads = value.shape[0] // 3 // head_dim
            for name, part in zip(("to_q", "to_k", "to_v"), _split_qkv(value, heads, not config.use_new_attention_order)):
                out[d_key.replace("to_q", name)] = part.contiguous()
        else:
            out[d_key] = value.squeeze(-1) if ".proj_out.weight" in adm_key else value
    return out
