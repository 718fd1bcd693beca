"""Packing benchmark: N RL-shaped jobs one after another vs all at once on one `kubetune serve`.

Each job step is what an RL loop does against the Tinker API: sample a group of completions from
the current weights, score them (a reward call, simulated by a wait of twice the step's engine
compute, so one job alone keeps the engine busy ~1/3 of the time), then ``forward_backward``
with ``importance_sampling``, ``optim_step`` and the next sampler's weights, submitted together.
The server runs in its own process, driven by the unmodified ``tinker`` SDK over loopback; each job
runs in a process of its own, as separate researchers' loops (or KFP pods) would. The reward wait
follows the engine's compute as measured live (see ComputeMonitor): the machine's speed drifts.
Packed runs report the engine's busy fraction over the whole run and in steady state (all jobs
running).

Also measures the API overhead of one ``forward_backward`` (batch 8) against the same call on an
engine in process: each side's wall time net of its engine compute, compared (see api_overhead).

    python bench/duty_cycle.py                    # N = 3, the embedded tiny model, 60 steps per job
    python bench/duty_cycle.py --steps 30         # half the time; the ramps weigh ~2.5 % of a run
    python bench/duty_cycle.py --jobs 4 --steps 8 --base-model /path/to/model
    python bench/duty_cycle.py --steps 30 --server-env GOMP_SPINCOUNT=1000   # a server setting to compare

Prints a table and, as its last line, one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from serve_process import free_port, start_server, stop_server

API_KEY = "tml-bench"


@dataclass
class Mode:
    """One run of the jobs' steps, one after another or all at once."""

    wall_s: float
    busy_s: float
    steps: int  # all jobs' steps together
    reward_wait_s: float  # all jobs' reward waits together
    steady_busy: float | None = None  # packed only: busy while all jobs run (see measure)
    window: tuple[float, float] = (0.0, 0.0)  # time.monotonic() at its start and end (the op trace's clock)

    @property
    def busy_fraction(self) -> float:
        return self.busy_s / self.wall_s

    @property
    def compute_s(self) -> float:
        """Engine compute per step during this run."""
        return self.busy_s / self.steps

    @property
    def latency_factor(self) -> float:
        """Mean reward wait over the engine compute per step, both measured during this run."""
        return self.reward_wait_s / self.busy_s


