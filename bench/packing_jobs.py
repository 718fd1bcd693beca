"""The RL-shaped jobs of bench/duty_cycle.py (not a benchmark itself): each in a process of its own
with its own SDK client, the live measure of the engine's compute they set their reward wait from,
and one run of their steps, one job after another or all at once."""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import re
import threading
import time
import urllib.request
from dataclasses import dataclass

import numpy as np

API_KEY = "tml-bench"
STEP_OPERATIONS = ("sample", "forward_backward", "optim_step", "save_weights_for_sampler")  # once per step


@dataclass
class Mode:
    """One run of the jobs' steps, one after another or all at once."""

    wall_s: float
    busy_s: float
    steps: int  # all jobs' steps together
    reward_wait_s: float  # all jobs' reward waits together
    steady_busy: float | None = None  # packed only: busy while all jobs run (see measure)
    # time.monotonic() at its start and end (the op trace's clock)
    window: tuple[float, float] = (0.0, 0.0)

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


# ----------------------------------------------------------------------------- the server's /metrics
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
        # seconds per step; 0 = unknown
        self.value = multiprocessing.get_context("spawn").Value("d", 0.0)
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


# ----------------------------------------------------------------------------- one job
class RLJob:
    """One RL-shaped job: its own SDK client and LoRA adapter on the shared server."""

    def __init__(self, base_url: str, base_model: str, seed: int, args: argparse.Namespace) -> None:
        import tinker
        from tinker import types

        self.types = types
        self.args = args
        self.service = tinker.ServiceClient(base_url=base_url, api_key=API_KEY)
        self.trainer = self.service.create_lora_training_client(base_model=base_model, rank=8,
                                                                seed=seed).result()
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
        data = [self.datum(list(seq.tokens), list(seq.logprobs), float(advantage))
                for seq, advantage in zip(result.sequences, advantages, strict=True)]
        # Submitted together before any is awaited, as tinker-cookbook's RL loop pipelines
        # forward_backward and optim_step: each request's round trip overlaps the one before it
        # (seq_ids keep them in order), and the next step's sampler is published right behind them.
        fwd = self.trainer.forward_backward(data, "importance_sampling")
        opt = self.trainer.optim_step(types.AdamParams(learning_rate=1e-4))
        self.next_sampler = self.trainer.save_weights_and_get_sampling_client()
        fwd.result()
        opt.result()
        return reward_latency_s

    def datum(self, completion: list[int], logprobs: list[float], advantage: float):
        """The ``importance_sampling`` datum of one sampled completion of the job's prompt."""
        types = self.types
        tokens = self.prompt + completion
        n_prompt = len(self.prompt) - 1
        sampled = [0.0] * n_prompt + logprobs
        adv = [0.0] * n_prompt + [advantage] * len(completion)
        return types.Datum(
            model_input=types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={
                "target_tokens": types.TensorData.from_numpy(np.array(tokens[1:], dtype=np.int64)),
                "logprobs": types.TensorData.from_numpy(np.array(sampled, dtype=np.float32)),
                "advantages": types.TensorData.from_numpy(np.array(adv, dtype=np.float32)),
            },
        )

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

    def __init__(self, base_url: str, base_model: str, seed: int, args: argparse.Namespace,
                 compute) -> None:
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


# ----------------------------------------------------------------------------- one run of all jobs
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
                reward_wait_s=waited, steady_busy=(busy2 - busy1) / (t2 - t1),
                window=(m0, time.monotonic()))
