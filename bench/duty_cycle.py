"""Packing benchmark: N RL-shaped jobs one after another vs all at once on one `kubetune serve`.

Each job step is what an RL loop does against the Tinker API: sample a group of completions from
the current weights, score them (a reward call, simulated by a wait of twice the step's engine
compute, so one job alone keeps the engine busy ~1/3 of the time), then ``forward_backward``
with ``importance_sampling``, ``optim_step`` and the next sampler's weights, submitted together.
The server runs in its own process, driven by the unmodified ``tinker`` SDK over loopback; each job
runs in a process of its own, as separate researchers' loops (or KFP pods) would. The reward wait
follows the engine's compute as measured live (see packing_jobs.ComputeMonitor): the machine's
speed drifts. Packed runs report the engine's busy fraction over the whole run and in steady state
(all jobs running), and what an ideal server would reach with the same operation times
(packing_trace.packed_bound).

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
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import free_port, fwdbwd_batch, local_engine, script_parser, start_server, stop_server
from packing_jobs import API_KEY, ComputeMonitor, JobProcess, Mode, busy_seconds, measure
from packing_trace import packed_bound


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


# ----------------------------------------------------------------------------- API overhead
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
    worker = [sys.executable, __file__, "--inprocess", base_model, "--overhead-repeats", str(repeats)]
    for _ in range(3):
        api += timed_with_busy(lambda: remote.forward_backward(data, "cross_entropy").result(),
                               lambda: busy_seconds(port), repeats)
        out = subprocess.run(worker, check=True, capture_output=True, text=True).stdout
        local += [(wall, busy) for wall, busy in json.loads(out.strip().splitlines()[-1])]
    api_net = [wall - busy for wall, busy in api]
    local_net = [wall - busy for wall, busy in local]
    return {"api_p50_ms": statistics.median(w for w, _ in api) * 1e3,
            "inprocess_p50_ms": statistics.median(w for w, _ in local) * 1e3,
            "api_net_p50_ms": statistics.median(api_net) * 1e3,
            "inprocess_net_p50_ms": statistics.median(local_net) * 1e3,
            "overhead_p50_ms": (statistics.median(api_net) - statistics.median(local_net)) * 1e3,
            "overhead_p90_ms": (statistics.quantiles(api_net, n=10)[-1] - statistics.median(local_net)) * 1e3}


# ----------------------------------------------------------------------------- the run
def server_env(assignments: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` strings as a mapping; a malformed one stops the benchmark before it starts."""
    env = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise SystemExit(f"--server-env expects NAME=VALUE, got {assignment!r}")
        env[name] = value
    return env


def run_pairs(base_url: str, port: int, base_model: str, trace: Path,
              args: argparse.Namespace) -> list[Pair]:
    """Starts the job processes, calibrates the compute monitor, then runs the repeated pairs, each
    sequential run right before its packed one."""
    monitor = ComputeMonitor(port)
    jobs = [JobProcess(base_url, base_model, seed, args, monitor.value) for seed in range(args.jobs)]
    for job in jobs:
        job.ready()
    # Steps with no reward wait give the monitor its first window, then it follows the engine.
    monitor.update()
    measure(port, jobs[:1], 2 * monitor.window, 0.0, packed=False)
    monitor.update()
    monitor.start()
    pairs = []
    for _ in range(args.repeats):
        sequential = measure(port, jobs, args.steps, args.latency_factor, packed=False)
        cycle_s = sequential.wall_s / sequential.steps  # one job's step alone, reward wait included
        packed = measure(port, jobs, args.steps, args.latency_factor, packed=True, cycle_s=cycle_s)
        pairs.append(Pair(sequential, packed,
                          packed_bound(trace, packed.window, args.jobs, args.steps, args.latency_factor)))
    monitor.stop()
    for job in jobs:
        job.close()
    return pairs


def measure_all(args: argparse.Namespace) -> tuple[dict[str, float], list[Pair]]:
    """The API overhead and the pairs, against one ``kubetune serve`` started for them."""
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
        return overhead, run_pairs(base_url, port, base_model, trace, args)
    finally:
        stop_server(server)


# ----------------------------------------------------------------------------- the report
def medians(pairs: list[Pair], jobs: int) -> dict[str, float]:
    med = statistics.median
    return {"ratio": med(p.ratio for p in pairs), "ideal_ratio": med(p.ideal(jobs) for p in pairs),
            "busy_sequential": med(p.sequential.busy_fraction for p in pairs),
            "busy_packed": med(p.packed.busy_fraction for p in pairs),
            "busy_packed_steady": med(p.packed.steady_busy or 0.0 for p in pairs),
            "bound_busy": med(p.bound["bound_busy"] for p in pairs),
            "bound_busy_steady": med(p.bound["bound_busy_steady"] for p in pairs),
            "forward_backward_cv": med(p.bound["forward_backward_cv"] for p in pairs),
            "client_turnaround_s": med(p.bound["client_turnaround_s"] for p in pairs)}


