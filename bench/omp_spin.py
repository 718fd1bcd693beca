"""Engine speed under different libgomp spin counts, measured in turns (the machine's drift cancels).

libgomp (torch's OpenMP runtime on CPU) lets a pool thread busy-wait after each parallel region
(``GOMP_SPINCOUNT``, 300,000 spins by default; 0 with ``OMP_WAIT_POLICY=PASSIVE``). A shorter spin
frees the core sooner for other threads (in ``kubetune serve``: the HTTP event loop), at the price
of waking the pool thread for the next region. One engine process per spin count, all loaded at
once; each turn runs one ``forward_backward`` (8 x 64 tokens, LoRA rank 8) and one ``sample``
(4 x 24 tokens) in one process, the processes taking turns in alternating order.

    python bench/omp_spin.py                       # 300000 (default) vs 10000 vs 1000 vs 0
    python bench/omp_spin.py --spins 300000,0 --turns 30

Prints per-variant medians and the median ratio of each variant's time to the first's, turn by turn.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from common import local_engine, script_parser


def worker(base_model: str) -> None:
    """One engine process: times one forward_backward and one sample per line read from stdin."""
    from tinker import types

    engine, data = local_engine(base_model)
    params = types.SamplingParams(max_tokens=24, temperature=1.0, stop=[])
    prompt = list(range(4, 52))
    for _ in range(3):  # warm-up
        engine.forward_backward("local", data, "cross_entropy")
        engine.sample(prompt, 4, params, model_id="local")
    print("ready", flush=True)
    for _ in sys.stdin:
        t0 = time.perf_counter()
        engine.forward_backward("local", data, "cross_entropy")
        t1 = time.perf_counter()
        engine.sample(prompt, 4, params, model_id="local")
        print(t1 - t0, time.perf_counter() - t1, flush=True)


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--spins", default="300000,10000,1000,0",
                        help="GOMP_SPINCOUNT values; the first is the reference")
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--base-model", default="tiny")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one engine process
    args = parser.parse_args()
    if args.worker:
        worker(args.base_model)
        return
    spins = args.spins.split(",")
    workers = {}
    for spin in spins:
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"GOMP_SPINCOUNT": spin}
        workers[spin] = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--base-model", args.base_model],
            env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        for spin, process in workers.items():
            if process.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
                raise SystemExit(f"the engine process with GOMP_SPINCOUNT={spin} failed to start")
        times: dict[str, list[tuple[float, float]]] = {spin: [] for spin in spins}
        for turn in range(args.turns):
            for spin in spins if turn % 2 == 0 else spins[::-1]:
                process = workers[spin]
                process.stdin.write("go\n")  # type: ignore[union-attr]
                process.stdin.flush()  # type: ignore[union-attr]
                fwdbwd, sample = map(float, process.stdout.readline().split())  # type: ignore[union-attr]
                times[spin].append((fwdbwd, sample))
    finally:
        for process in workers.values():
            process.stdin.close()  # type: ignore[union-attr]
            process.wait(timeout=60)
    reference = times[spins[0]]
    print(f"{'GOMP_SPINCOUNT':>14}{'fwd/bwd p50':>13}{'sample p50':>12}{'fwd/bwd ratio':>15}"
          f"{'sample ratio':>14}")
    for spin in spins:
        runs = times[spin]
        ratio_fb = statistics.median(a[0] / b[0] for a, b in zip(runs, reference, strict=True))
        ratio_sample = statistics.median(a[1] / b[1] for a, b in zip(runs, reference, strict=True))
        print(f"{spin:>14}{statistics.median(r[0] for r in runs) * 1e3:>10.1f} ms"
              f"{statistics.median(r[1] for r in runs) * 1e3:>9.1f} ms{ratio_fb:>15.3f}{ratio_sample:>14.3f}")


if __name__ == "__main__":
    main()
