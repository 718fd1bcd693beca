"""autoresearch: parallel text-to-SQL experiments from one dataset and base model, compared in MLflow.

One ``dsl.ParallelFor`` over a list of experiment configs (a single loop over dicts: kfp's local
runner gets nested loops wrong), each branch SFT → PPO → evaluate → a child MLflow run, then
``dsl.Collected`` fans in to ``select_best``, which picks the winner by held-out execution accuracy
and logs the comparison table and plot to the parent run. Branches with the same LoRA rank share
one SFT warm start (``reuse_cache``: identical SFT runs are trained once). With ``second_round``
> 0, ``propose_experiments`` asks Optuna for that many new configs given the first round's scores,
they run the same way, and a second ``select_best`` ranks both rounds under the same parent run.
On a cluster every branch trains on one shared kubetune server (``training_api_url``), packed onto
one accelerator.
"""

from kfp import dsl

from kubetune.components import (
    evaluate_text2sql,
    log_to_mlflow,
    prepare_base_model,
    prepare_text2sql_data,
    propose_experiments,
    select_best,
    train_ppo,
    train_sft,
)

from .cluster import ClusterSettings, cache_step, evaluation_step, tracking_step, training_step

# Execution-only vs shaped reward, KL or not, LoRA rank, learning rate, samples per prompt.
DEFAULT_EXPERIMENTS = [
    {"run_name": "exec-r16", "lora_rank": 16, "learning_rate": 2e-4, "kl_coef": 0.0, "group_size": 8,
     "reward": "execution"},
    {"run_name": "shaped-r16", "lora_rank": 16, "learning_rate": 2e-4, "kl_coef": 0.0, "group_size": 8,
     "reward": "shaped"},
    {"run_name": "exec-kl-r16", "lora_rank": 16, "learning_rate": 2e-4, "kl_coef": 0.05, "group_size": 8,
     "reward": "execution"},
    {"run_name": "exec-r8-lr5e-4", "lora_rank": 8, "learning_rate": 5e-4, "kl_coef": 0.0, "group_size": 4,
     "reward": "execution"},
]


def _experiment(settings: ClusterSettings, config, data, base, *, sft_steps, ppo_steps, prompts_per_step,
                eval_examples, seed, training_api_url, reuse_cache, tracking_uri, experiment):
    """One loop branch: SFT at the config's rank → PPO with its RL settings → evaluate → MLflow run.
    Returns the evaluation, PPO and logging tasks (what the fan-in collects)."""
    sft = training_step(train_sft(dataset=data.outputs["dataset"], base_model=base.outputs["model"],
                                  steps=sft_steps, lora_rank=config.lora_rank, seed=seed, eval_examples=0,
                                  training_api_url=training_api_url, reuse_cache=reuse_cache), settings)
    ppo = training_step(train_ppo(dataset=data.outputs["dataset"], init_model=sft.outputs["model"],
                                  steps=ppo_steps, prompts_per_step=prompts_per_step,
                                  group_size=config.group_size, learning_rate=config.learning_rate,
                                  kl_coef=config.kl_coef, reward=config.reward, seed=seed, eval_examples=0,
                                  training_api_url=training_api_url), settings)
    evaluation = evaluation_step(evaluate_text2sql(dataset=data.outputs["dataset"],
                                                   model=ppo.outputs["model"], examples=eval_examples,
                                                   training_api_url=training_api_url),
                                 settings)
    # Runs are re-parented under the sweep by select_best: kfp.local hands a loop body the
    # loop item instead of an outer task's output parameter (kfp 2.17), so none goes in.
    logged = tracking_step(log_to_mlflow(model=ppo.outputs["model"], training_metrics=ppo.outputs["metrics"],
                                         evaluation=evaluation.outputs["metrics"],
                                         report=evaluation.outputs["report"],
                                         tracking_uri=tracking_uri, experiment=experiment,
                                         run_name=config.run_name), settings)
    return evaluation, ppo, logged


def _fan_in(settings: ClusterSettings, experiments, evaluation, ppo, logged, **kwargs):
    """select_best over one loop's collected scores, models and MLflow runs (kwargs: tracking, an
    earlier round)."""
    return tracking_step(select_best(experiments=experiments,
                                     scores=dsl.Collected(evaluation.outputs["Output"]),
                                     models=dsl.Collected(ppo.outputs["model"]),
                                     run_ids=dsl.Collected(logged.output),
                                     **kwargs), settings)


def build_autoresearch(settings: ClusterSettings = ClusterSettings()):
    """The pipeline, with the Kubernetes settings of ``settings`` on its steps."""

    @dsl.pipeline(name="kubetune-autoresearch",
                  description="A sweep of RL experiments on text-to-SQL, fanned out in parallel and "
                              "compared in MLflow.")
    def autoresearch(experiments: list = DEFAULT_EXPERIMENTS, second_round: int = 0,
                     data_source: str = "embedded", data_sizes_json: str = "{}", base_model: str = "tiny",
                     pretrain_steps: int = -1, sft_steps: int = 400, ppo_steps: int = 60,
                     prompts_per_step: int = 4, eval_examples: int = 100,
                     seed: int = 0, training_api_url: str = "", reuse_cache: str = "auto",
                     mlflow_tracking_uri: str = "", mlflow_experiment: str = "kubetune-autoresearch"):
        """Defaults run four experiments on the embedded task and the tiny model; second_round > 0 adds
        that many Optuna-proposed experiments."""
        data = prepare_text2sql_data(source=data_source, seed=seed, sizes_json=data_sizes_json)
        base = cache_step(prepare_base_model(reference=base_model, seed=seed, pretrain_steps=pretrain_steps),
                          settings)
        branch = dict(sft_steps=sft_steps, ppo_steps=ppo_steps, prompts_per_step=prompts_per_step,
                      eval_examples=eval_examples, seed=seed, training_api_url=training_api_url,
                      reuse_cache=reuse_cache, tracking_uri=mlflow_tracking_uri, experiment=mlflow_experiment)
        with dsl.ParallelFor(experiments, parallelism=4) as config:
            evaluation, ppo, logged = _experiment(settings, config, data, base, **branch)
        tracking = dict(tracking_uri=mlflow_tracking_uri, experiment=mlflow_experiment)
        first = _fan_in(settings, experiments, evaluation, ppo, logged, **tracking)
        with dsl.If(second_round > 0, name="second-round"):
            proposal = propose_experiments(summary=first.outputs["Output"], count=second_round, seed=seed)
            with dsl.ParallelFor(proposal.output, parallelism=4) as config:
                evaluation, ppo, logged = _experiment(settings, config, data, base, **branch)
            _fan_in(settings, proposal.output, evaluation, ppo, logged, **tracking,
                    previous=first.outputs["Output"], previous_best=first.outputs["best_model"])

    return autoresearch


autoresearch = build_autoresearch()
