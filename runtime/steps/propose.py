"""The autoresearch sweep: its keys, and the second round: configs proposed from the first round's results.

Optuna's ask/tell interface over results that already exist: every finished experiment becomes a
completed trial (its config → its held-out score), then a TPE sampler asks for ``count`` new
configs. ``constant_liar`` keeps the proposals of one batch apart (they are asked before any of
them is told). The search space is the RL sweep's: learning rate, LoRA rank, KL coefficient,
samples per prompt and reward variant; it widens to hold any value the first round used.
"""

from __future__ import annotations

from typing import Any

# What one experiment of the sweep sets (besides its run_name): the one list of the sweep's keys.
# lora_rank goes to the experiment's SFT warm start, the rest to its PPO run.
SWEEP_KEYS: tuple[str, ...] = ("lora_rank", "learning_rate", "kl_coef", "group_size", "reward")


def _recipe_defaults() -> dict[str, Any]:
    """What a config that leaves a key out trains with: the PPO recipe's defaults (its lora_rank is
    the SFT warm start's too)."""
    from dataclasses import fields

    from ..recipes import PPOConfig

    return {f.name: f.default for f in fields(PPOConfig) if f.name in SWEEP_KEYS}


DEFAULT_CONFIG: dict[str, Any] = _recipe_defaults()
FLOAT_RANGES: dict[str, tuple[float, float, bool]] = {"learning_rate": (5e-5, 1e-3, True),
                                                      "kl_coef": (0.0, 0.2, False)}
CHOICES: dict[str, list[Any]] = {"lora_rank": [8, 16, 32], "group_size": [4, 8],
                                 "reward": ["execution", "shaped"]}


def search_space(configs: list[dict[str, Any]]):
    """Optuna distributions over the sweep's keys, widened to contain every value in ``configs``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    space = {}
    for key, (low, high, log) in FLOAT_RANGES.items():
        seen = [float(c.get(key, DEFAULT_CONFIG[key])) for c in configs]
        space[key] = FloatDistribution(min([low, *seen]), max([high, *seen]), log=log)
    for key, choices in CHOICES.items():
        seen = [c.get(key, DEFAULT_CONFIG[key]) for c in configs]
        space[key] = CategoricalDistribution(list(dict.fromkeys([*choices, *seen])))
    return space


def propose_experiments(results: list[dict[str, Any]], count: int, seed: int = 0,
                        prefix: str = "round2") -> list[dict[str, Any]]:
    """``count`` new experiment configs (dicts with a ``run_name``) from finished ``results``
    (``{"config": {...}, "score": float}`` each; higher is better)."""
    import optuna

    if count < 1:
        return []
    if not results:
        raise ValueError("a second round needs the first round's results; got none")
    configs = [{**DEFAULT_CONFIG, **r["config"]} for r in results]
    for result, config in zip(results, configs, strict=True):
        if config["learning_rate"] <= 0:
            raise ValueError(f"experiment {result['config'].get('run_name')!r}: learning_rate must be > 0")
    space = search_space(configs)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(len(results), 4), constant_liar=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for result, config in zip(results, configs, strict=True):
        study.add_trial(optuna.trial.create_trial(params={k: config[k] for k in space}, distributions=space,
                                                  value=float(result["score"])))
    proposals = []
    for i in range(count):
        trial = study.ask(space)
        params = dict(trial.params)
        params["lora_rank"], params["group_size"] = int(params["lora_rank"]), int(params["group_size"])
        # Readable configs; the rounding is far below what the scores can resolve.
        params["learning_rate"] = float(f"{params['learning_rate']:.3g}")
        params["kl_coef"] = round(params["kl_coef"], 3)
        proposals.append({"run_name": f"{prefix}-{i + 1}", **params})
    return proposals
