"""rl_finetune: prepare data → prepare base model → SFT → PPO → evaluate."""

from kfp import dsl

from kubetune.components import train_ppo

from .cluster import ClusterSettings, training_step
from .stages import data_and_sft, evaluate_and_log


def build_rl_finetune(settings: ClusterSettings = ClusterSettings()):
    """The pipeline, with the Kubernetes settings of ``settings`` on its steps."""

    @dsl.pipeline(name="kubetune-rl-finetune",
                  description="LoRA SFT then GRPO-style PPO on text-to-SQL, evaluated by execution accuracy.")
    def rl_finetune(data_source: str = "embedded", data_sizes_json: str = "{}", base_model: str = "tiny",
                    pretrain_steps: int = -1, sft_steps: int = 400, ppo_steps: int = 150,
                    prompts_per_step: int = 4, group_size: int = 8, ppo_learning_rate: float = 2e-4,
                    kl_coef: float = 0.0,
                    reward: str = "execution", eval_examples: int = 100, seed: int = 0,
                    training_api_url: str = "", mlflow_tracking_uri: str = "",
                    mlflow_experiment: str = "kubetune-text2sql", register_name: str = "") -> float:
        """Defaults run the embedded task on the tiny model; point base_model and training_api_url at a
        real model and a shared kubetune server on a cluster."""
        data, sft = data_and_sft(settings, data_source=data_source, data_sizes_json=data_sizes_json,
                                 base_model=base_model, pretrain_steps=pretrain_steps, sft_steps=sft_steps,
                                 seed=seed, training_api_url=training_api_url)
        ppo = train_ppo(dataset=data.outputs["dataset"], init_model=sft.outputs["model"], steps=ppo_steps,
                        prompts_per_step=prompts_per_step, group_size=group_size,
                        learning_rate=ppo_learning_rate, kl_coef=kl_coef, reward=reward, seed=seed,
                        eval_examples=0, training_api_url=training_api_url)
        training_step(ppo, settings)
        evaluation = evaluate_and_log(settings, data, ppo, eval_examples=eval_examples,
                                      training_api_url=training_api_url, tracking_uri=mlflow_tracking_uri,
                                      experiment=mlflow_experiment,
                                      run_name="rl_finetune", register_name=register_name)
        return evaluation.outputs["Output"]

    return rl_finetune


rl_finetune = build_rl_finetune()
