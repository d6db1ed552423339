"""Kill trials at full size: tests/test_kill_trials.py with 10 trials per kind, its figures into RESULTS.md.

    python benchmarks/kill_trials.py run [--trials 10]   # -> out/kill_trials.json, then the report
    python benchmarks/kill_trials.py report              # -> the kill-trials section of RESULTS.md
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import typer
from results import write_section

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
REPORT = OUT / "kill_trials.json"
app = typer.Typer(add_completion=False)


@app.command()
def run(trials: int = 10) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    report = REPORT
    env = {**os.environ, "PRIORFLOW_KILL_TRIALS": str(trials), "PRIORFLOW_KILL_REPORT": str(report),
           "OMP_NUM_THREADS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    started = time.time()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_kill_trials.py"],
                           cwd=ROOT, env=env)
    if tests.returncode != 0:
        raise SystemExit("the kill trials failed; see the output above")
    data = json.loads(report.read_text())
    data["wall_s"] = round(time.time() - started)
    report.write_text(json.dumps(data, indent=1))
    write_report()


@app.command("report")
def write_report() -> None:
    data = json.loads(REPORT.read_text())
    trials = data["trials_per_kind"]
    rows = ["| killed | trials | hit during the run | killed run still finished | reruns completed | identical to the clean run | rerun time (s) |",
            "|---|---|---|---|---|---|---|"]
    for kind, figures in data["figures"].items():
        hit = sum(f["hit"] == kind for f in figures)
        survived = sum(f["killed_run_exit"] == 0 for f in figures)
        times = sorted(f["rerun_s"] for f in figures)
        rows.append(f"| {'main process' if kind == 'main' else 'a Dask worker'} | {len(figures)} | {hit} | {survived} | "
                    f"{len(figures)} | {sum(f['identical'] for f in figures)} | {times[len(times) // 2]:.1f} "
                    f"({times[0]:.1f}-{times[-1]:.1f}) |")
    delays = {kind: ", ".join(f"{f['delay_s']:.1f}" for f in figures) for kind, figures in data["figures"].items()}
    section = (
        "## Kill trials\n\n"
        f"`python benchmarks/kill_trials.py run --trials {trials}` (runs `tests/test_kill_trials.py` with "
        f"PRIORFLOW_KILL_TRIALS={trials}; {data.get('wall_s', 0):.0f} s in all): 6 held-out digits, inpainting, DMPlug 40 "
        "iterations, 3 shards on 2 local workers, through the CLI as separate processes against one Prefect server. "
        f"Each trial SIGKILLs the main process, or a random Dask worker, at a moment drawn uniformly (seed "
        f"{data['seed']}) over the {data['clean_run_s']:.0f} s of a clean run, then reruns the same command with no "
        "manual step (lease ttl 3 s) and compares every output array with the clean run's, bit for bit. A worker "
        "killed before the cluster was up is killed as soon as it exists.\n\n" + "\n".join(rows) +
        f"\n\nKill moments (s): main {delays['main']}; worker {delays['worker']}. A killed worker is restarted by its "
        "nanny and its shard retried, so most such runs finish by themselves; the rerun then has nothing to solve."
    )
    write_section("kill-trials", section)


if __name__ == "__main__":
    app()
