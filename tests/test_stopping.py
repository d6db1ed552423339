"""ES-WMV and the discrepancy principle on constructed sequences."""

import torch

from priorflow.solvers.algorithms.stopping import ESWMV, Discrepancy, WindowedVarianceTracker


def run(tracker, frames, residuals=None):
    """Feed frames (T, B, ...) to a tracker; return the iteration at which each sample stopped (-1: never)."""
    stopped = torch.full((frames.shape[1],), -1)
    for t, x in enumerate(frames):
        valid = torch.ones(x.shape[0], dtype=torch.bool)
        residual = residuals[t] if residuals is not None else torch.zeros(x.shape[0])
        stop = tracker.update(t, x, {"z": x * 2}, residual, valid)
        stopped = torch.where(stop & (stopped < 0), torch.full_like(stopped, t), stopped)
    return stopped


def wiggle_sequence(amplitude_per_step):
    """Frames whose fluctuation amplitude follows the given profile: variance is lowest where it is smallest."""
    g = torch.Generator().manual_seed(0)
    amp = torch.tensor(amplitude_per_step, dtype=torch.float32)
    return (0.5 + amp[:, None, None] * torch.randn(len(amp), 1, 4096, generator=g)).unsqueeze(1).squeeze(2)


def test_running_variance_equals_brute_force():
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(40, 3, 1, 4, 4, generator=g)
    tracker = WindowedVarianceTracker(window=7, patience=1000)
    for t, x in enumerate(frames):
        v = tracker.variance_update(x)
        if t < 6:
            assert v is None
            continue
        w = frames[t - 6 : t + 1].double().flatten(2)
        brute = ((w - w.mean(0)) ** 2).mean(0).mean(1)
        assert torch.allclose(v, brute, atol=1e-12)


def test_stops_patience_after_the_variance_minimum_and_returns_that_iterate():
    profile = [1.0 - 0.9 * t / 60 for t in range(60)] + [0.1 + 0.9 * t / 60 for t in range(60)]
    frames = wiggle_sequence(profile)
    tracker = ESWMV(window=5, patience=20).tracker()
    stopped = run(tracker, frames)
    best = int(tracker.best_iteration[0])
    assert 55 <= best <= 70, best
    assert stopped[0] == best + 20
    assert torch.equal(tracker.best_x[0], frames[best][0])
    assert torch.equal(tracker.best_state["z"][0], frames[best][0] * 2)


def test_samples_stop_independently():
    early = [1.0 - 0.9 * t / 20 for t in range(20)] + [0.1 + t / 10 for t in range(80)]
    late = [1.0 - 0.9 * t / 70 for t in range(70)] + [0.1 + t / 10 for t in range(30)]
    frames = torch.cat([wiggle_sequence(early), wiggle_sequence(late)], 1)
    stopped = run(ESWMV(window=5, patience=10).tracker(), frames)
    alone = run(ESWMV(window=5, patience=10).tracker(), frames[:, 1:])
    assert stopped[0] < stopped[1]
    assert stopped[1] == alone[0]


def test_monotone_convergence_never_fires():
    """With a shrinking step the variance keeps falling: ES-WMV must not stop; the iteration cap does."""
    v = torch.randn(1, 1, 16, generator=torch.Generator().manual_seed(3))
    frames = torch.stack([0.5 + 0.95**t * v for t in range(100)])
    assert run(ESWMV(window=5, patience=10).tracker(), frames)[0] == -1


def test_take_keeps_the_rows_state():
    frames = torch.rand(30, 3, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    full = WindowedVarianceTracker(5, 100)
    sub = WindowedVarianceTracker(5, 100)
    for t, x in enumerate(frames):
        if t == 10:
            full.take(torch.tensor([0, 2]))
        v_full = full.variance_update(x if t < 10 else x[[0, 2]])
        v_sub = sub.variance_update(x[[0, 2]])
        if v_full is not None:
            v_full = v_full if t >= 10 else v_full[[0, 2]]
            assert torch.allclose(v_full, v_sub, atol=1e-12)


def test_discrepancy_stops_at_the_noise_level():
    residuals = torch.tensor([[0.1 / (t + 1), 0.2 / (t + 1)] for t in range(50)])
    frames = torch.rand(50, 2, 1, 2, 2)
    stopped = run(Discrepancy(sigma=0.1, tau=1.0).tracker(), frames, residuals)
    # residual <= 0.01 from t = 9 (first sample) and t = 19 (second)
    assert stopped.tolist() == [9, 19]
