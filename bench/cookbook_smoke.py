"""tinker-cookbook 0.6.1's own trainers (SFT, RL, DPO) against `kubetune serve` on loopback.

A smoke run, not a timed benchmark: it starts ``kubetune serve`` with a tiny local model, runs the
cookbook's unmodified ``supervised.train``, ``rl.train`` and ``preference.train_dpo`` loops for a
few steps each on text-to-SQL data written to local JSONL files, and prints a PASS/FAIL row for
each run of the compatibility matrix (12 runs; what each covers: tests/helpers/cookbook.py, the
harness this script shares with tests/api/test_cookbook.py).

    .venv/bin/python bench/cookbook_smoke.py                      # all runs, base model "tiny"
    .venv/bin/python bench/cookbook_smoke.py --base-model DIR --only sft,dpo --keep
    .venv/bin/python bench/cookbook_smoke.py --base-url http://127.0.0.1:8000 --api-key tml-...

Requires ``pip install --no-deps tinker-cookbook==0.6.1`` plus its light dependencies (the Makefile's
install step does both).
"""

from __future__ import annotations

import functools
import shutil
import sys
import tempfile
from pathlib import Path

from common import ROOT, free_port, script_parser, start_server, stop_server

# The harness lives with the tests (tests/api/test_cookbook.py runs part of the same matrix), which
# import it as `helpers.cookbook` from tests/ (pytest's pythonpath); this script does the same.
sys.path.insert(0, str(ROOT / "tests"))
from helpers.cookbook import (  # noqa: E402
    RUNS,
    Outcome,
    add_settings_args,
    advertised_model,
    child_env,
    refused_requests,
    run_matrix,
    settings_from_args,
    write_data,
)

say = functools.partial(print, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--base-model", default="tiny", help="what `kubetune serve --base-model` gets")
    parser.add_argument("--only", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    add_settings_args(parser)
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per trainer run")
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temp dir)")
    parser.add_argument("--base-url", default=None, help="use a running server instead of starting one")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    runs = [r.strip() for r in args.only.split(",") if r.strip()]
    if unknown := set(runs) - set(RUNS):
        parser.error(f"unknown runs {sorted(unknown)}")

    work = args.work or Path(tempfile.mkdtemp(prefix="kubetune-cookbook-"))
    work.mkdir(parents=True, exist_ok=True)
    write_data(work / "data", settings.schema_in_prompt)
    server = None
    base_url = args.base_url
    outcomes: list[Outcome] = []
    try:
        if base_url is None:
            port = free_port()
            say(f"starting kubetune serve --base-model {args.base_model} on port {port} …")
            server = start_server(args.base_model, work, port, timeout_s=300, env=child_env())
            base_url = f"http://127.0.0.1:{port}"
        model = advertised_model(base_url, settings.api_key)
        say(f"server {base_url} advertises {model}")
        outcomes = run_matrix(runs, model, base_url, work, settings, args.timeout, log=say)
        for line in refused_requests(base_url):
            say(f"server refused: {line}")
    finally:
        if server is not None:
            stop_server(server)
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs in {work}")
    failed = [o.name for o in outcomes if not o.ok] + runs[len(outcomes):]
    print(f"{len(runs) - len(failed)}/{len(runs)} cookbook runs passed"
          + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
