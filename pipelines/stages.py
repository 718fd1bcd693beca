"""Stages the fine-tuning pipelines share, called inside a pipeline function to add their tasks."""

from kfp.dsl import PipelineTask

from kubetune.components import (
    evaluate_text2sql,
    log_to_mlflow,
    prepare_base_model,
    prepare_text2sql_data,
    train_sft,
)

from .cluster import ClusterSettings, cache_step, evaluation_step, tracking_step, training_step


def data_and_sft(settings: ClusterSettings, *, data_source, data_sizes_json, base_model, pretrain_steps,
                 sft_steps, seed, training_api_url) -> tuple[PipelineTask, PipelineTask]:
    """Dataset → base model → SFT; returns the data task and the SFT task."""
    data = prepare_text2sql_data(source=data_source, seed=seed, sizes_json=data_sizes_json)
    base = cache_step(prepare_base_model(reference=base_model, seed=seed, pretrain_steps=pretrain_steps),
                      settings)
    sft = training_step(train_sft(dataset=data.outputs["dataset"], base_model=base.outputs["model"],
                                  steps=sft_steps, seed=seed, eval_examples=0,
                                  training_api_url=training_api_url), settings)
    return data, sft


def evaluate_and_log(settings: ClusterSettings, data: PipelineTask, trained: PipelineTask, *, eval_examples,
                     training_api_url, tracking_uri, experiment, run_name: str,
                     register_name) -> PipelineTask:
    """Evaluate a trained model, log it to MLflow; returns the evaluation task (its output: paraphrase
    accuracy)."""
    evaluation = evaluation_step(evaluate_text2sql(dataset=data.outputs["dataset"],
                                                   model=trained.outputs["model"], examples=eval_examples,
                                                   training_api_url=training_api_url), settings)
    tracking_step(log_to_mlflow(model=trained.outputs["model"], training_metrics=trained.outputs["metrics"],
                                evaluation=evaluation.outputs["metrics"], report=evaluation.outputs["report"],
                                tracking_uri=tracking_uri, experiment=experiment, run_name=run_name,
                                register_name=register_name), settings)
    return evaluation
