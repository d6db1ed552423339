import pytest
import torch
import torchvision
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from priorflow.solvers import metrics


def test_psnr_and_ssim_match_scikit_image():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 3, 16, 16, generator=g)
    x = (ref + 0.05 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    for i in range(2):
        a, b = x[i].double().numpy(), ref[i].double().numpy()
        assert metrics.psnr(x, ref)[i] == pytest.approx(peak_signal_noise_ratio(b, a, data_range=1.0))
        assert metrics.ssim(x, ref)[i] == pytest.approx(structural_similarity(a, b, channel_axis=0, data_range=1.0))


def test_lpips_unavailable_names_the_file(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(metrics, "_LPIPS", {})
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(metrics.LPIPSUnavailable, match=f"{tmp_path}/checkpoints/alexnet-owt-7be5be79.pth"):
        metrics.lpips_distance(x, x)
    assert metrics.image_metrics(x, x)["lpips"] is None
    with pytest.raises(metrics.LPIPSUnavailable, match="at least 32 px"):
        metrics.lpips_distance(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))


def test_lpips_loads_backbone_weights_from_the_hub_cache(tmp_path, monkeypatch):
    """The real loading path, on an AlexNet weights file this test writes (random values: wiring only)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "checkpoints" / metrics.ALEXNET_WEIGHTS)
    monkeypatch.setattr(metrics, "_LPIPS", {})  # a network of the random weights, dropped after the test
    x, y = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    d = metrics.lpips_distance(x, y)
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(metrics.lpips_distance(x, x), torch.zeros(2, dtype=torch.float64), atol=1e-6)
