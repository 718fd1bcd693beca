"""One source per default: the training components, the pipelines and the CLI agree with the recipe configs.

A component's or pipeline's default may differ from its recipe's only through
``kubetune.pipelines.defaults.DELIBERATE_DIFFERENCES`` (with the reason); the CLI's options are
read from the configs, and checked here too.
"""

from __future__ import annotations

import dataclasses

import pytest
import typer.main

from kubetune import components
from kubetune.cli import app
from kubetune.pipelines import DEFAULT_EXPERIMENTS, PIPELINES
from kubetune.pipelines.defaults import DELIBERATE_DIFFERENCES
from kubetune.recipes import DPOConfig, PPOConfig, RunSettings, SFTConfig
from kubetune.steps.propose import SWEEP_KEYS
from kubetune.tasks.text2sql import HELDOUT_SPLITS

# Inputs of a training component that are plumbing, not recipe settings.
PLUMBING = {"dataset", "base_model", "init_model", "model", "metrics", "training_api_url", "reuse_cache"}
COMPONENTS = {"train_sft": SFTConfig, "train_ppo": PPOConfig, "train_dpo": DPOConfig}
# Pipeline parameter -> the recipe field it feeds (pipeline parameters name their recipe when two
# share a name).
PIPELINE_FIELDS = {
    "sft_steps": (SFTConfig, "steps"), "ppo_steps": (PPOConfig, "steps"), "dpo_steps": (DPOConfig, "steps"),
    "prompts_per_step": (PPOConfig, "prompts_per_step"), "group_size": (PPOConfig, "group_size"),
    "ppo_learning_rate": (PPOConfig, "learning_rate"), "kl_coef": (PPOConfig, "kl_coef"),
    "reward": (PPOConfig, "reward"), "dpo_batch_size": (DPOConfig, "batch_size"),
    "dpo_learning_rate": (DPOConfig, "learning_rate"), "beta": (DPOConfig, "beta"),
    "nll_weight": (DPOConfig, "nll_weight"), "pair_prompts": (DPOConfig, "pair_prompts"),
    "eval_examples": (RunSettings, "eval_examples"), "seed": (RunSettings, "seed"),
}


def recipe_default(config_cls, name: str):
    return {f.name: f.default for f in dataclasses.fields(config_cls)}[name]


def expected(owner: str, name: str, recipe_value):
    return DELIBERATE_DIFFERENCES.get((owner, name), (recipe_value, ""))[0]


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_training_component_defaults_are_the_recipe_configs(component: str) -> None:
    config_cls = COMPONENTS[component]
    inputs = getattr(components, component).component_spec.inputs
    settings = {name: spec.default for name, spec in inputs.items() if name not in PLUMBING}
    fields = {f.name for f in dataclasses.fields(config_cls)}
    assert set(settings) <= fields, (f"{component} takes settings its recipe does not have: "
                                     f"{set(settings) - fields}")
    for name, default in settings.items():
        assert default == expected(component, name, recipe_default(config_cls, name)), (component, name)


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_pipeline_parameter_defaults_are_the_recipe_configs(pipeline: str) -> None:
    spec = PIPELINES[pipeline]
    checked = 0
    for name, parameter in spec.component_spec.inputs.items():
        if name in PIPELINE_FIELDS:
            config_cls, field = PIPELINE_FIELDS[name]
            default = expected(spec.name, name, recipe_default(config_cls, field))
            assert parameter.default == default, (pipeline, name)
            checked += 1
    assert checked >= 3


def test_every_listed_difference_is_real_and_explained() -> None:
    pipelines = {spec.name: spec for spec in PIPELINES.values()}
    for (owner, name), (value, reason) in DELIBERATE_DIFFERENCES.items():
        owner_spec = pipelines.get(owner) or getattr(components, owner)
        assert owner_spec.component_spec.inputs[name].default == value and len(reason) > 20
        config_cls, field = PIPELINE_FIELDS.get(name, (None, name))
        assert value != recipe_default(config_cls, field), (f"{owner}.{name} no longer differs: "
                                                            "drop it from the table")


def test_evaluation_and_sweep_keys_are_declared_once() -> None:
    evaluate = components.evaluate_text2sql.component_spec.inputs
    assert evaluate["splits"].default == ",".join(HELDOUT_SPLITS)
    assert evaluate["examples"].default == recipe_default(RunSettings, "eval_examples")
    assert recipe_default(RunSettings, "eval_splits") == HELDOUT_SPLITS
    for experiment in DEFAULT_EXPERIMENTS:
        assert set(experiment) == {"run_name", *SWEEP_KEYS}
    assert set(SWEEP_KEYS) <= {f.name for f in dataclasses.fields(PPOConfig)}


@pytest.mark.parametrize(("command", "config_cls"),
                         [("sft", SFTConfig), ("ppo", PPOConfig), ("dpo", DPOConfig)])
def test_cli_train_options_default_to_the_recipe_configs(command: str, config_cls) -> None:
    click_app = typer.main.get_command(app)
    params = click_app.commands["train"].commands[command].params
    fields = {f.name: f.default for f in dataclasses.fields(config_cls)}
    compared = [p.name for p in params
                if p.name in fields and p.name not in ("data_dir", "out_dir", "base_url")]
    for name in compared:
        assert next(p.default for p in params if p.name == name) == fields[name], (command, name)
    assert len(compared) >= 8
