"""What the benchmarks share (not a benchmark itself): ``kubetune serve`` as a separate process,
an engine in this process, the tiny base model, and where results are recorded."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "docs" / "benchmarks.md"


# ----------------------------------------------------------------------------- `kubetune serve` process
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def start_server(base_model: str, work: Path, port: int, timeout_s: float = 600.0,
                 env: Mapping[str, str] | None = None,
                 extra_args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Starts ``kubetune serve`` (checkpoints and log under ``work``) and waits until it is healthy.

    ``tiny`` may bootstrap the embedded model on first use, hence the long default timeout.
    """
    kubetune = Path(sys.executable).with_name("kubetune")
    log = open(work / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([str(kubetune), "serve", "--base-model", base_model, "--host", "127.0.0.1",
                             "--port", str(port), "--checkpoint-dir", str(work / "checkpoints"),
                             *extra_args],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(env) if env is not None else None,
                            start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kubetune serve exited with {proc.returncode}:\n{tail(work / 'server.log')}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"kubetune serve was not healthy after {timeout_s:.0f} s:\n"
                       f"{tail(work / 'server.log')}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT to the server's process group (a clean uvicorn shutdown), SIGKILL after 20 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ----------------------------------------------------------------------------- models and engines
def tiny_base_model(seed: int = 0):
    """The embedded tiny model, pretrained on the text-to-SQL corpus (a cache hit once built); the
    bootstrap result (``.path``, ``.params``, ``.cache_hit``, ``.build_seconds``)."""
    from kubetune.models.bootstrap import bootstrap_tiny_model
    from kubetune.models.reference import tiny_model_dir
    from kubetune.tasks.text2sql import pretraining_corpus

    return bootstrap_tiny_model(tiny_model_dir(), pretraining_corpus(seed), seed=seed)


def fwdbwd_batch(vocab: int):
    """The batch the engine benchmarks time: 8 sequences of 64 tokens, every target weighted."""
    from tinker import types

    rng = np.random.default_rng(0)
    data = []
    for _ in range(8):
        tokens = rng.integers(4, vocab, size=65)
        data.append(types.Datum(
            model_input=types.ModelInput.from_ints([int(t) for t in tokens[:-1]]),
            loss_fn_inputs={"target_tokens": types.TensorData.from_numpy(tokens[1:].astype(np.int64)),
                            "weights": types.TensorData.from_numpy(np.ones(64, dtype=np.float32))},
        ))
    return data


def local_engine(base_model: str, model_id: str = "local"):
    """An engine in this process with one rank-8 job ``model_id``, and the batch to time on it."""
    from kubetune.engine import Engine, LoraSpec
    from kubetune.models.reference import load_base_model
    from kubetune.tasks.text2sql import pretraining_corpus

    model, tokenizer = load_base_model(base_model, tiny_corpus=pretraining_corpus)
    engine = Engine(model, tokenizer, base_model=base_model)
    engine.create_model(model_id, LoraSpec(rank=8, seed=0))
    return engine, fwdbwd_batch(len(tokenizer))


# ----------------------------------------------------------------------------- command line and results
def script_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's argument parser, its module docstring (usage lines included) as its help."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


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
    """Replaces the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` of
    docs/benchmarks.md (or appends a new ``heading`` section holding the markers)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n{block}\n"
    path.write_text(text)
