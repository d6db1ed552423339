"""Aggregate the per-sample metrics of a finished run into the group's attributes, summary.json and an artifact."""

from __future__ import annotations

import json
from typing import Any

import fsspec
import numpy as np
from prefect import task
from prefect.artifacts import create_markdown_artifact

from priorflow.config import RunConfig
from priorflow.storage.outputs import PER_SAMPLE_METRICS, OutputGroup
from priorflow.storage.urls import normalize_url

SUMMARY_ATTRIBUTE = "priorflow_summary"


def summarize(output: OutputGroup) -> dict[str, Any]:
    """Mean, median, std and count of every per-sample metric (NaN-free samples only), and stop-reason counts."""
    stop_reasons = output.run["stop_reasons"]
    summary: dict[str, Any] = {"samples": int(output.read("metrics/iterations").size)}
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
    summary["shards_done"] = int(output.done().sum())
    summary["shards"] = int(output.done().size)
    return summary


def markdown_table(url: str, summary: dict[str, Any]) -> str:
    rows = [f"# priorflow restore: `{url}`", "", f"{summary['samples']} samples, {summary['shards_done']}/{summary['shards']} shards.", "",
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
    with fsspec.open(f"{url}/summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    create_markdown_artifact(markdown_table(url, summary), key="priorflow-restore-metrics", description="per-sample metrics")
    return summary
