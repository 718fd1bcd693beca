"""tinker-cookbook 0.6.1's own SFT, RL and DPO trainers, unmodified, against the server on loopback.

Each trainer runs for two steps in a child process (bench/cookbook_smoke.py, which also checks the
metrics.jsonl and checkpoints.jsonl it writes). Prompts are the question only: the test model's
context is 128 tokens.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ApiServer

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "cookbook_smoke.py"


def run_cookbook(api_server: ApiServer, work: Path, runs: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SCRIPT), "--base-url", api_server.url, "--api-key", api_server.keys["alice"],
           "--only", runs, "--steps", "2", "--question-only", "--max-length", "120", "--max-tokens", "16",
           "--timeout", "120", "--work", str(work)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=420)


def test_cookbook_sft_rl_and_dpo_trainers_run_unchanged(api_server: ApiServer, tmp_path: Path) -> None:
    result = run_cookbook(api_server, tmp_path, "sft,rl,rl_async,dpo")
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "4/4 cookbook runs passed" in result.stdout
    assert "server refused" not in result.stdout, result.stdout
