"""Does RL learn? bootstrap → short LoRA SFT → PPO → eval, and SFT → DPO → eval, on 2 CPU cores.

Run by ``make learn``. Every stage is a kubetune recipe driving one embedded training server through
the official ``tinker`` SDK, exactly as a user's run would; PPO and DPO both start from the SFT state.
Prints a table of greedy execution accuracy on the held-out splits, records it in
docs/benchmarks.md (date and machine), and prints as its last line one JSON object for tracking.

    python bench/learning.py [--sft-steps 400] [--ppo-steps 150] [--dpo-steps 60] [--eval-examples 100]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import ROOT, machine, record_section, script_parser, tiny_base_model, today

from kubetune.api.embedded import embedded_server
from kubetune.recipes import DPOConfig, PPOConfig, SFTConfig, run_dpo, run_ppo, run_sft
from kubetune.tasks.text2sql import build_dataset

SPLITS = ("heldout_values", "heldout_paraphrase", "heldout_database")


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "learn")
    parser.add_argument("--sft-steps", type=int, default=400)
    parser.add_argument("--ppo-steps", type=int, default=150)
    parser.add_argument("--dpo-steps", type=int, default=60)
    parser.add_argument("--eval-examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()

    started = time.perf_counter()
    data = args.workdir / "data"
    build_dataset(data, seed=args.seed)
    boot = tiny_base_model(args.seed)
    print(f"base model {boot.path}: {boot.params / 1e6:.2f} M parameters "
          f"({'cached' if boot.cache_hit else f'pretrained in {boot.build_seconds:.0f} s'})", flush=True)
    common = dict(data_dir=data, eval_examples=args.eval_examples, eval_splits=SPLITS, seed=args.seed,
                  save_every=0)
    with embedded_server(str(boot.path), checkpoint_dir=args.workdir / "checkpoints") as server:
        remote = dict(base_url=server.url, base_model=server.model_name)
        t = time.perf_counter()
        sft = run_sft(SFTConfig(out_dir=args.workdir / "sft", steps=args.sft_steps, **remote, **common),
                      log=_log("sft"))
        sft_wall = time.perf_counter() - t
        t = time.perf_counter()
        ppo = run_ppo(PPOConfig(out_dir=args.workdir / "ppo", init_state=sft["state_path"],
                                steps=args.ppo_steps, **remote, **common), log=_log("ppo"))
        ppo_wall = time.perf_counter() - t
        t = time.perf_counter()
        dpo = run_dpo(DPOConfig(out_dir=args.workdir / "dpo", init_state=sft["state_path"],
                                steps=args.dpo_steps, gold_fallback=True, **remote, **common),
                      log=_log("dpo"))
        dpo_wall = time.perf_counter() - t

    stages = {"SFT": (sft, sft_wall, f"{args.sft_steps} steps × 16 pairs"),
              "SFT → PPO": (ppo, ppo_wall, f"{args.ppo_steps} steps × 4 prompts × 8 samples"),
              "SFT → DPO": (dpo, dpo_wall, f"{args.dpo_steps} steps × 8 pairs ({dpo['pairs']} pairs)")}
    table = _table(stages, args.eval_examples)
    print("\n" + table)
    summary = {
        "date": today(), "machine": machine(),
        **{f"sft_{s}": sft["eval"][s]["accuracy"] for s in SPLITS},
        **{f"ppo_{s}": ppo["eval"][s]["accuracy"] for s in SPLITS},
        **{f"dpo_{s}": dpo["eval"][s]["accuracy"] for s in SPLITS},
        "sft_wall_s": round(sft_wall, 1), "ppo_wall_s": round(ppo_wall, 1), "dpo_wall_s": round(dpo_wall, 1),
        "total_wall_s": round(time.perf_counter() - started, 1), "eval_examples": args.eval_examples,
    }
    if not args.no_record:
        _record(table, summary, args)
    print(json.dumps(summary))


def _log(stage: str):
    return lambda message: print(f"[{stage}] {message}", flush=True)


def _table(stages: dict, n: int) -> str:
    lines = [f"| stage | training | {' | '.join(SPLITS)} | wall (s) |",
             "|---|---|" + "---|" * len(SPLITS) + "---|"]
    for name, (result, wall, what) in stages.items():
        accuracies = " | ".join(f"{result['eval'][s]['accuracy']:.3f}" for s in SPLITS)
        lines.append(f"| {name} | {what} | {accuracies} | {wall:.0f} |")
    lines.append(f"\nGreedy execution accuracy on the first {n} examples of each held-out split; wall time "
                 "includes the end-of-stage evaluation.")
    return "\n".join(lines)


def _record(table: str, summary: dict, args: argparse.Namespace) -> None:
    command = (f"python bench/learning.py --sft-steps {args.sft_steps} --ppo-steps {args.ppo_steps} "
               f"--dpo-steps {args.dpo_steps} --eval-examples {args.eval_examples}")
    record_section("learning", "Learning (bench/learning.py, `make learn`)",
                   f"Measured {summary['date']} on {summary['machine']}: `{command}`, total "
                   f"{summary['total_wall_s']:.0f} s.\n\n{table}")


if __name__ == "__main__":
    main()
