"""Blur kernels and resampling matrices, built once per operator on the CPU in float64."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def gaussian_kernel(size: int, sigma: float) -> Tensor:
    """Isotropic Gaussian on a size x size grid centred on the middle pixel, summing to 1."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    kernel = torch.outer(g, g)
    return kernel / kernel.sum()


def motion_kernel(size: int, intensity: float, generator: torch.Generator) -> Tensor:
    """A random camera-shake kernel: a smooth random walk rasterised onto the grid, summing to 1.

    Modelled on the trajectories of LeviBorodenko/motionblur used by DPS (re-implemented, not bit-identical):
    `intensity` in [0, 1] sets how much the direction wanders and how long the path is.
    """
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"motion blur intensity must be in [0, 1], got {intensity}")
    n_points = 4 * size
    angle = 2 * math.pi * torch.rand((), generator=generator, dtype=torch.float64)
    turns = torch.randn(n_points, generator=generator, dtype=torch.float64) * (0.1 + 0.9 * intensity)
    angles = angle + torch.cumsum(turns, 0) * 0.5
    steps = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    path = torch.cumsum(steps, 0)
    path = path - path.mean(0)
    extent = path.abs().max().clamp_min(1e-6)
    path = path / extent * (size - 1) / 2.0 * (0.25 + 0.75 * intensity) + (size - 1) / 2.0
    kernel = torch.zeros(size, size, dtype=torch.float64)
    # bilinear splatting of every path point
    r0, c0 = path[:, 1].floor(), path[:, 0].floor()
    fr, fc = path[:, 1] - r0, path[:, 0] - c0
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        r = (r0 + dr).long().clamp(0, size - 1)
        c = (c0 + dc).long().clamp(0, size - 1)
        kernel.index_put_((r, c), w, accumulate=True)
    return kernel / kernel.sum()


def _cubic(x: Tensor) -> Tensor:
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


def bicubic_matrix(in_size: int, out_size: int) -> Tensor:
    """(out, in) matrix of MATLAB-style antialiased bicubic resizing with mirrored borders.

    The same contributions as the resizer of DPS/DMPlug (Shocher's `resizer.py`), written as a matrix so the
    operator's adjoint is its transpose.
    """
    scale = out_size / in_size
    antialias = scale < 1
    width = 4.0 / scale if antialias else 4.0
    out_coords = torch.arange(1, out_size + 1, dtype=torch.float64)
    shifted = out_coords - (out_size - in_size * scale) / 2
    match = shifted / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(match - width / 2)
    taps = int(math.ceil(width)) + 2
    field = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :] - 1
    distance = match[:, None] - field - 1
    weights = scale * _cubic(scale * distance) if antialias else _cubic(distance)
    sums = weights.sum(1, keepdim=True)
    weights = weights / torch.where(sums == 0, torch.ones_like(sums), sums)
    mirror = torch.cat([torch.arange(in_size), torch.arange(in_size - 1, -1, -1)])
    columns = mirror[torch.remainder(field.long(), mirror.numel())]
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)[:, None].expand_as(columns)
    matrix.index_put_((rows, columns), weights, accumulate=True)
    return matrix
