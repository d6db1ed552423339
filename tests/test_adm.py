"""guided-diffusion (ADM) checkpoints: parity with deepinv's independent ADM port, strict checks, convert-prior.

deepinv's `DiffUNet` keeps the official guided-diffusion key layout (it loads ffhq_10m.pt with strict=True), so its
random-weight state dicts stand in for the real checkpoints, which are never downloaded here.
"""

from __future__ import annotations

import inspect
import json
import pickle
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from priorflow.cli import app
from priorflow.errors import PriorLoadError
from priorflow.solvers.priors.adm import adm_to_diffusers, read_adm_config
from priorflow.solvers.priors.checkpoints import load_adm_checkpoint

du = pytest.importorskip("deepinv.models.diffunet")
runner = CliRunner()

FFHQ_YAML = """\
image_size: 256
num_channels: 128
num_res_blocks: 1
channel_mult: ""
learn_sigma: True
class_cond: False
use_checkpoint: False
attention_resolutions: 16
num_heads: 4
num_head_channels: 64
num_heads_upsample: -1
use_scale_shift_norm: True
dropout: 0.0
resblock_updown: True
use_fp16: False
use_new_attention_order: False

model_path: models/ffhq_10m.pt
"""


def _randomise(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """ADM zero-initialises each block's last conv and proj_out, and its norms start as identities: give them
    random values so that every weight reaches the output and a misplaced one shows."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)) and not module.weight.any():
                module.reset_parameters()
            elif isinstance(module, torch.nn.GroupNorm):
                module.weight.copy_(1 + 0.1 * torch.randn_like(module.weight))
                module.bias.copy_(0.1 * torch.randn_like(module.bias))
    return net.eval()


def _official_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """DiffUNet adds two schedule buffers after loading weights; the official checkpoints do not have them."""
    return {k: v for k, v in net.state_dict().items() if "alphas_cumprod" not in k}


def _adm_eps(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The raw ADM forward (timestep in, 2C channels out); DiffUNet.forward would pad and treat t as a noise level."""
    with torch.no_grad():
        return net.forward_diffusion(x, t)


@pytest.fixture(scope="module")
def ffhq(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("ffhq")
    torch.manual_seed(0)
    net = _randomise(du.DiffUNet(in_channels=3, out_channels=3, large_model=False, pretrained=None), seed=0)
    torch.save(_official_state(net), folder / "ffhq_10m.pt")
    (folder / "model_config.yaml").write_text(FFHQ_YAML)
    return folder / "ffhq_10m.pt", net


def _inputs(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, size, size, generator=generator), torch.tensor([17, 803])


@pytest.fixture(scope="module")
def ffhq_loaded(ffhq):
    return load_adm_checkpoint(ffhq[0])


def test_ffhq_layout_matches_deepinv(ffhq, ffhq_loaded):
    _, reference = ffhq
    network, metadata = ffhq_loaded
    x, t = _inputs(64)
    expected = _adm_eps(reference, x, t)
    with torch.no_grad():
        got = network(x, t).sample
    assert got.shape == expected.shape == (2, 6, 64, 64)
    assert expected.abs().max() > 0.5  # not trivially zero
    assert (got - expected).abs().max() < 1e-5
    assert metadata["hyperparameters"]["num_head_channels"] == 64 and len(metadata["sha256"]) == 64
    assert not network.training and all(p.dtype == torch.float32 for p in network.parameters())


def _configurable_diffunet(overrides: dict) -> type:
    """DiffUNet fixes its hyper-parameters in __init__; re-run that very constructor with other values (pinned
    deepinv 0.5.0), so small configurations get a reference built by guided-diffusion's own layout code."""
    source = textwrap.dedent(inspect.getsource(du.DiffUNet.__init__))
    anchor = "    img_size = 256\n"
    assert source.count(anchor) == 1 and source.count("super().__init__()") == 1, "deepinv's DiffUNet changed"
    extra = "".join(f"    {name} = {value!r}\n" for name, value in overrides.items())
    source = source.replace(anchor, anchor + extra).replace("super().__init__()", "du.Denoiser.__init__(self)")
    namespace = {**vars(du), "du": du}
    exec(compile(source, "<configurable DiffUNet>", "exec"), namespace)  # noqa: S102 - deepinv's own code, re-run
    return type("ConfigurableDiffUNet", (du.DiffUNet,), {"__init__": namespace["__init__"]})


SMALL = {
    "legacy, resblock up/down, two blocks": {
        "image_size": 16, "num_channels": 64, "channel_mult": "1,2", "num_res_blocks": 2,
        "attention_resolutions": "8", "num_heads": 4, "num_head_channels": 32, "learn_sigma": True,
        "use_scale_shift_norm": True, "resblock_updown": True},
    "new order, conv up/down, no scale-shift, heads by count": {
        "image_size": 16, "num_channels": 64, "channel_mult": "1,2", "num_res_blocks": 1,
        "attention_resolutions": "8", "num_heads": 2, "num_head_channels": -1, "learn_sigma": False,
        "use_scale_shift_norm": False, "resblock_updown": False, "use_new_attention_order": True},
    "attention at every level": {
        "image_size": 16, "num_channels": 32, "channel_mult": "1,2,2", "num_res_blocks": 1,
        "attention_resolutions": "16,8,4", "num_heads": 1, "num_head_channels": 32, "learn_sigma": True,
        "use_scale_shift_norm": True, "resblock_updown": True},
}


def _small_checkpoint(folder: Path, name: str) -> tuple[Path, torch.nn.Module]:
    """A SMALL configuration as deepinv builds it, saved in the official format with its hyper-parameters as JSON."""
    adm = SMALL[name]
    overrides = {
        "img_size": adm["image_size"], "model_channels": adm["num_channels"],
        "channel_mult": tuple(int(m) for m in adm["channel_mult"].split(",")),
        "num_res_blocks": adm["num_res_blocks"], "attention_resolutions": adm["attention_resolutions"],
        "num_heads": adm["num_heads"], "num_head_channels": adm["num_head_channels"],
        "use_scale_shift_norm": adm["use_scale_shift_norm"], "resblock_updown": adm["resblock_updown"],
        "use_new_attention_order": adm.get("use_new_attention_order", False), "dropout": 0.0,
        "out_channels": 6 if adm["learn_sigma"] else 3,
    }
    torch.manual_seed(0)
    reference = _randomise(_configurable_diffunet(overrides)(pretrained=None), seed=3)
    torch.save(_official_state(reference), folder / "small.pt")
    (folder / "small.json").write_text(json.dumps(adm))
    return folder / "small.pt", reference


@pytest.mark.parametrize("name", list(SMALL))
def test_small_configs_match_deepinv(tmp_path, name):
    weights, reference = _small_checkpoint(tmp_path, name)
    network, _ = load_adm_checkpoint(weights)
    x, t = _inputs(SMALL[name]["image_size"])
    expected = _adm_eps(reference, x, t)
    with torch.no_grad():
        got = network(x, t).sample
    assert got.shape == expected.shape and expected.abs().max() > 0.5
    assert (got - expected).abs().max() < 1e-5


def test_wrong_attention_order_is_caught_by_parity(tmp_path):
    """The legacy qkv layout matters: reading legacy weights (4 heads) in the new order changes the output."""
    name = "legacy, resblock up/down, two blocks"
    weights, reference = _small_checkpoint(tmp_path, name)
    (tmp_path / "new_order.json").write_text(json.dumps({**SMALL[name], "use_new_attention_order": True}))
    network, _ = load_adm_checkpoint(weights, tmp_path / "new_order.json")
    x, t = _inputs(16)
    with torch.no_grad():
        assert (network(x, t).sample - _adm_eps(reference, x, t)).abs().max() > 1e-2


def test_reads_the_official_yaml_and_rejects_what_diffusers_cannot_express(tmp_path):
    path = tmp_path / "model_config.yaml"
    path.write_text(FFHQ_YAML)
    config = read_adm_config(path)
    assert config.channel_mult == (1, 1, 2, 2, 4, 4) and config.attention_resolutions == (16,)
    diffusers = adm_to_diffusers(config)
    assert diffusers["down_block_types"][4] == "AttnDownBlock2D" and diffusers["out_channels"] == 6
    assert diffusers["attention_head_dim"] == 64 and diffusers["attn_norm_num_groups"] == 32

    for before, after, named in [
        ("class_cond: False", "class_cond: True", "class_cond: Value error, class-conditional"),
        ("use_fp16: False", "use_fp16: False\nnum_head_channel: 64", "num_head_channel: Extra inputs"),
        ("image_size: 256", "image_size: 100", "channel_mult: Value error, no default for image_size 100"),
        ("image_size: 256", "image_size: 512", "channel_mult must start with 1"),
        ("num_head_channels: 64", "num_head_channels: 48", "num_head_channels 48 does not divide"),
        ("num_heads_upsample: -1", "num_heads_upsample: 0", "num_heads_upsample: Value error"),
        ("num_head_channels: 64\n", "num_head_channels: -1\n", None),  # 4 heads of 128 everywhere: expressible
        ("attention_resolutions: 16", "attention_resolutions: 32,16,8\nnum_head_channels: -1", "num_heads 4"),
    ]:
        text = FFHQ_YAML.replace(before, after)
        if "attention_resolutions: 32" in text:
            text = text.replace("num_head_channels: 64\n", "")
        path.write_text(text)
        if named is None:
            assert read_adm_config(path).num_head_channels == -1
            continue
        with pytest.raises(PriorLoadError) as err:
            read_adm_config(path)
        assert named in str(err.value), str(err.value)
    path.write_text("- a list\n- not a mapping\n")
    with pytest.raises(PriorLoadError, match="mapping"):
        read_adm_config(path)


def test_missing_hyperparameters_are_named(tmp_path, ffhq):
    weights, _ = ffhq
    lonely = tmp_path / "lonely.pt"
    lonely.symlink_to(weights)
    with pytest.raises(PriorLoadError, match="hyper-parameters.*lonely.yaml, model_config.yaml, lonely.json"):
        load_adm_checkpoint(lonely)


def test_mismatched_hyperparameters_name_the_first_keys(tmp_path, ffhq):
    weights, _ = ffhq
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(FFHQ_YAML.replace("num_res_blocks: 1", "num_res_blocks: 2"))
    with pytest.raises(PriorLoadError) as err:
        load_adm_checkpoint(weights, wrong)
    message = str(err.value)
    assert "does not match the hyper-parameters" in message and "missing" in message and "input_blocks." in message
    wrong.write_text(FFHQ_YAML.replace("use_scale_shift_norm: True", "use_scale_shift_norm: False"))
    with pytest.raises(PriorLoadError, match=r"wrong shape \(\d+\): input_blocks\.1\.0\.emb_layers\.1\.weight \(256, 512\) \(expected \(128, 512\)\)"):
        load_adm_checkpoint(weights, wrong)


class Gadget:
    """Not a tensor: weights_only refuses to unpickle it."""


def test_files_that_are_not_state_dicts(tmp_path):
    (tmp_path / "model_config.yaml").write_text(FFHQ_YAML)
    noise = torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    bad = {
        "list.pt": lambda p: torch.save([1, 2, 3], p),
        "random.pt": lambda p: p.write_bytes(noise.numpy().tobytes()),
        "empty.pt": lambda p: p.write_bytes(b""),
        "pickle.pt": lambda p: p.write_bytes(pickle.dumps({"w": Gadget()})),
        "object.pt": lambda p: torch.save({"w": Gadget()}, p),
        "two.pt": lambda p: torch.save({"model": {"w": torch.zeros(1)}, "ema": {"w": torch.zeros(1)}}, p),
        "other.pt": lambda p: torch.save({"weights": {"w": torch.zeros(1)}}, p),
    }
    for name, write in bad.items():
        write(tmp_path / name)
        with pytest.raises(PriorLoadError, match="not a state dict") as err:
            load_adm_checkpoint(tmp_path / name)
        assert "weights_only=False" not in str(err.value)


def test_a_wrapped_state_dict_is_accepted(tmp_path):
    weights, reference = _small_checkpoint(tmp_path, "attention at every level")
    torch.save({"state_dict": _official_state(reference), "step": 10}, weights)
    network, _ = load_adm_checkpoint(weights)
    x, t = _inputs(16)
    with torch.no_grad():
        assert (network(x, t).sample - _adm_eps(reference, x, t)).abs().max() < 1e-5


def test_convert_prior_round_trip(tmp_path, ffhq, ffhq_loaded):
    from priorflow.solvers import load_prior

    weights, reference = ffhq
    network, _ = ffhq_loaded
    out = tmp_path / "converted"
    result = runner.invoke(app, ["convert-prior", str(weights), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors", "priorflow.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    metadata = json.loads((out / "priorflow.json").read_text())
    assert metadata["name"] == "ffhq_10m" and metadata["source"]["file"] == "ffhq_10m.pt"
    assert len(metadata["source"]["sha256"]) == 64 and metadata["hyperparameters"]["num_channels"] == 128
    assert "ADM" in metadata["format"]

    prior = load_prior(out, device="cpu")
    x, _ = _inputs(32)
    with torch.no_grad():
        direct = network(x, torch.full((2,), 500)).sample[:, :3]
        assert (prior.eps(x, 500) - direct).abs().max() < 1e-6
        assert (direct - _adm_eps(reference, x, torch.full((2,), 500))[:, :3]).abs().max() < 1e-5


def test_convert_prior_refuses_bad_input_and_writes_nothing(tmp_path, ffhq):
    weights, _ = ffhq
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "precious.txt").write_text("user data")
    result = runner.invoke(app, ["convert-prior", str(weights), "--out", str(occupied)])
    assert result.exit_code == 2 and "not an empty folder" in result.output
    assert [p.name for p in occupied.iterdir()] == ["precious.txt"]

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(FFHQ_YAML.replace("num_channels: 128", "num_channels: 64"))
    for args, message in [
        ([str(tmp_path / "junk.pt"), "--config", str(weights.parent / "model_config.yaml")], "not a state dict"),
        ([str(weights), "--config", str(wrong)], "does not match the hyper-parameters"),
        ([str(tmp_path / "absent.pt")], "does not exist"),
    ]:
        result = runner.invoke(app, ["convert-prior", *args, "--out", str(tmp_path / "new")])
        assert result.exit_code == 2 and message in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pt", "occupied", "wrong.yaml"]


def test_convert_prior_help():
    result = runner.invoke(app, ["convert-prior", "--help"])
    assert result.exit_code == 0 and "ADM" in result.output


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    from priorflow.solvers.priors.checkpoints import convert_checkpoint

    weights, _ = _small_checkpoint(tmp_path, "attention at every level")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(PriorLoadError, match="cannot write .*No space left"):
        convert_checkpoint(weights, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.json", "small.pt"]
