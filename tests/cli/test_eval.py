"""`kubetune eval`: an adapter directory evaluated from disk gives what the in-process job gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tinker import types
from typer.testing import CliRunner

from kubetune.cli import app
from kubetune.engine import Engine, LoraSpec
from kubetune.engine.generation import engine_generator
from kubetune.models.tokenizer import train_tokenizer
from kubetune.tasks.text2sql import (
    build_dataset,
    evaluate_examples,
    execution_accuracy,
    load_split,
    pretraining_corpus,
)

from helpers.models import make_tiny_gemma

SIZES = {"train": 40, "rl": 10, "heldout_values": 10, "heldout_paraphrase": 10, "heldout_database": 10}


def test_eval_cli_matches_in_process_job(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_dataset(data, sizes=SIZES)
    tokenizer = train_tokenizer(pretraining_corpus(0, SIZES), vocab_size=400)
    model_dir = tmp_path / "model"
    make_tiny_gemma(0, vocab_size=len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    # A job with a few steps of training, so its adapter differs from the base model.
    engine = Engine(make_tiny_gemma(0, vocab_size=len(tokenizer)), tokenizer, base_model=str(model_dir))
    engine.create_model("job", LoraSpec(rank=4, seed=0))
    example = load_split(data, "train")[0]
    tokens = tokenizer(example.prompt(data) + example.completion)["input_ids"]
    datum = types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": types.TensorData.from_numpy(np.array(tokens[1:], dtype=np.int64)),
                        "weights": types.TensorData.from_numpy(np.ones(len(tokens) - 1, dtype=np.float32))},
    )
    for _ in range(3):
        engine.forward_backward("job", [datum], "cross_entropy")
        engine.optim_step("job", types.AdamParams(learning_rate=1e-2))
    adapter = engine.save_weights_for_sampler("job", tmp_path / "adapter")

    examples = load_split(data, "heldout_values")[:6]
    in_process = evaluate_examples(engine_generator(engine, tokenizer, "job"), examples, data)
    base_only = evaluate_examples(engine_generator(engine, tokenizer, None), examples, data)
    assert in_process["predictions"] != base_only["predictions"]  # the adapter matters

    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["eval", "--adapter", str(adapter), "--data", str(data), "--split",
                                      "heldout_values", "--examples", "6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["predictions"] == in_process["predictions"]
    assert report["total"] == 6 and sum(t["total"] for t in report["per_template"].values()) == 6
    recomputed = execution_accuracy(examples, report["predictions"], data)
    assert report["accuracy"] == recomputed["accuracy"]
    assert "heldout_values: execution accuracy" in result.output


def test_eval_cli_errors_are_clear(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_dataset(data, sizes=SIZES)
    not_adapter = tmp_path / "empty"
    not_adapter.mkdir()
    result = CliRunner().invoke(app, ["eval", "--adapter", str(not_adapter), "--data", str(data)])
    assert result.exit_code == 2
    assert "has no adapter_config.json" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["eval", "--adapter", str(not_adapter), "--data", str(data),
                                      "--split", "dev"])
    assert result.exit_code == 2
    assert "has no split 'dev'; the embedded task has train, rl" in " ".join(result.output.split())
