"""`kubetune serve` as a separate process, for benchmarks that drive it over loopback like real clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def start_server(base_model: str, work: Path, port: int, timeout_s: float = 600.0,
                 env: Mapping[str, str] | None = None, extra_args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Starts ``kubetune serve`` (checkpoints and log under ``work``) and waits until it is healthy.

    ``tiny`` may bootstrap the embedded model on first use, hence the long default timeout.
    """
    kubetune = Path(sys.executable).with_name("kubetune")
    log = open(work / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([str(kubetune), "serve", "--base-model", base_model, "--host", "127.0.0.1",
                             "--port", str(port), "--checkpoint-dir", str(work / "checkpoints"), *extra_args],
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
    raise RuntimeError(f"kubetune serve was not healthy after {timeout_s:.0f} s:\n{tail(work / 'server.log')}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT to the server's process group (a clean uvicorn shutdown), SIGKILL after 20 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def advertised_model(base_url: str, api_key: str) -> str:
    """The one model name the server advertises (what clients hand to ``AutoTokenizer`` and
    ``create_lora_training_client``)."""
    import tinker

    capabilities = tinker.RestClient(base_url=base_url, api_key=api_key).get_server_capabilities().result()
    names = [m.model_name for m in capabilities.supported_models if m.model_name]
    if len(names) != 1:
        raise RuntimeError(f"expected one served model, got {names}")
    return names[0]
