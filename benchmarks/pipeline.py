"""Pipeline benchmark: orchestration and storage overhead per shard, and Zarr throughput to the local S3 server.

    python benchmarks/pipeline.py overhead      # restore flow, local Zarr, default shard size -> out/pipeline_overhead.json
    python benchmarks/pipeline.py throughput    # Zarr write/read to Ceph radosgw (scripts/local-s3.sh) -> out/pipeline_s3.json
    python benchmarks/pipeline.py incremental   # a scheduled run after new samples arrive, and one with none -> out/pipeline_incremental.json
    python benchmarks/pipeline.py report        # -> the pipeline section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import typer
from results import write_section

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
app = typer.Typer(add_completion=False)


def sr_x4_run(samples: int, solver: str, workers: int):
    """A benchmark-mode run of the sr_x4 task on `samples` held-out digits in a new temporary folder, with the
    solver's tuned options, on a LocalCluster of `workers` single-threaded workers."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from tables import TUNED, solver_options

    from priorflow.config import validate_config
    from priorflow.datasets import write_digits_array
    from priorflow.presets import NOISE

    work = Path(tempfile.mkdtemp(prefix="priorflow-bench-"))
    return validate_config({
        "input": write_digits_array(str(work / "in.zarr"), "test", samples), "output": str(work / "out.zarr"),
        "mode": "benchmark", "operator": {"name": "super_resolution", "params": {"factor": 4}},
        "noise": {"name": NOISE[0], "params": NOISE[1]},
        "solver": {"name": solver, **solver_options(solver, TUNED["sr_x4"].get(solver, {}))},
        "cluster": {"workers": workers},
    })


@app.command()
def overhead(samples: int = 64, workers: int = 1, solver: str = "dmplug") -> None:
    """Run the restore flow on `samples` digits at the default shard size; compare wall time with solver time."""
    from priorflow.config import RunConfig
    from priorflow.flows.prefect_api import prefect_api
    from priorflow.flows.restore import restore
    from priorflow.storage.outputs import OutputGroup

    config = sr_x4_run(samples, solver, workers)
    shard_size = RunConfig.model_fields["shard_size"].default
    t0 = time.perf_counter()
    with prefect_api():
        t1 = time.perf_counter()
        summary = restore(config)["summary"]
        t2 = time.perf_counter()
    reports_seconds = OutputGroup.open(config.output).read("metrics/seconds")
    solver_total = float(np.sum(reports_seconds))
    flow_wall = t2 - t1
    record = {
        "samples": samples, "shard_size": shard_size, "shards": summary["shards"], "workers": workers, "solver": solver,
        "prefect_server_start_s": t1 - t0, "flow_wall_s": flow_wall, "solver_s": solver_total,
        "overhead_share": (flow_wall * workers - solver_total) / solver_total,
        "per_shard_solver_s": solver_total / summary["shards"],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pipeline_overhead.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


@app.command()
def incremental(samples: int = 32, new: int = 4, workers: int = 1, solver: str = "dmplug") -> None:
    """Wall time of three runs of the restore flow on one output: all `samples`, then `new` appended samples,
    then nothing new (what a scheduled run costs when the dataset did not grow)."""
    import zarr

    from priorflow.datasets import load_digits
    from priorflow.flows.prefect_api import prefect_api
    from priorflow.flows.restore import restore

    config = sr_x4_run(samples, solver, workers)
    runs = {}
    with prefect_api():
        for label in ("all samples", f"{new} new samples", "nothing new"):
            if label.endswith("new samples"):
                zarr.open_array(config.input, mode="r+").append(load_digits("test", 16)[0][samples:samples + new].numpy())
            t0 = time.perf_counter()
            result = restore(config)
            runs[label] = {"wall_s": time.perf_counter() - t0, "solved": sum(r["samples"] for r in result["shards"])}
    record = {"samples": samples, "new": new, "workers": workers, "solver": solver, "runs": runs}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pipeline_incremental.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


@app.command()
def throughput(images: int = 128, size: int = 256, port: int = 7490) -> None:
    """Write and read a float32 (images, 1, size, size) array in 16-image chunks on a fresh local radosgw."""
    import s3fs
    import zarr

    from priorflow.storage.urls import open_store

    folder = Path(tempfile.mkdtemp(prefix="priorflow-s3-"))
    script = ROOT / "scripts" / "local-s3.sh"
    started = subprocess.run(["bash", str(script), "start", str(folder), str(port)], check=True, capture_output=True, text=True)
    os.environ.update(dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.split("\n") if line.startswith("export ")))
    try:
        s3fs.S3FileSystem().mkdir("priorflow-bench")
        data = np.random.default_rng(0).random((images, 1, size, size), dtype=np.float32)
        megabytes = data.nbytes / 1e6
        results = {}
        for label, compressors in (("zstd (default)", "auto"), ("uncompressed", None)):
            url = f"s3://priorflow-bench/{'raw' if compressors is None else 'zstd'}.zarr"
            array = zarr.create_array(open_store(url), shape=data.shape, chunks=(16, 1, size, size), dtype="f4",
                                      compressors=compressors, overwrite=True)
            t0 = time.perf_counter()
            array[...] = data
            t1 = time.perf_counter()
            back = zarr.open_array(open_store(url, read_only=True))[...]
            t2 = time.perf_counter()
            assert np.array_equal(back, data)
            results[label] = {"write_MBps": megabytes / (t1 - t0), "read_MBps": megabytes / (t2 - t1)}
        record = {"array": list(data.shape), "megabytes": megabytes, "chunk_images": 16, "results": results}
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "pipeline_s3.json").write_text(json.dumps(record, indent=1))
        print(json.dumps(record, indent=1))
    finally:
        subprocess.run(["bash", str(script), "stop", str(folder)], check=False)