def metrics_text(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def sample_value(text: str, sample: str) -> float | None:
    """The value of one sample (a regex for its name and labels) in Prometheus text, if present."""
    match = re.search(rf"^{sample} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else None


def busy_seconds(port: int) -> float:
    busy = sample_value(metrics_text(port), r"kubetune_engine_busy_seconds(?:_total)?")
    if busy is None:
        raise SystemExit("the server's /metrics has no kubetune_engine_busy_seconds")
    return busy


STEP_OPERATIONS = ("sample", "forward_backward", "optim_step", "save_weights_for_sampler")  # once per step


def operation_totals(port: int) -> dict[str, tuple[int, float]]:
    """(count, seconds) of the finished operations of each kind an RL step runs, from /metrics."""
    text = metrics_text(port)
    totals = {}
    for name in STEP_OPERATIONS:
        count = sample_value(text, rf'kubetune_operation_seconds_count\{{operation="{name}"\}}')
        seconds = sample_value(text, rf'kubetune_operation_seconds_sum\{{operation="{name}"\}}')
        if count is not None and seconds is not None:
            totals[name] = (int(count), seconds)
    return totals


class ComputeMonitor:
    """The engine's compute per RL step, measured live; jobs set their reward latency from it.

    The speed of a shared machine drifts by 10-20 % within a minute. A latency fixed from an earlier
    calibration then drifts away from ``factor`` x compute: above it, it caps packed busy below
    100 % (busy packed <= N x busy sequential); below it, it hands the engine more than it can do.
    Every second this thread reads the server's operation times from ``/metrics`` and publishes the
    compute of one step (the mean time of each of a step's operations over their last ``window``
    runs, summed) in a value shared with the job processes; each job reads it right before each
    reward wait. Finished operations only, so work in flight never skews it.
    """

    def __init__(self, port: int, window: int = 6, interval_s: float = 1.0) -> None:
        self.port, self.window, self.interval_s = port, window, interval_s
        self.value = multiprocessing.get_context("spawn").Value("d", 0.0)  # seconds per step; 0 = unknown
        self._history: dict[str, list[tuple[int, float]]] = {name: [] for name in STEP_OPERATIONS}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="compute-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def update(self) -> None:
        means = []
        for name, (count, seconds) in operation_totals(self.port).items():
            history = self._history[name]
            if not history or count != history[-1][0]:
                history.append((count, seconds))
                del history[:-4 * self.window]
            older = [(n, t) for n, t in history if n <= count - self.window]
            if older:
                means.append((seconds - older[-1][1]) / (count - older[-1][0]))
        if len(means) == len(STEP_OPERATIONS):
            self.value.value = sum(means)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.update()


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

    def run(self, steps: int, factor: float, compute) -> float:
        """``steps`` steps, each waiting ``factor`` x the engine's current compute per step for its
        reward (``compute``: the monitor's shared value); returns the total reward wait."""
        waited = 0.0
        for _ in range(steps):
            waited += self.step(factor * compute.value)
        return waited


def _job_main(conn, base_url: str, base_model: str, seed: int, args: argparse.Namespace, compute) -> None:
    """A job's own process, as a researcher's RL loop would be: runs steps when told to."""
    job = RLJob(base_url, base_model, seed, args)
    job.step(0.0)  # warm-up: adapter created, first sampler published
    conn.send("ready")
    while (order := conn.recv()) is not None:
        conn.send(job.run(*order, compute))


class JobProcess:
    """Handle on one job process (one SDK client each: no GIL shared between jobs)."""

    def __init__(self, base_url: str, base_model: str, seed: int, args: argparse.Namespace, compute) -> None:
        self.conn, child = multiprocessing.get_context("spawn").Pipe()
        self.proc = multiprocessing.get_context("spawn").Process(
            target=_job_main, args=(child, base_url, base_model, seed, args, compute), daemon=True)
        self.proc.start()

    def ready(self) -> None:
        if self.conn.recv() != "ready":
            raise SystemExit("a job process failed to start")

    def start(self, steps: int, factor: float) -> None:
        self.conn.send((steps, factor))

    def wait(self) -> float:
        """The job's total reward wait in the run it was started on."""
        waited = self.conn.recv()
        if not isinstance(waited, float):
            raise SystemExit("a job process failed")
        return waited

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(timeout=60)


def measure(port: int, jobs: list[JobProcess], steps: int, factor: float, packed: bool,
            cycle_s: float = 0.0) -> Mode:
    """Wall and engine-busy time of the jobs' steps, one job after another or all at once.

    Packed runs also report the steady-state busy fraction: from one job cycle (``cycle_s``) after
    the start, when every job is in its loop, until the first job finishes. The whole-run fraction
    includes the ramp at both ends, when fewer than N jobs have work: at the start all jobs await
    their first rewards together, at the end the last job's final reward wait has no company.
    """
    busy0, t0, m0 = busy_seconds(port), time.perf_counter(), time.monotonic()
    total = len(jobs) * steps
    if not packed:
        waited = 0.0
        for job in jobs:
            job.start(steps, factor)
            waited += job.wait()
        return Mode(wall_s=time.perf_counter() - t0, busy_s=busy_seconds(port) - busy0, steps=total,
                    reward_wait_s=waited, window=(m0, time.monotonic()))
    for job in jobs:
        job.start(steps, factor)
    time.sleep(cycle_s)
    busy1, t1 = busy_seconds(port), time.perf_counter()
    multiprocessing.connection.wait([job.conn for job in jobs])  # the first job is done
    busy2, t2 = busy_seconds(port), time.perf_counter()
    waited = sum(job.wait() for job in jobs)
    return Mode(wall_s=time.perf_counter() - t0, busy_s=busy_seconds(port) - busy0, steps=total,
                reward_wait_s=waited, steady_busy=(busy2 - busy1) / (t2 - t1), window=(m0, time.monotonic()))


def read_trace(path: Path, window: tuple[float, float]) -> list[dict]:
    """The server's ``--op-trace`` lines of the operations that started inside ``window``."""
    ops = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted((op for op in ops if window[0] <= op["started"] <= window[1]), key=lambda op: op["started"])


def client_turnaround(ops: list[dict]) -> float:
    """Median time from a job's sampler weights being saved to its next sample arriving: the SDK's
    round trip between two of the job's operations, with nothing of the job's own in between."""
    gaps, saved = [], {}
    for op in ops:
        if op["operation"] == "save_weights_for_sampler":
            saved[op["job"]] = op["started"] + op["seconds"]
        elif op["operation"] == "sample" and op["job"] in saved:
            gaps.append(op["enqueued"] - saved.pop(op["job"]))
    return statistics.median(gaps) if gaps else 0.0


def simulate_packed(durations: dict[str, list[float]], jobs: int, steps: int, factor: float, turnaround_s: float,
                    seed: int) -> tuple[float, float]:
    """(whole-run, steady-state) engine busy of the packed loop on an ideal server.

    The engine runs the same operations (each duration drawn from ``durations``, the run's measured
    ones), round robin over the jobs with ready work, with no time of its own between operations;
    each job's loop is the benchmark's: sample, reward wait of ``factor`` x the mean compute per
    step, forward_backward + optim_step + sampler weights; ``turnaround_s`` of client time before
    each of the job's two submissions.
    """
    rng = random.Random(seed)
    compute = sum(statistics.mean(durations[name]) for name in STEP_OPERATIONS)
    train_ops = STEP_OPERATIONS[1:]
    ready: list[list[tuple[str, float]]] = [[("sample", 0.0)] for _ in range(jobs)]
    done_steps, finished = [0] * jobs, [0.0] * jobs
    rotation, clock, busy, runs = list(range(jobs)), 0.0, 0.0, []
    while any(ready):
        job = next((j for j in rotation if ready[j] and ready[j][0][1] <= clock), None)
        if job is None:
            clock = min(queue[0][1] for queue in ready if queue)
            continue
        rotation.remove(job)
        rotation.append(job)
        name, _ = ready[job].pop(0)
        seconds = rng.choice(durations[name])
        runs.append((clock, clock + seconds))
        clock += seconds
        busy += seconds
        if name == "sample":
            ready[job] = [(op, clock + turnaround_s + factor * compute) for op in train_ops]
        elif name == train_ops[-1]:
            done_steps[job] += 1
            if done_steps[job] < steps:
                ready[job] = [("sample", clock + turnaround_s)]
            else:
                finished[job] = clock
    steady_from, steady_to = (1 + factor) * compute + 2 * turnaround_s, min(finished)
    steady = sum(max(0.0, min(end, steady_to) - max(start, steady_from)) for start, end in runs)
    return busy / max(finished), steady / (steady_to - steady_from)


def packed_bound(trace: Path, mode: Mode, jobs: int, steps: int, factor: float, runs: int = 200) -> dict[str, float]:
    """What an ideal server would reach with this run's operation times and client turnaround.

    On a shared machine the engine's operation times spread widely (coefficient of variation ~0.2
    here, even for an engine alone in its process); at a reward wait of exactly twice the compute
    the engine sits at the knee (N x compute = one job's cycle), where any spread leaves moments
    with every job in its reward wait. The bound separates that from what the server costs.
    """
    ops = read_trace(trace, mode.window)
    durations: dict[str, list[float]] = {name: [] for name in STEP_OPERATIONS}
    for op in ops:
        if op["operation"] in durations:
            durations[op["operation"]].append(op["seconds"])
    turnaround = client_turnaround(ops)
    sims = [simulate_packed(durations, jobs, steps, factor, turnaround, seed) for seed in range(runs)]
    spread = statistics.pstdev(durations["forward_backward"]) / statistics.mean(durations["forward_backward"])
    return {"bound_busy": statistics.mean(whole for whole, _ in sims),
            "bound_busy_steady": statistics.mean(steady for _, steady in sims),
            "client_turnaround_s": turnaround, "forward_backward_cv": spread}


@dataclass
class Pair:
    """A sequential run and the packed run right after it."""

    sequential: Mode
    packed: Mode
    bound: dict[str, float]  # packed_bound of the packed run

    @property
    def ratio(self) -> float:
        return self.packed.wall_s / self.sequential.wall_s

    def ideal(self, jobs: int) -> float:
        """Packed wall over sequential wall if the engine never idled while a job had work: a job's
        cycle (its step alone, reward wait included) or N steps' compute, whichever is longer."""
        cycle = self.sequential.wall_s / self.sequential.steps
        return max(jobs * self.sequential.compute_s, cycle) / (jobs * cycle)


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


def timed_with_busy(fn, busy: Callable[[], float], repeats: int) -> list[tuple[float, float]]:
    """(wall, engine busy) seconds of each call, after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        busy0, t0 = busy(), time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        out.append((wall, busy() - busy0))
    return out


def local_engine(base_model: str, model_id: str = "local"):
    """An engine in this process with one rank-8 job ``model_id``, and the batch to time on it."""
    from kubetune.engine import Engine, LoraSpec
    from kubetune.models.reference import load_base_model

    model, tokenizer = load_base_model(base_model)
    engine = Engine(model, tokenizer, base_model=base_model)
    engine.create_model(model_id, LoraSpec(rank=8, seed=0))
    return engine, fwdbwd_batch(len(tokenizer))


def inprocess_fwdbwd(base_model: str, repeats: int) -> list[tuple[float, float]]:
    """In a process of its own (no SDK threads competing for the GIL): the engine called directly."""
    engine, data = local_engine(base_model)
    return timed_with_busy(lambda: engine.forward_backward("local", data, "cross_entropy"),
                           lambda: engine.busy_seconds, repeats)


def api_overhead(base_url: str, port: int, base_model: str, repeats: int) -> dict[str, float]:
    """API overhead of one forward_backward (batch 8) against the in-process engine call.

    Overhead = API call wall - in-process call wall. The machine's speed drifts by tens of ms between
    minutes on shared machines, far more than the overhead, so both sides are measured net of their
    own compute: per call, wall time minus the engine's busy seconds during it (read from the
    server's ``/metrics`` through the API, from the engine object in process). Through the API that
    leaves the SDK, HTTP both ways, decoding, queueing and the poll's answer, plus what the engine
    call does outside its compute (batch checks and padding); in process it leaves only the latter.
    The overhead is the difference of the two p50s. Rounds alternate (3 x ``repeats`` calls each);
    the raw p50s of both sides are reported too (unpaired: they move with the machine's speed).
    """
    import tinker

    service = tinker.ServiceClient(base_url=base_url, api_key=API_KEY)
    remote = service.create_lora_training_client(base_model=base_model, rank=8, seed=0).result()
    data = fwdbwd_batch(len(remote.get_tokenizer()))
    api: list[tuple[float, float]] = []
    local: list[tuple[float, float]] = []
    for _ in range(3):
        api += timed_with_busy(lambda: remote.forward_backward(data, "cross_entropy").result(),
                               lambda: busy_seconds(port), repeats)
        out = subprocess.run([sys.executable, __file__, "--inprocess", base_model, "--overhead-repeats", str(repeats)],
                             check=True, capture_output=True, text=True).stdout
        local += [(wall, busy) for wall, busy in json.loads(out.strip().splitlines()[-1])]
    api_net = [wall - busy for wall, busy in api]
    local_net = [wall - busy for wall, busy in local]
    return {"api_p50_ms": statistics.median(w for w, _ in api) * 1e3,
            "inprocess_p50_ms": statistics.median(w for w, _ in local) * 1e3,
            "api_net_p50_ms": statistics.median(api_net) * 1e3,
            "inprocess_net_p50_ms": statistics.median(local_net) * 1e3,
            "overhead_p50_ms": (statistics.median(api_net) - statistics.median(local_net)) * 1e3,
            "overhead_p90_ms": (statistics.quantiles(api_net, n=10)[-1] - statistics.median(local_net)) * 1e3}


def server_env(assignments: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` strings as a mapping; a malformed one stops the benchmark before it starts."""
    env = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise SystemExit(f"--server-env expects NAME=VALUE, got {assignment!r}")
        env[name] = value
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="RL steps per job in each mode")
    parser.add_argument("--group", type=int, default=4, help="samples per prompt")
    parser.add_argument("--prompt-tokens", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--latency-factor", type=float, default=2.0, help="reward latency / engine compute per step")
    parser.add_argument("--base-model", default="tiny")
    parser.add_argument("--overhead-repeats", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="sequential/packed pairs; medians are reported")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable for the server process only (repeatable), e.g. GOMP_SPINCOUNT=10000")
    parser.add_argument("--inprocess", metavar="MODEL", help=argparse.SUPPRESS)  # worker of api_overhead
    args = parser.parse_args()
    if args.inprocess:
        print(json.dumps(inprocess_fwdbwd(args.inprocess, args.overhead_repeats)))
        return

    os.environ.setdefault("TINKER_TELEMETRY", "0")
    workdir = Path(tempfile.mkdtemp(prefix="kubetune-bench-"))
    port = free_port()
    trace = workdir / "operations.jsonl"
    server = start_server(args.base_model, workdir, port, env={**os.environ, **server_env(args.server_env)},
                          extra_args=["--op-trace", str(trace)])
    base_url = f"http://127.0.0.1:{port}"
    try:
        caps = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"{base_url}/api/v1/get_server_capabilities", headers={"X-API-Key": API_KEY}), timeout=10).read())
        base_model = caps["supported_models"][0]["model_name"]
        # Overhead first: one client in this process, before the RL jobs' clients (and their
        # heartbeat threads) exist.
        overhead = api_overhead(base_url, port, base_model, args.overhead_repeats)
        monitor = ComputeMonitor(port)
        jobs = [JobProcess(base_url, base_model, seed, args, monitor.value) for seed in range(args.jobs)]
        for job in jobs:
            job.ready()
        # Steps with no reward wait give the monitor its first window, then it follows the engine.
        monitor.update()
        measure(port, jobs[:1], 2 * monitor.window, 0.0, packed=False)
        monitor.update()
        monitor.start()

        # Repeated pairs, each sequential run right before its packed one.
        pairs = []
        for _ in range(args.repeats):
            sequential = measure(port, jobs, args.steps, args.latency_factor, packed=False)
            cycle_s = sequential.wall_s / sequential.steps  # one job's step alone, reward wait included
            packed = measure(port, jobs, args.steps, args.latency_factor, packed=True, cycle_s=cycle_s)
            pairs.append(Pair(sequential, packed,
                              packed_bound(trace, packed, args.jobs, args.steps, args.latency_factor)))
        monitor.stop()
        for job in jobs:
            job.close()
    finally:
        stop_server(server)

    ratio = statistics.median(p.ratio for p in pairs)
    ideal = statistics.median(p.ideal(args.jobs) for p in pairs)
    busy_packed = statistics.median(p.packed.busy_fraction for p in pairs)
    busy_sequential = statistics.median(p.sequential.busy_fraction for p in pairs)
    busy_steady = statistics.median(p.packed.steady_busy or 0.0 for p in pairs)
    bound = statistics.median(p.bound["bound_busy"] for p in pairs)
    bound_steady = statistics.median(p.bound["bound_busy_steady"] for p in pairs)
    print(f"{args.jobs} RL-shaped jobs x {args.steps} steps; group {args.group}, {args.max_tokens} new tokens; "
          f"reward latency {args.latency_factor:g} x the engine compute per step, measured live")
    print(f"{'pair':<6}{'compute':>9}{'wait/c':>8}{'sequential s':>14}{'busy':>7}{'compute':>9}{'wait/c':>8}"
          f"{'packed s':>10}{'busy':>7}{'steady':>8}{'bound':>7}{'steady':>8}{'ratio':>8}{'ideal':>8}")
    for index, p in enumerate(pairs, 1):
        seq, packed = p.sequential, p.packed
        print(f"{index:<6}{seq.compute_s * 1e3:>7.0f}ms{seq.latency_factor:>8.2f}{seq.wall_s:>14.2f}"
              f"{seq.busy_fraction:>7.0%}{packed.compute_s * 1e3:>7.0f}ms{packed.latency_factor:>8.2f}"
              f"{packed.wall_s:>10.2f}{packed.busy_fraction:>7.1%}{packed.steady_busy or 0.0:>8.1%}"
              f"{p.bound['bound_busy']:>7.1%}{p.bound['bound_busy_steady']:>8.1%}{p.ratio:>8.3f}{p.ideal(args.jobs):>8.3f}")
    print(f"median: packed/sequential wall ratio {ratio:.3f} (ideal {ideal:.3f}), busy packed {busy_packed:.1%} "
          f"(steady state, all jobs running: {busy_steady:.1%})")
    print(f"bound (an ideal server with these operation times, forward_backward CV "
          f"{statistics.median(p.bound['forward_backward_cv'] for p in pairs):.2f}, and client turnaround "
          f"{statistics.median(p.bound['client_turnaround_s'] for p in pairs) * 1e3:.1f} ms): "
          f"{bound:.1%} whole run, {bound_steady:.1%} steady state")
    print(f"forward_backward batch 8: API overhead per call p50 {overhead['overhead_p50_ms']:.1f} ms, "
          f"p90 {overhead['overhead_p90_ms']:.1f} ms (wall - engine compute: API p50 {overhead['api_net_p50_ms']:.1f} "
          f"ms, in-process p50 {overhead['inprocess_net_p50_ms']:.1f} ms); raw walls: API p50 "
          f"{overhead['api_p50_ms']:.1f} ms, in-process p50 {overhead['inprocess_p50_ms']:.1f} ms")

    def mode(m: Mode) -> dict[str, float]:
        return {"wall_s": round(m.wall_s, 2), "busy": round(m.busy_fraction, 3),
                "compute_per_step_s": round(m.compute_s, 4), "reward_wait_over_compute": round(m.latency_factor, 3)}

    print(json.dumps({
        "jobs": args.jobs, "steps": args.steps, "ratio": round(ratio, 3), "ideal_ratio": round(ideal, 3),
        "busy_sequential": round(busy_sequential, 3), "busy_packed": round(busy_packed, 3),
        "busy_packed_steady": round(busy_steady, 3), "bound_busy": round(bound, 3),
        "bound_busy_steady": round(bound_steady, 3),
        "pairs": [{"sequential": mode(p.sequential), "packed": mode(p.packed), "ratio": round(p.ratio, 3),
                   "busy_packed_steady": round(p.packed.steady_busy or 0.0, 3),
                   **{k: round(v, 4) for k, v in p.bound.items()}} for p in pairs],
        **{k: round(v, 2) for k, v in overhead.items()},
    }))


if __name__ == "__main__":
    main()
