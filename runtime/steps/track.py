"""MLflow steps: one run per trained model, and the sweep's fan-in (best experiment, comparison)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..observability.tracking import log_run, set_parent
from .artifacts import read_model_info


def log_to_mlflow(model_dir: str | Path, metrics: dict[str, float], *, tracking_uri: str = "",
                  experiment: str = "kubetune-text2sql", run_name: str = "", register_name: str = "",
                  parent_run_id: str = "", report: str | Path | None = None) -> str:
    """One MLflow run for a trained model artifact: its recipe config as params, ``metrics``, the
    adapter, the training log and the report as artifacts; optionally a registry version. Returns
    the run id."""
    info = read_model_info(model_dir)
    model_dir = Path(model_dir)
    result_path = model_dir / "run" / "result.json"
    config = json.loads(result_path.read_text())["config"] if result_path.is_file() else {}
    params = {**{k: v for k, v in config.items()
                 if k not in ("data_dir", "out_dir", "checkpoint_dir", "api_key")},
              "recipe": info.get("recipe", "base"), "base_model": info["base_model"]}
    if info.get("lora_rank") is not None:
        params["lora_rank"] = info["lora_rank"]  # the adapter's, not a continued run's unused setting
    artifacts: dict[str, str | Path] = {"training": model_dir / "run"}
    if info.get("adapter"):
        artifacts["adapter"] = model_dir / info["adapter"]
    if report is not None:
        artifacts["report"] = report
    return log_run(tracking_uri, experiment, run_name or f"{info.get('recipe', 'model')}", params=params,
                   metrics=metrics, artifacts=artifacts, parent_run_id=parent_run_id or None,
                   register_as=(register_name or None) if info.get("adapter") else None,
                   tags={"kubetune.state_path": info.get("state_path", "")})


def select_best(names: list[str], scores: list[float], model_dirs: list[str], *, metric: str,
                run_ids: list[str] | None = None, experiments: list[dict[str, Any]] | None = None,
                tracking_uri: str = "", experiment: str = "kubetune-text2sql",
                sweep_name: str = "autoresearch", plot_path: str | Path | None = None,
                previous: dict[str, Any] | None = None, previous_best_dir: str | Path | None = None,
                best_model_uri: str = "") -> dict[str, Any]:
    """Picks the experiment with the highest score (ties: the earlier one) and writes a comparison
    table (Markdown) and bar plot (PNG). With ``run_ids`` (the experiments' MLflow runs) it opens the
    sweep's parent run, makes those runs its children and logs the comparison there.

    ``previous`` is an earlier round's summary (what this returns) and ``previous_best_dir`` that
    round's winning model: the ranking then covers both rounds, and the new runs join the earlier
    round's parent run. ``best_model_uri`` (where the winner's copy goes) is tagged on the parent."""
    if not (len(names) == len(scores) == len(model_dirs)) or not names:
        raise ValueError(f"select_best needs one name, score and model per experiment; got {len(names)}, "
                         f"{len(scores)}, {len(model_dirs)}")
    # KFP carries numbers in protobuf Structs, so a config's ints arrive as floats (4 → 4.0).
    experiments = [{k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in e.items()}
                   for e in experiments] if experiments else [{"run_name": name} for name in names]
    round_ = (previous or {}).get("round", 0) + 1
    earlier = list((previous or {}).get("results", []))
    results = earlier + [{"run_name": name, "score": float(score), "config": config, "round": round_,
                          "run_id": (run_ids or [""] * len(names))[i]}
                         for i, (name, score, config)
                         in enumerate(zip(names, scores, experiments, strict=True))]
    dirs = [str(previous_best_dir) if previous and r["run_name"] == previous["name"] else None
            for r in earlier]
    dirs += [str(d) for d in model_dirs]
    best = max(range(len(results)), key=lambda i: (results[i]["score"], -i))
    order = sorted(range(len(results)), key=lambda i: (-results[i]["score"], i))
    table = "\n".join([f"| rank | experiment | round | {metric} |", "|---|---|---|---|",
                       *(f"| {rank} | {results[i]['run_name']}{' (best)' if i == best else ''} "
                         f"| {results[i]['round']} | {results[i]['score']:.3f} |"
                         for rank, i in enumerate(order, 1))]) + "\n"
    if plot_path is not None:
        _bar_plot([r["run_name"] for r in results], [r["score"] for r in results], best, metric,
                  Path(plot_path))
    parent = (previous or {}).get("parent_run_id", "")
    if run_ids:
        artifacts = {"": plot_path} if plot_path else {}
        parent = log_run(tracking_uri, experiment, sweep_name, run_id=parent or None, params={
            f"round{round_}_experiments": experiments, f"round{round_}_n_experiments": len(names),
            f"round{round_}_best_experiment": results[best]["run_name"]},
            metrics={f"best/{metric}": results[best]["score"], "rounds": round_}, artifacts=artifacts,
            texts={"comparison.md": table},
            tags={"kubetune.sweep": "parent", "best_experiment": results[best]["run_name"],
                  "kubetune.best_model": best_model_uri})
        set_parent(tracking_uri, list(run_ids), parent)
    return {"best": best, "name": results[best]["run_name"], "score": results[best]["score"],
            "model_dir": dirs[best], "table": table, "parent_run_id": parent, "results": results,
            "round": round_, "metric": metric}


def _bar_plot(names: list[str], scores: list[float], best: int, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3))
    ax.bar(names, scores, color=["tab:green" if i == best else "tab:gray" for i in range(len(names))])
    ax.set_ylabel(metric)
    ax.set_ylim(0, max(1.0, max(scores)))
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