@app.command()
def report() -> None:
    lines = ["## Pipeline", ""]
    overhead_file, s3_file, incremental_file = (OUT / f"pipeline_{name}.json" for name in ("overhead", "s3", "incremental"))
    if overhead_file.exists():
        r = json.loads(overhead_file.read_text())
        lines += [
            "`python benchmarks/pipeline.py overhead`: the restore flow (Prefect + Dask LocalCluster, local Zarr) on "
            f"{r['samples']} digits, SR x4, {r['solver']} with the tuned options, shard size {r['shard_size']} (the default), "
            f"{r['shards']} shards, {r['workers']} worker(s).", "",
            "| quantity | value |", "|---|---|",
            f"| solver time, all shards | {r['solver_s']:.1f} s ({r['per_shard_solver_s']:.1f} s per shard) |",
            f"| flow wall time (plan, fan-out, solve, write, reduce) | {r['flow_wall_s']:.1f} s |",
            f"| orchestration + storage overhead, share of solver time | {100 * r['overhead_share']:.1f} % |",
            f"| temporary Prefect server start (once per run, not per shard) | {r['prefect_server_start_s']:.1f} s |", "",
        ]
    if s3_file.exists():
        r = json.loads(s3_file.read_text())
        lines += [
            "`python benchmarks/pipeline.py throughput`: Zarr v3 through s3fs to Ceph radosgw on 127.0.0.1 "
            f"(scripts/local-s3.sh), float32 array {tuple(r['array'])} ({r['megabytes']:.0f} MB), {r['chunk_images']} images per chunk.", "",
            "| codec | write MB/s | read MB/s |", "|---|---|---|",
            *[f"| {k} | {v['write_MBps']:.0f} | {v['read_MBps']:.0f} |" for k, v in r["results"].items()], "",
        ]
    if incremental_file.exists():
        r = json.loads(incremental_file.read_text())
        lines += [
            f"`python benchmarks/pipeline.py incremental --samples {r['samples']} --new {r['new']}`: three runs of the restore "
            f"flow on one output (SR x4, {r['solver']} with the tuned options, {r['workers']} worker(s), temporary Prefect "
            "server already up): the dataset, then after samples were appended, then with nothing new.", "",
            "| run | samples solved | wall time |", "|---|---|---|",
            *[f"| {k} | {v['solved']} | {v['wall_s']:.1f} s |" for k, v in r["runs"].items()], "",
        ]
    section = "\n".join(lines)
    write_section("pipeline", section)
    print(section)


if __name__ == "__main__":
    app()
