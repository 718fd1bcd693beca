"""Kubeflow Pipelines components (``kubetune.components``): thin shims over :mod:`kubetune.steps`."""

from .text2sql import (
    KUBETUNE_IMAGE,
    evaluate_text2sql,
    log_to_mlflow,
    prepare_base_model,
    prepare_text2sql_data,
    propose_experiments,
    select_best,
    train_dpo,
    train_ppo,
    train_sft,
)

__all__ = ["KUBETUNE_IMAGE", "evaluate_text2sql", "log_to_mlflow", "prepare_base_model",
           "prepare_text2sql_data", "propose_experiments", "select_best", "train_dpo",
           "train_ppo", "train_sft"]
