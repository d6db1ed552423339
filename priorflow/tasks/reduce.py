"""Aggregate the per-sample metrics of a run into the group's attributes and a summary beside the group
(`OUT.summary.json`), and publish the run's Prefect artifacts: the metrics table, a link to the output group and a
grid of a few restored samples (also `OUT.grid.png`)."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from priorflow.storage.layout import SampleLayout
from priorflow.storage.location import write_side_file
from priorflow.storage.outputs import PER_SAMPLE_METRICS, SUMMARY_ATTRIBUTE, OutputGroup
from priorflow.tasks.plan import RunPlan
from priorflow.viz import output_grid, png_bytes

ARTIFACT_KEYS = {"metrics": "priorflow-metrics", "output": "priorflow-output", "grid": "priorflow-grid"}
GRID_SAMPLES = 6


def summarize(output: OutputGroup) -> dict[str, Any]:
    """Mean, median, std and count of every per-sample metric (NaN-free samples only), and stop-reason counts.
    The solver's own metrics (iterations, nfe, seconds, stop reasons) count tiles when samples were tiled."""
    stop_reasons = output.run["stop_reasons"]
    done = output.done()
    summary: dict[str, Any] = {"written_by": "priorflow", "samples": int(done.size)}
    for name in PER_SAMPLE_METRICS:
        values = output.read(f"metrics/{name}").astype(np.float64).ravel()
        if name == "stop_reason":
            codes, counts = np.unique(values[values >= 0].astype(int), return_counts=True)
            summary["stop_reasons"] = {stop_reasons[c]: int(n) for c, n in zip(codes, counts)}
            continue
        values = values[np.isfinite(values) & (values >= 0 if name in ("iterations", "nfe") else True)]
        if values.size:
            summary[name] = {"mean": float(values.mean()), "median": float(np.median(values)),
                             "std": float(values.std()), "count": int(values.size)}
    if "seconds" in summary:
        summary["seconds"]["total"] = float(output.read("metrics/seconds").sum())
    layout = SampleLayout(output.run["layout"], tuple(output.run["input_shape"]))
    shards = layout.plan(output.run.get("samples_per_shard", output.run["config"]["shard_size"]))
    summary["samples_done"] = int(done.sum())
    summary["shards_done"] = sum(bool(done[layout.index(s)].all()) for s in shards)
    summary["shards"] = len(shards)
    return summary


SHOWN_METRICS = ("psnr", "ssim", "lpips", "iterations", "seconds", "nfe")


def summary_title(url: str, summary: dict[str, Any]) -> str:
    return (f"{url}: {summary['samples_done']}/{summary['samples']} samples restored, "
            f"{summary['shards_done']}/{summary['shards']} shards")


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(metric, mean, median, std, count) of each metric the summary has: the table the artifact and the command
    line both show."""
    return [(name, f"{m['mean']:.4g}", f"{m['median']:.4g}", f"{m['std']:.4g}", str(m["count"]))
            for name in SHOWN_METRICS if (m := summary.get(name))]


def stop_reasons_line(summary: dict[str, Any]) -> str:
    return "stop reasons: " + ", ".join(f"{k} {v}" for k, v in summary.get("stop_reasons", {}).items())


def markdown_table(url: str, summary: dict[str, Any]) -> str:
    rows = [f"# priorflow restore: `{url}`", "", summary_title(url, summary) + ".", "",
            "| metric | mean | median | std | count |", "|---|---|---|---|---|"]
    rows += ["| " + " | ".join(row) + " |" for row in summary_rows(summary)]
    return "\n".join([*rows, "", stop_reasons_line(summary).capitalize()])


@task(name="reduce-metrics", retries=2, retry_delay_seconds=2)
def reduce_metrics(plan: RunPlan) -> dict[str, Any]:
    output = OutputGroup.open(plan.output, read_only=False)
    summary = summarize(output)
    output.group.attrs[SUMMARY_ATTRIBUTE] = summary
    url = plan.output
    write_side_file(url, "summary.json", json.dumps(summary, indent=1).encode())
    png = png_bytes(output_grid(output, GRID_SAMPLES))
    grid = write_side_file(url, "grid.png", png)
    create_markdown_artifact(markdown_table(url, summary), key=ARTIFACT_KEYS["metrics"], description="per-sample metrics")
    create_link_artifact(url, link_text=url, key=ARTIFACT_KEYS["output"], description="the output Zarr group")
    create_markdown_artifact(
        f"# First {GRID_SAMPLES} samples of `{url}`\n\n"
        f"![restored samples](data:image/png;base64,{base64.b64encode(png).decode()})\n\nFile: `{grid}`",
        key=ARTIFACT_KEYS["grid"], description="a few restored samples",
    )
    return summary
