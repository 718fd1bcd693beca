"""What an ideal server would reach in a packed run of bench/duty_cycle.py (not a benchmark itself):
the run's operation times and client turnaround, read from the server's ``--op-trace``, replayed on
a simulated engine that never idles while a job has work."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

from packing_jobs import STEP_OPERATIONS


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


def simulate_packed(durations: dict[str, list[float]], jobs: int, steps: int, factor: float,
                    turnaround_s: float, seed: int) -> tuple[float, float]:
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


def packed_bound(trace: Path, window: tuple[float, float], jobs: int, steps: int, factor: float,
                 runs: int = 200) -> dict[str, float]:
    """What an ideal server would reach with the operation times and client turnaround of the run
    inside ``window``.

    On a shared machine the engine's operation times spread widely (coefficient of variation ~0.2
    here, even for an engine alone in its process); at a reward wait of exactly twice the compute
    the engine sits at the knee (N x compute = one job's cycle), where any spread leaves moments
    with every job in its reward wait. The bound separates that from what the server costs.
    """
    ops = read_trace(trace, window)
    durations: dict[str, list[float]] = {name: [] for name in STEP_OPERATIONS}
    for op in ops:
        if op["operation"] in durations:
            durations[op["operation"]].append(op["seconds"])
    turnaround = client_turnaround(ops)
    sims = [simulate_packed(durations, jobs, steps, factor, turnaround, seed) for seed in range(runs)]
    fwdbwd = durations["forward_backward"]
    return {"bound_busy": statistics.mean(whole for whole, _ in sims),
            "bound_busy_steady": statistics.mean(steady for _, steady in sims),
            "client_turnaround_s": turnaround,
            "forward_backward_cv": statistics.pstdev(fwdbwd) / statistics.mean(fwdbwd)}
