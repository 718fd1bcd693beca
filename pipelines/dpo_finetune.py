"""dpo_finetune: prepare data → prepare base model → SFT → DPO → evaluate."""

from kfp import dsl

from kubetune.components import train_dpo

from .cluster import ClusterSettings, training_step
from .stages import data_and_sft, evaluate_and_log


def build_dpo_finetune(settings: ClusterSettings = ClusterSettings()):
    """The pipeline, with the Kubernetes settings of ``settings`` on its steps."""

    @dsl.pipeline(name="kubetune-dpo-finetune",
                  description="LoRA SFT then DPO on the policy's own samples, evaluated by execution "
                              "accuracy.")
    def dpo_finetune(data_source: str = "embedded", data_sizes_json: str = "{}", base_model: str = "tiny",
                     pretrain_steps: int = -1, sft_steps: int = 400, dpo_steps: int = 60,
                     dpo_batch_size: int = 8, dpo_learning_rate: float = 3e-4, beta: float = 0.5,
                     nll_weight: float = 1.0,
                     pair_prompts: int = 200, eval_examples: int = 100, seed: int = 0,
                     training_api_url: str = "", mlflow_tracking_uri: str = "",
                     mlflow_experiment: str = "kubetune-text2sql", register_name: str = "") -> float:
        """Defaults run the embedded task on the tiny model; point base_model and training_api_url at a
        real model and a shared kubetune server on a cluster."""
        data, sft = data_and_sft(settings, data_source=data_source, data_sizes_json=data_sizes_json,
                                 base_model=base_model, pretrain_steps=pretrain_steps, sft_steps=sft_steps,
                                 seed=seed, training_api_url=training_api_url)
        dpo = train_dpo(dataset=data.outputs["dataset"], init_model=sft.outputs["model"], steps=dpo_steps,
                        batch_size=dpo_batch_size, learning_rate=dpo_learning_rate, beta=beta,
                        nll_weight=nll_weight, pair_prompts=pair_prompts, seed=seed, eval_examples=0,
                        training_api_url=training_api_url)
        training_step(dpo, settings)
        evaluation = evaluate_and_log(settings, data, dpo, eval_examples=eval_examples,
                                      training_api_url=training_api_url, tracking_uri=mlflow_tracking_uri,
                                      experiment=mlflow_experiment,
                                      run_name="dpo_finetune", register_name=register_name)
        return evaluation.outputs["Output"]

    return dpo_finetune


dpo_finetune = build_dpo_finetune()
