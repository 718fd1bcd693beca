"""Packing benchmark: N RL-shaped jobs one after another vs all at once on one `kubetune serve`.

Each job step is what an RL loop does against the Tinker API: sample a group of completions from
the current weights, score them (a reward call, simulated by a sleep of about twice the step's
engine compute, so one job alone keeps the engine busy ~1/3 of the time), then ``forward_backward``
with ``importance_sampling``, ``optim_step`` and the next sampler's weights, submitted together.
The server runs in its own process, driven by the unmodified ``tinker`` SDK over loopback; each job
runs in a process of its own, as separate researchers' loops (or KFP pods) would. Packed runs
report the engine's busy fraction over the whole run and in steady state (all jobs running).

Also measures the API overhead of one ``forward_backward`` (batch 8): per call, the client's wall
time minus the engine time the server spent on it.

    python bench/duty_cycle.py                    # N = 3, the embedded tiny model
    python bench/duty_cycle.py --jobs 4 --steps 8 --base-model /path/to/model

Prints a table and, as its last line, one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from serve_process import free_port, start_server, stop_server

API_KEY = "tml-bench"


@dataclass
class Mode:
    wall_s: float
    busy_s: float
    steady_busy: float | None = None  # packed only: busy while all jobs run (see measure)

    @property
    def busy_fraction(self) -> float:
        return self.busy_s / self.wall_s


def busy_seconds(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    match = re.search(r"^kubetune_engine_busy_seconds(?:_total)? ([0-9.e+-]+)$", text, re.M)
    if not match:
        raise SystemExit("the server's /metrics has no kubetune_engine_busy_seconds")
    return float(match.group(1))


class RLJob:
    """One RL-shaped job: its own SDK client and LoRA adapter on the shared server."""

    def __init__(self, base_url: str, base_model: str, seed: int, args: argparse.Namespace) -> None:
        import tinker
        from tinker import types

        self.types = types
        self.args = args
        self.service = tinker.ServiceClient(base_url=base_url, api_key=API_KEY)
        self.trainer = self.service.create_lora_training_client(base_model=base_model, rank=8, seed=seed).result()
        rng = np.random.default_rng(seed)
        vocab = len(self.trainer.get_tokenizer())
        self.prompt = [int(t) for t in rng.integers(4, vocab, size=args.prompt_tokens)]
        self.params = types.SamplingParams(max_tokens=args.max_tokens, temperature=1.0, stop=[])
        self.rng = rng
        self.next_sampler = None  # the future of the sampler the next step samples from

    def step(self, reward_latency_s: float) -> float:
        """One RL step; returns the time spent waiting for the (simulated) reward."""
        types = self.types
        if self.next_sampler is None:
            self.next_sampler = self.trainer.save_weights_and_get_sampling_client()
        sampler = self.next_sampler.result()
        result = sampler.sample(types.ModelInput.from_ints(self.prompt), num_samples=self.args.group,
                                sampling_params=self.params).result()
        time.sleep(reward_latency_s)  # the reward server's latency
        rewards = self.rng.random(len(result.sequences))
        advantages = rewards - rewards.mean()
        data = []
        for seq, advantage in zip(result.sequences, advantages, strict=True):
            tokens = self.prompt + list(seq.tokens)
            n_prompt = len(self.prompt) - 1
            logprobs = [0.0] * n_prompt + list(seq.logprobs)
            adv = [0.0] * n_prompt + [float(advantage)] * len(seq.tokens)
            data.append(types.Datum(
                model_input=types.ModelInput.from_ints(tokens[:-1]),
                loss_fn_inputs={
                    "target_tokens": types.TensorData.from_numpy(np.array(tokens[1:], dtype=np.int64)),
                    "logprobs": types.TensorData.from_numpy(np.array(logprobs, dtype=np.float32)),
                    "advantages": types.TensorData.from_numpy(np.array(adv, dtype=np.float32)),
                },
            ))
        # Submitted together before any is awaited, as tinker-cookbook's RL loop pipelines
        # forward_backward and optim_step: each request's round trip overlaps the one before it
        # (seq_ids keep them in order), and the next step's sampler is published right behind them.
        fwd = self.trainer.forward_backward(data, "importance_sampling")
        opt = self.trainer.optim_step(types.AdamParams(learning_rate=1e-4))
        self.next_sampler = self.trainer.save_weights_and_get_sampling_client()
        fwd.result()
        opt.result()
        return reward_latency_s

    def run(self, steps: int, reward_latency_s: float) -> None:
        for _ in range(steps):
            self.step(reward_latency_s)


def _job_main(conn, base_url: str, base_model: str, seed: int, args: argparse.Namespace) -> None:
    """A job's own process, as a researcher's RL loop would be: runs steps when told to."""
    job = RLJob(base_url, base_model, seed, args)
    job.step(0.0)  # warm-up: adapter created, first sampler published
    conn.send("ready")
    while (order := conn.recv()) is not None:
        job.run(*order)
        conn.send("done")


class JobProcess:
    """Handle on one job process (one SDK client each: no GIL shared between jobs)."""

    def __init__(self, base_url: str, base_model: str, seed: int, args: argparse.Namespace) -> None:
        self.conn, child = multiprocessing.get_context("spawn").Pipe()
        self.proc = multiprocessing.get_context("spawn").Process(
            target=_job_main, args=(child, base_url, base_model, seed, args), daemon=True)
        self.proc.start()

    def ready(self) -> None:
        if self.conn.recv() != "ready":
            raise SystemExit("a job process failed to start")

    def start(self, steps: int, latency_s: float) -> None:
        self.conn.send((steps, latency_s))

    def wait(self) -> None:
        if self.conn.recv() != "done":
            raise SystemExit("a job process failed")

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(timeout=60)


def measure(port: int, jobs: list[JobProcess], steps: int, latency: float, packed: bool,
            cycle_s: float = 0.0) -> Mode:
    """Wall and engine-busy time of the jobs' steps, one job after another or all at once.

    Packed runs also report the steady-state busy fraction: from one job cycle (``cycle_s``) after
    the start, when every job is in its loop, until the first job finishes. The whole-run fraction
    includes the ramp at both ends, when fewer than N jobs have work: at the start all jobs await
    their first rewards together, at the end the last job's final reward wait has no company.
    """
    busy0, t0 = busy_seconds(port), time.perf_counter()
    if not packed:
        for job in jobs:
            job.start(steps, latency)
            job.wait()
        return Mode(wall_s=time.perf_counter() - t0, busy_s=busy_seconds(port) - busy0)
    for job in jobs:
        job.start(steps, latency)
    time.sleep(cycle_s)
    busy1, t1 = busy_seconds(port), time.perf_counter()
    multiprocessing.connection.wait([job.conn for job in jobs])  # the first job is done
    busy2, t2 = busy_seconds(port), time.perf_counter()
    for job in jobs:
        job.wait()
    return Mode(wall_s=time.perf_counter() - t0, busy_s=busy_seconds(port) - busy0,
                steady_busy=(busy2 - busy1) / (t2 - t1))


@dataclass
class Pair:
    """One calibration and the sequential and packed runs that follow it."""

    compute_s: float  # engine compute per step, one job alone
    step_s: float  # wall time per step, one job alone (compute plus client and HTTP time)
    latency_s: float
    sequential: Mode
    packed: Mode

    @property
    def ratio(self) -> float:
        return self.packed.wall_s / self.sequential.wall_s

    def ideal(self, jobs: int) -> float:
        cycle = self.step_s + self.latency_s
        return max(jobs * self.compute_s, cycle) / (jobs * cycle)


def calibrate(port: int, job: JobProcess) -> tuple[float, float]:
    """(engine compute, wall) per step of one job alone with no reward latency.

    Per step of short runs: a single step after a pause reads slow (cold caches, sleeping threads),
    which would set the latency above twice the steady compute. Median of three runs.
    """
    runs = [measure(port, [job], 3, 0.0, packed=False) for _ in range(3)]
    return statistics.median(m.busy_s / 3 for m in runs), statistics.median(m.wall_s / 3 for m in runs)


def fwdbwd_batch(vocab: int):
    """The batch both sides time: 8 sequences of 64 tokens, every target weighted."""
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


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def inprocess_fwdbwd(base_model: str, repeats: int) -> list[float]:
    """In a process of its own (no SDK threads competing for the GIL): the engine called directly."""
    from kubetune.engine import Engine, LoraSpec
    from kubetune.models.reference import load_base_model

    model, tokenizer = load_base_model(base_model)
    engine = Engine(model, tokenizer, base_model=base_model)
    engine.create_model("local", LoraSpec(rank=8, seed=0))
    data = fwdbwd_batch(len(tokenizer))
    return timed(lambda: engine.forward_backward("local", data, "cross_entropy"), repeats)


def api_overhead(base_url: str, port: int, base_model: str, repeats: int) -> dict[str, float]:
    """API overhead of one forward_backward (batch 8), two ways.

    Paired (the reported overhead): for each call, the client's wall time minus the engine time the
    server spent on that very call (its ``kubetune_engine_busy_seconds`` before and after; nothing
    else runs). Machine speed drifts by tens of ms between minutes on shared machines; a per-call
    difference cancels that drift. Unpaired, for reference: p50 of the calls through the server
    against p50 of the same call on an engine in a process of its own, alternating rounds.
    """
    import tinker

    service = tinker.ServiceClient(base_url=base_url, api_key=API_KEY)
    remote = service.create_lora_training_client(base_model=base_model, rank=8, seed=0).result()
    data = fwdbwd_batch(len(remote.get_tokenizer()))
    remote.forward_backward(data, "cross_entropy").result()  # warm-up
    api, local, paired = [], [], []
    for _ in range(3):
        for _ in range(repeats):
            busy0 = busy_seconds(port)
            t0 = time.perf_counter()
            remote.forward_backward(data, "cross_entropy").result()
            wall = time.perf_counter() - t0
            api.append(wall)
            paired.append(wall - (busy_seconds(port) - busy0))
        out = subprocess.run([sys.executable, __file__, "--inprocess", base_model, "--overhead-repeats", str(repeats)],
                             check=True, capture_output=True, text=True).stdout
        local += json.loads(out.strip().splitlines()[-1])
    api_p50, local_p50 = statistics.median(api), statistics.median(local)
    return {"api_p50_ms": api_p50 * 1e3, "inprocess_p50_ms": local_p50 * 1e3,
            "unpaired_overhead_p50_ms": (api_p50 - local_p50) * 1e3,
            "overhead_p50_ms": statistics.median(paired) * 1e3,
            "overhead_p90_ms": statistics.quantiles(paired, n=10)[-1] * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15, help="RL steps per job in each mode")
    parser.add_argument("--group", type=int, default=4, help="samples per prompt")
    parser.add_argument("--prompt-tokens", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--latency-factor", type=float, default=2.0, help="reward latency / engine compute per step")
    parser.add_argument("--base-model", default="tiny")
    parser.add_argument("--overhead-repeats", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="sequential/packed pairs; medians are reported")
    parser.add_argument("--inprocess", metavar="MODEL", help=argparse.SUPPRESS)  # worker of api_overhead
    args = parser.parse_args()
    if args.inprocess:
        print(json.dumps(inprocess_fwdbwd(args.inprocess, args.overhead_repeats)))
        return

    os.environ.setdefault("TINKER_TELEMETRY", "0")
    workdir = Path(tempfile.mkdtemp(prefix="kubetune-bench-"))
    port = free_port()
    server = start_server(args.base_model, workdir, port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        caps = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"{base_url}/api/v1/get_server_capabilities", headers={"X-API-Key": API_KEY}), timeout=10).read())
        base_model = caps["supported_models"][0]["model_name"]
        # Overhead first: one client in this process, before the RL jobs' clients (and their
        # heartbeat threads) exist.
        overhead = api_overhead(base_url, port, base_model, args.overhead_repeats)
        jobs = [JobProcess(base_url, base_model, seed, args) for seed in range(args.jobs)]
        for job in jobs:
            job.ready()

        # Repeated pairs, each calibrated right before it and each sequential run right before its
        # packed one: on a shared machine the speed drifts between minutes, so every ratio and busy
        # fraction compares runs made close together with a latency set from the same minute.
        pairs = []
        for _ in range(args.repeats):
            compute_s, step_s = calibrate(port, jobs[0])
            latency_s = args.latency_factor * compute_s
            pairs.append(Pair(compute_s, step_s, latency_s,
                              measure(port, jobs, args.steps, latency_s, packed=False),
                              measure(port, jobs, args.steps, latency_s, packed=True, cycle_s=step_s + latency_s)))
        for job in jobs:
            job.close()
    finally:
        stop_server(server)

    ratio = statistics.median(p.ratio for p in pairs)
    ideal = statistics.median(p.ideal(args.jobs) for p in pairs)
    busy_packed = statistics.median(p.packed.busy_fraction for p in pairs)
    busy_sequential = statistics.median(p.sequential.busy_fraction for p in pairs)
    busy_steady = statistics.median(p.packed.steady_busy or 0.0 for p in pairs)
    print(f"{args.jobs} RL-shaped jobs x {args.steps} steps; group {args.group}, {args.max_tokens} new tokens; "
          f"reward latency {args.latency_factor:g} x the engine compute per step, calibrated before each pair")
    print(f"{'pair':<6}{'compute':>9}{'latency':>9}{'sequential s':>14}{'busy':>7}{'packed s':>10}{'busy':>7}"
          f"{'steady':>8}{'ratio':>8}{'ideal':>8}")
    for index, p in enumerate(pairs, 1):
        print(f"{index:<6}{p.compute_s * 1e3:>7.0f}ms{p.latency_s * 1e3:>7.0f}ms{p.sequential.wall_s:>14.2f}"
              f"{p.sequential.busy_fraction:>7.0%}{p.packed.wall_s:>10.2f}{p.packed.busy_fraction:>7.0%}"
              f"{p.packed.steady_busy or 0.0:>8.0%}{p.ratio:>8.3f}{p.ideal(args.jobs):>8.3f}")
    print(f"median: packed/sequential wall ratio {ratio:.3f} (ideal {ideal:.3f}), busy packed {busy_packed:.0%} "
          f"(steady state, all jobs running: {busy_steady:.0%})")
    print(f"forward_backward batch 8: API overhead per call (wall - the server's engine time) p50 "
          f"{overhead['overhead_p50_ms']:.1f} ms, p90 {overhead['overhead_p90_ms']:.1f} ms; unpaired: API p50 "
          f"{overhead['api_p50_ms']:.1f} ms vs in-process p50 {overhead['inprocess_p50_ms']:.1f} ms")
    print(json.dumps({
        "jobs": args.jobs, "steps": args.steps, "ratio": round(ratio, 3), "ideal_ratio": round(ideal, 3),
        "busy_sequential": round(busy_sequential, 3), "busy_packed": round(busy_packed, 3),
        "busy_packed_steady": round(busy_steady, 3),
        "pairs": [{"compute_per_step_s": round(p.compute_s, 4), "step_alone_s": round(p.step_s, 4),
                   "reward_latency_s": round(p.latency_s, 4), "sequential_wall_s": round(p.sequential.wall_s, 2),
                   "packed_wall_s": round(p.packed.wall_s, 2), "ratio": round(p.ratio, 3),
                   "busy_sequential": round(p.sequential.busy_fraction, 3),
                   "busy_packed": round(p.packed.busy_fraction, 3),
                   "busy_packed_steady": round(p.packed.steady_busy or 0.0, 3)} for p in pairs],
        **{k: round(v, 2) for k, v in overhead.items()},
    }))


if __name__ == "__main__":
    main()