def print_table(pairs: list[Pair], args: argparse.Namespace) -> None:
    print(f"{args.jobs} RL-shaped jobs x {args.steps} steps; group {args.group}, {args.max_tokens} new "
          f"tokens; reward latency {args.latency_factor:g} x the engine compute per step, measured live")
    print(f"{'pair':<6}{'compute':>9}{'wait/c':>8}{'sequential s':>14}{'busy':>7}{'compute':>9}{'wait/c':>8}"
          f"{'packed s':>10}{'busy':>7}{'steady':>8}{'bound':>7}{'steady':>8}{'ratio':>8}{'ideal':>8}")
    for index, p in enumerate(pairs, 1):
        seq, packed = p.sequential, p.packed
        print(f"{index:<6}{seq.compute_s * 1e3:>7.0f}ms{seq.latency_factor:>8.2f}{seq.wall_s:>14.2f}"
              f"{seq.busy_fraction:>7.0%}{packed.compute_s * 1e3:>7.0f}ms{packed.latency_factor:>8.2f}"
              f"{packed.wall_s:>10.2f}{packed.busy_fraction:>7.1%}{packed.steady_busy or 0.0:>8.1%}"
              f"{p.bound['bound_busy']:>7.1%}{p.bound['bound_busy_steady']:>8.1%}{p.ratio:>8.3f}"
              f"{p.ideal(args.jobs):>8.3f}")


def print_summary(m: dict[str, float], overhead: dict[str, float]) -> None:
    print(f"median: packed/sequential wall ratio {m['ratio']:.3f} (ideal {m['ideal_ratio']:.3f}), "
          f"busy packed {m['busy_packed']:.1%} "
          f"(steady state, all jobs running: {m['busy_packed_steady']:.1%})")
    print(f"bound (an ideal server with these operation times, forward_backward CV "
          f"{m['forward_backward_cv']:.2f}, and client turnaround "
          f"{m['client_turnaround_s'] * 1e3:.1f} ms): "
          f"{m['bound_busy']:.1%} whole run, {m['bound_busy_steady']:.1%} steady state")
    print(f"forward_backward batch 8: API overhead per call p50 {overhead['overhead_p50_ms']:.1f} ms, "
          f"p90 {overhead['overhead_p90_ms']:.1f} ms (wall - engine compute: API p50 "
          f"{overhead['api_net_p50_ms']:.1f} ms, in-process p50 {overhead['inprocess_net_p50_ms']:.1f} ms); "
          f"raw walls: API p50 {overhead['api_p50_ms']:.1f} ms, in-process p50 "
          f"{overhead['inprocess_p50_ms']:.1f} ms")


def summary_json(m: dict[str, float], pairs: list[Pair], overhead: dict[str, float],
                 args: argparse.Namespace) -> str:
    def mode(x: Mode) -> dict[str, float]:
        return {"wall_s": round(x.wall_s, 2), "busy": round(x.busy_fraction, 3),
                "compute_per_step_s": round(x.compute_s, 4),
                "reward_wait_over_compute": round(x.latency_factor, 3)}

    keys = ("ratio", "ideal_ratio", "busy_sequential", "busy_packed", "busy_packed_steady", "bound_busy",
            "bound_busy_steady")
    return json.dumps({
        "jobs": args.jobs, "steps": args.steps, **{k: round(m[k], 3) for k in keys},
        "pairs": [{"sequential": mode(p.sequential), "packed": mode(p.packed), "ratio": round(p.ratio, 3),
                   "busy_packed_steady": round(p.packed.steady_busy or 0.0, 3),
                   **{k: round(v, 4) for k, v in p.bound.items()}} for p in pairs],
        **{k: round(v, 2) for k, v in overhead.items()},
    })


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="RL steps per job in each mode")
    parser.add_argument("--group", type=int, default=4, help="samples per prompt")
    parser.add_argument("--prompt-tokens", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--latency-factor", type=float, default=2.0,
                        help="reward latency / engine compute per step")
    parser.add_argument("--base-model", default="tiny")
    parser.add_argument("--overhead-repeats", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3,
                        help="sequential/packed pairs; medians are reported")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable for the server process only (repeatable), "
                             "e.g. GOMP_SPINCOUNT=10000")
    parser.add_argument("--inprocess", metavar="MODEL", help=argparse.SUPPRESS)  # worker of api_overhead
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.inprocess:
        print(json.dumps(inprocess_fwdbwd(args.inprocess, args.overhead_repeats)))
        return
    os.environ.setdefault("TINKER_TELEMETRY", "0")
    overhead, pairs = measure_all(args)
    m = medians(pairs, args.jobs)
    print_table(pairs, args)
    print_summary(m, overhead)
    print(summary_json(m, pairs, overhead, args))


if __name__ == "__main__":
    main()
