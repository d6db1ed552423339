"""Storage-fault benchmark: restore runs through a fault-injecting proxy (tests/faultproxy.py) in front of a fresh
local S3 server (Ceph radosgw, scripts/local-s3.sh).

    python benchmarks/faults.py run      # reference run, seeded transient trials, persistent outages -> out/faults.json
    python benchmarks/faults.py report   # -> the faults section of benchmarks/RESULTS.md (run does it too)

Every run restores the same S3 input into its own S3 output, on one LocalCluster shared by all runs (its workers
inherit the proxy's endpoint), under one temporary Prefect server. A transient trial faults a share of requests
(refused connections, 503 SlowDown, slow and cut answers, at most 2 failed attempts of a request in a row) and
must complete with outputs identical to the fault-free reference. A persistent trial fails every request from
some point on; it must end in a clear error, and after the outage the rerun of the same command must give the
reference's outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer
from results import write_section

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
sys.path.insert(0, str(ROOT / "tests"))
app = typer.Typer(add_completion=False)
BUCKET = "s3://priorflow-faults-bench"
LEASE_TTL = "10"  # seconds: how long the rerun after an outage waits for the dead run's lease to go stale


def outputs(url: str) -> dict[str, np.ndarray]:
    """Every array of an output group but the wall times, read without faults."""
    import zarr

    from priorflow.storage.urls import open_store

    group = zarr.open_group(store=open_store(url, read_only=True), mode="r")
    names = [name for name, _ in group.arrays()] + [f"metrics/{name}" for name, _ in group["metrics"].arrays()]
    return {name: np.asarray(group[name][...]) for name in names if name != "metrics/seconds"}


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


@app.command()
def run(samples: int = 16, shard_size: int = 4, workers: int = 2, trials: int = 10, rate: float = 0.15,
        port: int = 7495) -> None:
    """A fault-free reference, `trials` seeded transient trials, then three persistent outages and their reruns."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ["PRIORFLOW_LEASE_TTL"] = LEASE_TTL
    import s3fs
    from distributed import LocalCluster
    from faultproxy import FAILING, KINDS, FaultProxy, Schedule

    from priorflow.config import validate_config
    from priorflow.datasets import write_digits_array
    from priorflow.flows.prefect_api import prefect_api
    from priorflow.flows.restore import run_restore

    folder = Path(tempfile.mkdtemp(prefix="priorflow-faults-"))
    script = ROOT / "scripts" / "local-s3.sh"
    started = subprocess.run(["bash", str(script), "start", str(folder), str(port)], check=True, capture_output=True, text=True)
    os.environ.update(dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.split("\n") if line.startswith("export ")))
    try:
        s3fs.S3FileSystem().mkdir(BUCKET)
        fields = {
            "input": write_digits_array(f"{BUCKET}/digits.zarr", "test", samples),
            "mode": "benchmark", "operator": {"name": "super_resolution", "params": {"factor": 4}},
            "noise": {"name": "gaussian", "params": {"sigma": 0.05}}, "solver": {"name": "mpgd", "steps": 20, "scale": 4.0},
            "shard_size": shard_size, "seed": 0,
        }
        with FaultProxy(os.environ["AWS_ENDPOINT_URL"], lifetime_s=3600) as proxy:
            os.environ["AWS_ENDPOINT_URL"] = proxy.url
            s3fs.S3FileSystem.clear_instance_cache()
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, prefect_api():
                fields["cluster"] = {"address": cluster.scheduler_address}

                def restore(output: str, schedule: Schedule) -> dict[str, Any]:
                    """Run the restore to BUCKET/output under `schedule`; what happened, with the proxy's counts."""
                    proxy.schedule = schedule
                    proxy.reset_counts()
                    start = time.perf_counter()
                    try:
                        result = run_restore(validate_config(fields | {"output": f"{BUCKET}/{output}"}))
                        outcome = {"completed": True, "solved": sum(r["samples"] for r in result["shards"])}
                    except Exception as exc:  # noqa: BLE001 - what the user would see is the point
                        outcome = {"completed": False, "error": f"{type(exc).__name__}: {exc}"}
                    outcome |= {"wall_s": time.perf_counter() - start, "counts": dict(proxy.counts)}
                    proxy.schedule = Schedule()
                    if outcome["completed"] and reference:
                        outcome["identical"] = same(outputs(f"{BUCKET}/{output}"), reference)
                    print(output, json.dumps(outcome), flush=True)
                    return outcome

                reference: dict[str, np.ndarray] = {}
                ref = restore("reference.zarr", Schedule())
                reference.update(outputs(f"{BUCKET}/reference.zarr"))
                transient = [restore(f"transient-{seed}.zarr", Schedule(rate=rate, seed=seed)) | {"seed": seed}
                             for seed in range(trials)]
                persistent = []
                for label, kinds, mid_run in (
                    ("from the first request, every failing kind", FAILING, False),
                    ("mid-run (once a shard is marked done), 503 SlowDown", ("http_503",), True),
                    ("mid-run (once a shard is marked done), refused and cut", ("refuse", "cut"), True),
                ):
                    output = f"outage-{len(persistent)}.zarr"
                    done_marker = f"PUT /{BUCKET.removeprefix('s3://')}/{output}/_done/c/" if mid_run else ""
                    schedule = Schedule(persistent=True, kinds=kinds, start_after=done_marker, seed=len(persistent))
                    failed = restore(output, schedule)
                    rerun = restore(output, Schedule())
                    persistent.append({"scenario": label, "failed": failed, "rerun": rerun})
        record = {
            "samples": samples, "shard_size": shard_size, "workers": workers, "rate": rate, "kinds": list(KINDS),
            "lease_ttl_s": float(LEASE_TTL), "reference": ref, "transient": transient, "persistent": persistent,
        }
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "faults.json").write_text(json.dumps(record, indent=1))
    finally:
        subprocess.run(["bash", str(script), "stop", str(folder)], check=False)
    report()


