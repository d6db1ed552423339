"""benchmarks/RESULTS.md is made of sections, each owned by one benchmark script and replaced when it reports."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEvery number here was produced by the command named in its section.\n"


def write_section(name: str, section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{section}\n{end}"
    text = text.split(start)[0] + block + text.split(end)[1] if start in text else text + "\n" + block + "\n"
    RESULTS.write_text(text)
