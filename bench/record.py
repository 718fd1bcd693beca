"""Where benchmark results go: a marked section of docs/benchmarks.md, replaced by each new run."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    """E.g. '2 vCPU Intel(R) Xeon(R) ..., no GPU' (the CPU model from /proc/cpuinfo when there is one)."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} vCPU {cpu}, {gpu}"


def today() -> str:
    return dt.date.today().isoformat()


def record_section(name: str, heading: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replaces the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` (or appends a
    new ``heading`` section holding the markers)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n{block}\n"
    path.write_text(text)