@app.command()
def report() -> None:
    from priorflow.storage.urls import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, S3_ATTEMPTS, S3FS_TRIES

    r = json.loads((OUT / "faults.json").read_text())
    kinds, transient = r["kinds"], r["transient"]
    intro = (
        f"`python benchmarks/faults.py run --samples {r['samples']} --trials {len(transient)} --rate {r['rate']}`: the "
        f"restore flow (SR x4, MPGD 20 steps, {r['samples']} digits in shards of {r['shard_size']}, one LocalCluster of "
        f"{r['workers']} workers shared by all runs) reading and writing s3:// on a local Ceph radosgw through "
        "tests/faultproxy.py, which injects refused connections (reset, no byte answered), `503 SlowDown`, slow answers "
        "(+0.3 s) and cut answers (forwarded, then half sent). Retry budget (priorflow/storage/urls.py): botocore "
        f"standard mode, {S3_ATTEMPTS} attempts; s3fs {S3FS_TRIES} tries; aiohttp's one resend of an idempotent request "
        f"on a dropped connection; timeouts {CONNECT_TIMEOUT_S} s to connect, {READ_TIMEOUT_S} s between reads; above "
        "them, Prefect retries a failed shard twice (after 1 s and 5 s)."
    )
    lines = ["## Storage faults", "", intro, "",
             f"Fault-free reference: {r['reference']['counts']['requests']} requests, {r['reference']['wall_s']:.1f} s.", "",
             (f"**Transient faults**: each request faulted with probability {r['rate']} (kind drawn uniformly, at most 2 "
              f"failed attempts of one request in a row), seeds 0..{len(transient) - 1}."), "",
             "| seed | requests | refused | 503 | slow | cut | requests retried | completed | identical to reference | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t in transient:
        c = t["counts"]
        lines.append(f"| {t['seed']} | {c['requests']} | {c['refuse']} | {c['http_503']} | {c['slow']} | {c['cut']} "
                     f"| {c['retried']} | {yes(t['completed'])} | {yes(t.get('identical'))} | {t['wall_s']:.1f} |")
    total = {k: sum(t["counts"][k] for t in transient) for k in (*kinds, "requests", "retried")}
    lines += [
        (f"| **all** | {total['requests']} | {total['refuse']} | {total['http_503']} | {total['slow']} | {total['cut']} "
         f"| {total['retried']} | {sum(t['completed'] for t in transient)}/{len(transient)} "
         f"| {sum(bool(t.get('identical')) for t in transient)}/{len(transient)} | |"), "",
        ("\"Requests retried\" counts requests that reached the proxy again after an attempt of theirs was faulted "
         "(a slow answer is not a failure, so it is not retried)."), "",
        (f"**Persistent faults**: every request fails from some point on; then the outage ends and the same command is "
         f"run again (lease TTL {r['lease_ttl_s']:.0f} s, PRIORFLOW_LEASE_TTL: the rerun takes the failed run's lease "
         "over once it is that old)."), "",
        "| outage | faults injected | time to the error | error the user gets | clear? | rerun: completed, samples solved, identical | rerun wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in r["persistent"]:
        failed, rerun = p["failed"], p["rerun"]
        error = failed.get("error", "none: the run completed").replace("|", "\\|").replace("\n", " ")
        error = error if len(error) <= 300 else error[:300] + " ..."
        clear = any(text in error for text in ("failed after retries", "unreachable (after"))
        rerun_outcome = f"{yes(rerun['completed'])}, {rerun.get('solved', '-')} of {r['samples']}, {yes(rerun.get('identical'))}"
        lines.append(f"| {p['scenario']} | {sum(failed['counts'][k] for k in kinds)} | {failed['wall_s']:.1f} s | {error} "
                     f"| {yes(clear) if clear else '**no**'} | {rerun_outcome} | {rerun['wall_s']:.1f} |")
    lines += ["", ("\"Clear\" means the message says that the storage failed after the retry budget (a StorageError, "
                   "possibly inside the flow's summary of failed shards), rather than a raw client exception.")]
    if not all(any(t in p["failed"].get("error", "") for t in ("failed after retries", "unreachable (after")) for p in r["persistent"]):
        lines.append(
            "Where it is not (as the run's log shows): the flow's own error was clear (\"k of n shards failed; rerun to "
            "resume. First error: ...: the storage failed after retries ...\"), but releasing the writer lease at the end "
            "of the run (priorflow/storage/lease.py, `held`) failed in the same outage, and its raw exception replaced it."
        )
    lines.append("")
    section = "\n".join(lines)
    write_section("faults", section)
    print(section)


def yes(flag: bool | None) -> str:
    return "yes" if flag else "no"


if __name__ == "__main__":
    app()
