"""Batched sampling: N one-prompt greedy requests in flight at once (what an evaluation through the
Tinker SDK sends) against one server with request batching on, and the same server with it off
(``max_sample_batch=1``), side by side in one run.

Prompts are the first N of the embedded task's ``heldout_paraphrase`` split (schema + question,
about 80 tokens each with the tiny model's tokenizer), decoded greedily to at most 96 tokens from the
tiny base model, as ``evaluate_text2sql`` does. Also reports how many of the N completions are
token-identical between the two settings (left padding changes float rounding, so a greedy token can
flip at a near-tie).

    python bench/sample_batching.py              # N = 100
    python bench/sample_batching.py --prompts 300

Prints a table and, as its last line, one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import machine, record_section, today


def timed_requests(max_batch: int, prompts: list[list[int]], work: Path) -> tuple[float, list[list[int]]]:
    """Seconds for all ``prompts`` at once through a fresh server, and the completions' tokens."""
    import tinker
    from tinker import types

    from kubetune.api.embedded import running_server
    from kubetune.api.server import build_service

    service = build_service("tiny", checkpoint_dir=work / f"checkpoints-{max_batch}",
                            max_sample_batch=max_batch)
    greedy = types.SamplingParams(max_tokens=96, temperature=0.0)
    with running_server(service) as url:
        client = tinker.ServiceClient(base_url=url, api_key="tml-bench")
        try:
            sampler = client.create_sampling_client(base_model=service.config.base_model).result()
            sampler.sample(types.ModelInput.from_ints(prompts[0]), 1, greedy).result()  # warm up
            started = time.perf_counter()
            futures = [sampler.sample(types.ModelInput.from_ints(p), 1, greedy) for p in prompts]
            tokens = [f.result().sequences[0].tokens for f in futures]
            seconds = time.perf_counter() - started
        finally:
            client.close("success").result()
    service.scheduler.stop()
    return seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=True,
                        help="Write the result into docs/benchmarks.md.")
    args = parser.parse_args()

    from kubetune.models.reference import load_base_model
    from kubetune.tasks.text2sql import build_dataset, load_split, pretraining_corpus

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_dataset(work / "data", seed=0)
        _, tokenizer = load_base_model("tiny", tiny_corpus=pretraining_corpus)
        examples = load_split(work / "data", "heldout_paraphrase")[:args.prompts]
        prompts = [list(tokenizer(e.prompt(work / "data"))["input_ids"]) for e in examples]
        one_by_one, tokens_single = timed_requests(1, prompts, work)
        batched, tokens_batched = timed_requests(64, prompts, work)
    same = sum(a == b for a, b in zip(tokens_single, tokens_batched, strict=True))
    result = {"prompts": len(prompts), "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1),
              "one_by_one_s": round(one_by_one, 2), "batched_s": round(batched, 2),
              "batched_over_one_by_one": round(batched / one_by_one, 3), "identical_completions": same}
    table = "\n".join([
        "| requests in flight | mean prompt tokens | one by one (`max_sample_batch=1`) | batched (64) "
        "| batched / one by one | identical completions |",
        "|---|---|---|---|---|---|",
        f"| {result['prompts']} | {result['mean_prompt_tokens']} | {one_by_one:.2f} s | {batched:.2f} s | "
        f"**{result['batched_over_one_by_one']:.3f}** | {same} / {len(prompts)} |"])
    print(table)
    if args.record:
        record_section("sample-batching", "Batched sampling on the server (bench/sample_batching.py)",
                       f"Measured {today()} on {machine()}: `python bench/sample_batching.py --prompts "
                       f"{args.prompts}` (greedy, up to 96 tokens, tiny base model, one request per prompt "
                       f"through the SDK).\n\n{table}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
