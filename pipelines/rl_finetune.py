"""rl_finetune: prepare data → prepare base model → SFT → PPO → evaluate."""

from kfp import dsl

from kubetune.components import (
    evaluate_text2sql,
    log_to_mlflow,
    prepare_base_model,
    prepare_text2sql_data,
    train_ppo,
    train_sft,
)

from .cluster import ClusterSettings, cache_step, tracking_step, training_step


def build_rl_finetune(settings: ClusterSettings = ClusterSettings()):
    """The pipeline, with the Kubernetes settings of ``settings`` on its steps."""

    @dsl.pipeline(name="kubetune-rl-finetune",
                  description="LoRA SFT then GRPO-style PPO on text-to-SQL, evaluated by execution accuracy.")
    def rl_finetune(data_source: str = "embedded", data_sizes_json: str = "{}", base_model: str = "tiny",
                    pretrain_steps: int = -1, sft_steps: int = 400, ppo_steps: int = 150, prompts_per_step: int = 4,
                    group_size: int = 8, ppo_learning_rate: float = 2e-4, kl_coef: float = 0.0,
                    reward: str = "execution", eval_examples: int = 100, seed: int = 0,
                    training_api_url: str = "", mlflow_tracking_uri: str = "",
                    mlflow_experiment: str = "kubetune-text2sql", register_name: str = "") -> float:
        """Defaults run the embedded task on the tiny model; point base_model and training_api_url at a
        real model and a shared kubetune server on a cluster."""
        data = prepare_text2sql_data(source=data_source, seed=seed, sizes_json=data_sizes_json)
        base = prepare_base_model(reference=base_model, seed=seed, pretrain_steps=pretrain_steps)
        sft = train_sft(dataset=data.outputs["dataset"], base_model=base.outputs["model"], steps=sft_steps, seed=seed,
                        eval_examples=0, training_api_url=training_api_url)
        ppo = train_ppo(dataset=data.outputs["dataset"], init_model=sft.outputs["model"], steps=ppo_steps,
                        prompts_per_step=prompts_per_step, group_size=group_size, learning_rate=ppo_learning_rate,
                        kl_coef=kl_coef, reward=reward, seed=seed, eval_examples=0, training_api_url=training_api_url)
        for task in (sft, ppo):
            training_step(task, settings)
        cache_step(base, settings)
        evaluation = evaluate_text2sql(dataset=data.outputs["dataset"], model=ppo.outputs["model"],
                                       examples=eval_examples)
        logged = log_to_mlflow(model=ppo.outputs["model"], training_metrics=ppo.outputs["metrics"],
                               evaluation=evaluation.outputs["metrics"], report=evaluation.outputs["report"],
                               tracking_uri=mlflow_tracking_uri, experiment=mlflow_experiment,
                               run_name="rl_finetune", register_name=register_name)
        tracking_step(logged, settings)
        return evaluation.outputs["Output"]

    return rl_finetune


rl_finetune = build_rl_finetune()
