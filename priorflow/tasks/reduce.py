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

from priorflow.config import RunConfig
from priorflow.storage.layout import SampleLayout
from priorflow.storage.location import write_side_file
from priorflow.storage.outputs import PER_SAMPLE_METRICS, SUMMARY_ATTRIBUTE, OutputGroup
from priorflow.storage.urls import normalize_url
from priorflow.viz import output_columns, png_bytes, render_grid

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


def markdown_table(url: str, summary: dict[str, Any]) -> str:
    rows = [f"# priorflow restore: `{url}`", "",
            f"{summary['samples_done']}/{summary['samples']} samples restored, {summary['shards_done']}/{summary['shards']} shards.", "",
            "| metric | mean | median | std | count |", "|---|---|---|---|---|"]
    for name in ("psnr", "ssim", "lpips", "iterations", "seconds", "nfe"):
        if name in summary:
            m = summary[name]
            rows.append(f"| {name} | {m['mean']:.4g} | {m['median']:.4g} | {m['std']:.4g} | {m['count']} |")
    rows += ["", "Stop reasons: " + ", ".join(f"{k} {v}" for k, v in summary.get("stop_reasons", {}).items())]
    return "\n".join(rows)


@task(name="reduce-metrics", retries=2, retry_delay_seconds=2)
def reduce_metrics(config: RunConfig) -> dict[str, Any]:
    output = OutputGroup.open(config.output, read_only=False)
    summary = summarize(output)
    output.group.attrs[SUMMARY_ATTRIBUTE] = summary
    url = normalize_url(config.output)
    write_side_file(url, "summary.json", json.dumps(summary, indent=1).encode())
    columns = output_columns(output, GRID_SAMPLES)
    png = png_bytes(render_grid(columns))
    grid = write_side_file(url, "grid.png", png)
    create_markdown_artifact(markdown_table(url, summary), key=ARTIFACT_KEYS["metrics"], description="per-sample metrics")
    create_link_artifact(url, link_text=url, key=ARTIFACT_KEYS["output"], description="the output Zarr group")
    create_markdown_artifact(
        f"# First {GRID_SAMPLES} samples of `{url}`\n\nColumns: {', '.join(columns)}.\n\n"
        f"![restored samples](data:image/png;base64,{base64.b64encode(png).decode()})\n\nFile: `{grid}`",
        key=ARTIFACT_KEYS["grid"], description="a few restored samples",
    )
    return summary
