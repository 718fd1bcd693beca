"""A finished autoresearch sweep, read back from MLflow: one row per experiment, the winner, where its
model is. MLflow is the record both locally and on a cluster, so this works for either."""

from __future__ import annotations

import json
import re
from typing import Any

from rich import box
from rich.table import Table

from kubetune.steps.propose import SWEEP_KEYS
from kubetune.tasks.text2sql import HELDOUT_SPLITS as SPLITS


def latest_sweep(tracking_uri: str, experiment: str) -> dict[str, Any]:
    """The most recent sweep (parent run) in ``experiment`` and its experiments, best first."""
    import mlflow

    from kubetune.observability.tracking import resolve_tracking_uri

    client = mlflow.MlflowClient(resolve_tracking_uri(tracking_uri))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri or 'runs/mlflow'}; "
                         "run a sweep first")
    parents = client.search_runs([found.experiment_id], "tags.`kubetune.sweep` = 'parent'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise ValueError(f"MLflow experiment {experiment!r} holds no sweep "
                         "(no run tagged kubetune.sweep=parent)")
    parent = parents[0]
    rounds = {}
    for key, value in parent.data.params.items():
        if match := re.fullmatch(r"round(\d+)_experiments", key):
            for config in json.loads(value):
                rounds[config.get("run_name")] = int(match.group(1))
    children = client.search_runs([found.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    rows = [{"run_name": run.info.run_name, "run_id": run.info.run_id, "round": rounds.get(run.info.run_name),
             **{k: run.data.params.get(k) for k in SWEEP_KEYS},
             **{split: run.data.metrics.get(f"{split}/accuracy") for split in SPLITS}} for run in children]
    rows.sort(key=lambda r: (-(r["heldout_paraphrase"] or 0.0), r["round"] or 0, r["run_name"]))
    return {"parent_run_id": parent.info.run_id, "best": parent.data.tags.get("best_experiment"),
            "best_model": parent.data.tags.get("kubetune.best_model"), "rows": rows}


def sweep_table(report: dict[str, Any]) -> Table:
    """The sweep as a rich table, best first; fits an 80-column terminal."""
    table = Table(title="autoresearch: held-out execution accuracy, best paraphrase first",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  caption="config: LoRA rank, learning rate, KL coefficient, samples per prompt, reward "
                          "(exec: execution only)")
    table.add_column("experiment", no_wrap=True)  # second-round names say so: round2-1, ...
    table.add_column("config", no_wrap=True)
    for split in SPLITS:
        table.add_column(split.removeprefix("heldout_"), justify="right")
    for row in report["rows"]:
        name = f"[bold green]{row['run_name']} *[/]" if row["run_name"] == report["best"] else row["run_name"]
        config = (f"r{row['lora_rank']} {_short(row['learning_rate'])} kl{_short(row['kl_coef'])} "
                  f"G{row['group_size']} {'exec' if row['reward'] == 'execution' else row['reward']}")
        accuracy = [f"{row[s]:.2f}" if row[s] is not None else "-" for s in SPLITS]
        table.add_row(name, config, *accuracy)
    return table


def _short(value: str | None) -> str:
    """2e-4, 5.4e-5, 0.05: numbers as a researcher writes them in a config."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    if number == 0 or abs(number) >= 0.01:
        return f"{number:g}"
    mantissa, exponent = f"{number:.1e}".split("e")
    mantissa = mantissa.removesuffix(".0")
    return f"{mantissa}e{int(exponent)}"
