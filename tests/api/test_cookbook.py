"""tinker-cookbook 0.6.1's own SFT, RL and DPO trainers, unmodified, against the server on loopback.

Each trainer runs for two steps in a child process of the harness (helpers/cookbook.py, which also
checks the metrics.jsonl and checkpoints.jsonl it writes). Prompts are the question only: the test
model's context is 128 tokens.
"""

from __future__ import annotations

from pathlib import Path

from helpers.cookbook import Settings, advertised_model, refused_requests, run_matrix, write_data
from helpers.server import ApiServer


def test_cookbook_sft_rl_and_dpo_trainers_run_unchanged(api_server: ApiServer, tmp_path: Path) -> None:
    settings = Settings(steps=2, schema_in_prompt=False, max_length=120, max_tokens=16,
                        api_key=api_server.keys["alice"])
    write_data(tmp_path / "data", settings.schema_in_prompt)
    model = advertised_model(api_server.url, settings.api_key)
    refused_before = refused_requests(api_server.url)  # the session's server: other tests' refusals

    outcomes = run_matrix(["sft", "rl", "rl_async", "dpo"], model, api_server.url, tmp_path, settings,
                          timeout_s=120)

    failed = {o.name: [o.detail, *o.problems] for o in outcomes if not o.ok}
    assert not failed, failed
    refused = [line for line in refused_requests(api_server.url) if line not in refused_before]
    assert not refused, f"server refused: {refused}"
