"""Small-run benchmark: where the wall time of `priorflow restore` on 8 images goes, as a user runs it (a fresh
process, a temporary Prefect server, a local Dask cluster of 2 workers), for one or two versions of priorflow.

    python benchmarks/small_run.py run --label after                          # this checkout
    python benchmarks/small_run.py run --label before --source /tmp/base      # another checkout (git worktree)
    python benchmarks/small_run.py report                                     # -> RESULTS.md, section small-run

Runs of the labels are interleaved (before, after, before, ...) so that a busy machine slows them alike.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import typer
from results import write_section

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
app = typer.Typer(add_completion=False)
STAMP = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+ +\| (.*)$")
PHASES = {  # the first log line matching each, in the run's own logs
    "server up": r"Beginning flow run .* for flow 'restore'",
    "shards planned": r"samples to solve",
    "first shard solved": r"Task run 'solve-shard.*Finished in state Completed",
    "all shards solved": r"Beginning subflow run|solve-shards.*Finished in state Completed|Finished in state Completed\(\)$",
}


def one_run(source: Path, samples: int) -> dict:
    """One `priorflow restore` of `samples` digits (SR x4, MPGD 50 steps) into a new folder; wall time and phases."""
    work = Path(tempfile.mkdtemp(prefix="priorflow-small-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PYTHONPATH": str(source)}
    env.pop("PREFECT_API_URL", None)
    subprocess.run([sys.executable, "-c", f"from priorflow.datasets import write_digits_array; "
                    f"write_digits_array({str(work / 'in.zarr')!r}, 'test', {samples})"], env=env, check=True)
    command = [sys.executable, "-m", "priorflow.cli", "restore", str(work / "in.zarr"), str(work / "out.zarr"),
               "--mode", "benchmark", "--operator", "super_resolution", "-o", "factor=4", "--noise", "gaussian",
               "-n", "sigma=0.05", "--solver", "mpgd", "-s", "scale=4", "--workers", "2"]
    started = time.time()
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    wall = time.time() - started
    if run.returncode != 0:
        raise SystemExit(f"run failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
    logs = [(m.group(1), m.group(2)) for line in (run.stdout + run.stderr).splitlines() if (m := STAMP.match(line))]
    day = datetime.fromtimestamp(started).date()

    def seconds(stamp: str) -> float:
        return datetime.combine(day, datetime.strptime(stamp, "%H:%M:%S.%f").time()).timestamp() - started

    phases = {"process start": 0.0}
    for name, pattern in PHASES.items():
        hits = [seconds(t) for t, message in logs if re.search(pattern, message)]
        if hits:
            phases[name] = round(min(hits) if name != "all shards solved" else max(hits), 2)
    solve = re.search(r"solve ([\d.]+) s", run.stdout + run.stderr)
    summary = json.loads(next(work.glob("out*summary.json"), work / "out.zarr" / "summary.json").read_text())
    return {"wall_s": round(wall, 2), "phases": phases, "solver_s": round(summary["seconds"]["total"], 2),
            "first_shard_solve_s": float(solve.group(1)) if solve else None}


@app.command()
def run(label: str = "after", source: Path = ROOT, samples: int = 8, repeats: int = 3) -> None:
    """Time `repeats` runs of `source`'s priorflow; results in out/small_run_LABEL.json."""
    OUT.mkdir(parents=True, exist_ok=True)
    runs = [one_run(source, samples) for _ in range(repeats)]
    (OUT / f"small_run_{label}.json").write_text(json.dumps({"label": label, "samples": samples, "source": str(source),
                                                             "runs": runs}, indent=1))
    print(json.dumps(runs, indent=1))


@app.command()
def compare(before: Path, samples: int = 8, repeats: int = 3) -> None:
    """Interleave runs of `before` (another checkout) and this checkout; out/small_run_{before,after}.json."""
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(repeats):
        for label, source in (("before", before), ("after", ROOT)):
            results[label].append(one_run(source, samples))
            print(label, results[label][-1], flush=True)
    for label, runs in results.items():
        source = before if label == "before" else ROOT
        (OUT / f"small_run_{label}.json").write_text(json.dumps({"label": label, "samples": samples,
                                                                 "source": str(source), "runs": runs}, indent=1))


@app.command()
def report(note: str = "") -> None:
    """Write the small-run section of RESULTS.md from out/small_run_before.json and out/small_run_after.json."""
    rows = ["| version | wall time per run (s) | solver time (s) | server up at (s) | first shard solved at (s) |",
            "|---|---|---|---|---|"]
    samples = None
    for label in ("before", "after"):
        path = OUT / f"small_run_{label}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        samples = data["samples"]
        runs = data["runs"]
        walls = sorted(r["wall_s"] for r in runs)

        def spread(values: list[float]) -> str:
            values = sorted(v for v in values if v is not None)
            return f"{values[len(values) // 2]:.1f} ({values[0]:.1f}-{values[-1]:.1f})" if values else "n/a"

        rows.append(f"| {label} | {spread(walls)} | {spread([r['solver_s'] for r in runs])} | "
                    f"{spread([r['phases'].get('server up') for r in runs])} | "
                    f"{spread([r['phases'].get('first shard solved') for r in runs])} |")
    section = (f"## Small runs: set-up time\n\n`python benchmarks/small_run.py compare /tmp/base` then `report`: "
               f"`priorflow restore` of {samples} digits (SR x4, MPGD 50 steps, 2 local workers, temporary Prefect "
               "server), a fresh process each, as a user runs it. Median (min-max) of the runs; 'before' is the "
               f"checkout named in the command, 'after' this one, runs interleaved.\n\n" + "\n".join(rows)
               + (f"\n\n{note}" if note else ""))
    write_section("small-run", section)


if __name__ == "__main__":
    app()
