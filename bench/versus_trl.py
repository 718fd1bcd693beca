"""kubetune vs TRL 1.16 on the same tiny model, data and batch shapes (bench only; `pip install .[bench]`).

GRPO: both start from the same short LoRA SFT adapter, run the same number of steps of
4 prompts × 8 samples from the `rl` split with the same execution reward, constant learning rate,
clip 0.8/1.2, no KL, token-mean loss; then both final adapters are scored by the same greedy
evaluator on the held-out splits. Prints wall times and their ratio, and each one's gain.

DPO: the same 8 preference pairs per step for a few steps on the same adapter-free start
(reference log-probabilities precomputed on both sides); time per step and peak RSS, each side in
its own subprocess so the peak RSS is its own.

    python bench/versus_trl.py [--grpo-steps 60] [--sft-steps 400] [--eval-examples 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, machine, record_section, script_parser, tiny_base_model, today

SPLITS = ("heldout_values", "heldout_paraphrase")
DPO_STEPS, DPO_WARMUP, DPO_BATCH = 12, 2, 8


def _rl_rows(data: Path) -> list[dict]:
    from kubetune.tasks.text2sql import db_path, load_split

    return [{"prompt": ex.prompt(data), "query": ex.query, "db": str(db_path(data, ex.db_id))}
            for ex in load_split(data, "rl")]


def trl_grpo(model_dir: str, sft_adapter: str, data: Path, out: Path, steps: int, lr: float,
             seed: int) -> float:
    """TRL GRPOTrainer from the SFT adapter; returns wall seconds of trainer.train()."""
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from kubetune.tasks.text2sql import text2sql_reward

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), sft_adapter,
                                      is_trainable=True)

    def execution_reward(prompts, completions, query, db, **_) -> list[float]:
        return [text2sql_reward(d, c, q).value for c, q, d in zip(completions, query, db, strict=True)]

    args = GRPOConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=32,
                      num_generations=8, learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0,
                      max_completion_length=64, temperature=1.0, beta=0.0, epsilon=0.2, loss_type="dapo",
                      scale_rewards="group", max_grad_norm=1.0, logging_steps=10, report_to="none",
                      save_strategy="no", use_cpu=True, seed=seed, data_seed=seed)
    trainer = GRPOTrainer(model=model, reward_funcs=execution_reward, args=args,
                          train_dataset=Dataset.from_list(_rl_rows(data)), processing_class=tokenizer)
    t = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t
    trainer.model.save_pretrained(out / "adapter")
    return wall


def grpo(args: argparse.Namespace) -> dict:
    from kubetune.api.embedded import embedded_server
    from kubetune.recipes import PPOConfig, SFTConfig, run_ppo, run_sft
    from kubetune.steps.evaluate import evaluate_adapter
    from kubetune.tasks.text2sql import build_dataset

    work = args.workdir
    data = work / "data"
    build_dataset(data, seed=args.seed)
    model_dir = str(tiny_base_model(args.seed).path)
    with embedded_server(model_dir, checkpoint_dir=work / "checkpoints") as server:
        remote = dict(base_url=server.url, base_model=server.model_name, data_dir=data, seed=args.seed,
                      save_every=0, eval_examples=0)
        sft = run_sft(SFTConfig(out_dir=work / "sft", steps=args.sft_steps, **remote), log=print)
        ppo = run_ppo(PPOConfig(out_dir=work / "ppo", init_state=sft["state_path"], steps=args.grpo_steps,
                                learning_rate=args.lr, **remote), log=print)
    sft_adapter, ppo_adapter = sft["adapter_dir"], ppo["adapter_dir"]  # final adapters, downloaded
    trl_wall = trl_grpo(model_dir, sft_adapter, data, work / "trl-grpo", args.grpo_steps, args.lr, args.seed)

    def accuracy(adapter: str) -> dict[str, float]:
        return {s: evaluate_adapter(data, s, adapter=adapter, examples=args.eval_examples)["accuracy"]
                for s in SPLITS}

    start, ours = accuracy(sft_adapter), accuracy(ppo_adapter)
    theirs = accuracy(str(work / "trl-grpo" / "adapter"))
    return {"steps": args.grpo_steps, "kubetune_wall_s": round(ppo["seconds"], 1),
            "trl_wall_s": round(trl_wall, 1), "wall_ratio": round(ppo["seconds"] / trl_wall, 3),
            "sft": start, "kubetune": ours, "trl": theirs}


def dpo_pairs(data: Path, path: Path) -> Path:
    """Chosen = the gold SQL, rejected = the gold SQL of the next question (valid but wrong)."""
    from kubetune.tasks.text2sql import load_split

    examples = load_split(data, "rl")[: DPO_BATCH * DPO_STEPS]
    rows = [{"prompt": a.prompt(data), "chosen": a.completion, "rejected": b.completion}
            for a, b in zip(examples, examples[1:] + examples[:1], strict=True)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dpo_kubetune(work: Path, pairs: Path) -> dict:
    """The recipe against an embedded server in this process (its peak RSS counts both)."""
    from kubetune.api.embedded import embedded_server
    from kubetune.models.reference import tiny_model_dir
    from kubetune.recipes import DPOConfig, run_dpo

    out = work / "dpo-kubetune"
    with embedded_server(str(tiny_model_dir()), checkpoint_dir=out / "checkpoints") as server:
        run_dpo(DPOConfig(data_dir=work / "data", out_dir=out, base_url=server.url, pairs_file=pairs,
                          steps=DPO_STEPS, batch_size=DPO_BATCH, save_every=0, eval_examples=0), log=print)
    seconds = [json.loads(line)["seconds"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"step_s": (seconds[-1] - seconds[DPO_WARMUP - 1]) / (DPO_STEPS - DPO_WARMUP)}


def dpo_trl(work: Path, pairs: Path) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from kubetune.models.reference import tiny_model_dir

    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    marks: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *_, **__):
            marks.append(time.perf_counter())

    model_dir = str(tiny_model_dir())
    args = DPOConfig(output_dir=str(work / "dpo-trl"), max_steps=DPO_STEPS,
                     per_device_train_batch_size=DPO_BATCH, learning_rate=5e-4, lr_scheduler_type="constant",
                     beta=0.1, precompute_ref_log_probs=True, max_grad_norm=1.0, report_to="none",
                     save_strategy="no", use_cpu=True, logging_steps=100)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args,
                         train_dataset=Dataset.from_list(rows),
                         processing_class=AutoTokenizer.from_pretrained(model_dir),
                         peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
                         callbacks=[StepClock()])
    trainer.train()
    return {"step_s": (marks[-1] - marks[DPO_WARMUP - 1]) / (DPO_STEPS - DPO_WARMUP)}


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: on Linux that survives exec, so a
    child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _child(part: str, work: Path, pairs: Path) -> dict:
    """Runs one DPO side in a fresh interpreter; returns its step time and peak RSS (MiB)."""
    cmd = [sys.executable, __file__, "--part", part, "--workdir", str(work), "--pairs", str(pairs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "versus-trl")
    parser.add_argument("--sft-steps", type=int, default=400)
    parser.add_argument("--grpo-steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--eval-examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--part", choices=["dpo-kubetune", "dpo-trl"], help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part:
        result = (dpo_kubetune if args.part == "dpo-kubetune" else dpo_trl)(args.workdir, args.pairs)
        result["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(result))
        return

    g = grpo(args)
    pairs = dpo_pairs(args.workdir / "data", args.workdir / "dpo-pairs.jsonl")
    ours, theirs = _child("dpo-kubetune", args.workdir, pairs), _child("dpo-trl", args.workdir, pairs)
    gain = {side: {s: round(g[side][s] - g["sft"][s], 3) for s in SPLITS} for side in ("kubetune", "trl")}
    dpo = {"kubetune": ours, "trl": theirs, "step_ratio": round(ours["step_s"] / theirs["step_s"], 3),
           "rss_ratio": round(ours["peak_rss_mib"] / theirs["peak_rss_mib"], 3)}
    report = _report(g, gain, dpo, args)
    print("\n" + report)
    if not args.no_record:
        record_section("versus-trl", "Side by side with TRL 1.16 (bench/versus_trl.py, `make versus-trl`)",
                       report)
    print(json.dumps({"grpo": g, "grpo_gain": gain, "dpo": dpo}))


def _report(g: dict, gain: dict, dpo: dict, args: argparse.Namespace) -> str:
    rows = [
        f"Measured {today()} on {machine()}: `python bench/versus_trl.py --sft-steps {args.sft_steps} "
        f"--grpo-steps {args.grpo_steps} --lr {args.lr} --eval-examples {args.eval_examples}`.",
        "",
        f"GRPO: {g['steps']} steps × 4 prompts × 8 samples from the same SFT adapter "
        f"({args.sft_steps} steps), lr {args.lr} constant, clip 0.8/1.2, no KL; greedy accuracy on the first "
        f"{args.eval_examples} examples.",
        "",
        "| | wall (s) | " + " | ".join(f"{s} (SFT → after)" for s in SPLITS) + " |",
        "|---|---|" + "---|" * len(SPLITS),
    ]
    for side, name in (("kubetune", "kubetune `ppo`"), ("trl", "TRL `GRPOTrainer`")):
        cells = " | ".join(f"{g['sft'][s]:.2f} → {g[side][s]:.2f} ({gain[side][s]:+.2f})" for s in SPLITS)
        rows.append(f"| {name} | {g[side + '_wall_s']:.0f} | {cells} |")
    rows += [
        "",
        f"Wall-time ratio kubetune / TRL: **{g['wall_ratio']:.2f}** (goal ≤ 0.8 with at least TRL's gain).",
        "",
        f"DPO: {DPO_BATCH} pairs per step, same pairs and model, reference log-probabilities precomputed on "
        f"both sides, LoRA r16 on attention + MLP, {DPO_STEPS - DPO_WARMUP} timed steps, each side in its "
        "own process:",
        "",
        "| | s / step | peak RSS (MiB) |",
        "|---|---|---|",
        f"| kubetune `dpo` (embedded server + SDK client, one process) | {dpo['kubetune']['step_s']:.3f} | "
        f"{dpo['kubetune']['peak_rss_mib']:.0f} |",
        f"| TRL `DPOTrainer` | {dpo['trl']['step_s']:.3f} | {dpo['trl']['peak_rss_mib']:.0f} |",
        f"| ratio | **{dpo['step_ratio']:.2f}** | **{dpo['rss_ratio']:.2f}** |",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
