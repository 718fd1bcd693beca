"""Bootstrapping the tiny model: it learns, it is deterministic, it caches by content, it writes atomically.

Uses a small model shape and a synthetic schema/SQL/English corpus so that each build takes a second or
two; the default shape and step count are measured in docs/models.md, not here.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from kubetune.models.bootstrap import METADATA_FILE, WEIGHTS_FILE, bootstrap_tiny_model

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
         "head_dim": 32, "intermediate_size": 128, "max_position_embeddings": 64, "sliding_window": 16}
# One thread (the default, spelled out): on a shared, busy machine OpenMP barriers made 2-thread builds
# of this small model 10-50x slower (docs/models.md).
FAST = {"model_overrides": SMALL, "vocab_size": 512, "batch_size": 4, "seq_len": 32, "device": "cpu",
        "num_threads": 1}


def synthetic_corpus(seed: int = 0, n: int = 120) -> list[str]:
    """Schema lines, SQL and English questions over two made-up tables."""
    rng = random.Random(seed)
    schema = ("CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);\n"
              "CREATE TABLE concert (id INTEGER PRIMARY KEY, singer_id INTEGER REFERENCES singer(id), "
              "year INTEGER);")
    countries = ["France", "Peru", "Japan", "Kenya", "Norway"]
    docs = []
    for _ in range(n):
        country, age, year = rng.choice(countries), rng.randint(18, 80), rng.randint(1990, 2024)
        docs.append(rng.choice([
            f"{schema}\nSELECT name FROM singer WHERE country = '{country}' AND age > {age};",
            f"{schema}\nSELECT COUNT(*) FROM concert WHERE year = {year};",
            f"How many singers from {country} are older than {age}?\nList the concerts held in {year}.",
        ]))
    return docs


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return synthetic_corpus()


def test_pretraining_lowers_the_loss(corpus, tmp_path):
    steps_seen: list[int] = []
    result = bootstrap_tiny_model(tmp_path / "m", corpus, steps=60, lr=3e-3,
                                  progress=lambda step, loss: steps_seen.append(step), **FAST)
    assert steps_seen == list(range(1, 61))
    assert result.initial_loss > 5.5  # ≈ ln(vocab) at random init
    assert result.final_loss < 0.5 * result.initial_loss, (result.initial_loss, result.final_loss)


def test_output_is_a_loadable_model_directory_with_metadata(corpus, tmp_path):
    result = bootstrap_tiny_model(tmp_path / "m", corpus, steps=3, **FAST)
    assert result.path == tmp_path / "m" and not result.cache_hit and result.steps == 3
    metadata = json.loads((result.path / METADATA_FILE).read_text())
    assert metadata["content_hash"] == result.content_hash
    assert ((metadata["params"], metadata["steps"], metadata["final_loss"])
            == (result.params, 3, result.final_loss))
    assert metadata["seconds"] > 0

    model = AutoModelForCausalLM.from_pretrained(result.path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(result.path, local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) == result.params
    assert (model.generation_config.eos_token_id, model.generation_config.pad_token_id) == (1, 0)
    assert tokenizer.model_max_length == SMALL["max_position_embeddings"]
    sql = "SELECT name FROM singer WHERE age > 42;"
    assert tokenizer.decode(tokenizer(sql)["input_ids"], skip_special_tokens=True) == sql
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging dirs left behind
    assert all(p.stat().st_mode & 0o444 == 0o444 for p in [result.path, *result.path.iterdir()])  # shareable


def test_same_inputs_give_bit_identical_weights(corpus, tmp_path):
    first = bootstrap_tiny_model(tmp_path / "a", corpus, steps=4, **FAST)
    second = bootstrap_tiny_model(tmp_path / "b", corpus, steps=4, **FAST)
    assert first.content_hash == second.content_hash and not second.cache_hit
    weights_a, weights_b = load_file(first.path / WEIGHTS_FILE), load_file(second.path / WEIGHTS_FILE)
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert (first.path / "tokenizer.json").read_bytes() == (second.path / "tokenizer.json").read_bytes()
    assert first.final_loss == second.final_loss


def test_second_call_is_a_cache_hit_and_changes_rebuild(corpus, tmp_path):
    out = tmp_path / "m"
    built = bootstrap_tiny_model(out, corpus, steps=3, **FAST)
    weights = out / WEIGHTS_FILE
    mtime = weights.stat().st_mtime_ns

    calls: list[int] = []
    hit = bootstrap_tiny_model(out, corpus, steps=3, progress=lambda step, loss: calls.append(step), **FAST)
    assert hit.cache_hit and hit.content_hash == built.content_hash and not calls
    assert hit.seconds < 1.0 and hit.final_loss == built.final_loss
    assert weights.stat().st_mtime_ns == mtime

    changed_corpus = bootstrap_tiny_model(out, [*corpus, "SELECT 1;"], steps=3, **FAST)
    assert not changed_corpus.cache_hit and changed_corpus.content_hash != built.content_hash
    changed_seed = bootstrap_tiny_model(out, corpus, steps=3, seed=1, **FAST)
    assert not changed_seed.cache_hit and changed_seed.content_hash not in (built.content_hash,
                                                                           changed_corpus.content_hash)
    forced = bootstrap_tiny_model(out, corpus, steps=3, seed=1, force=True, **FAST)
    assert not forced.cache_hit and forced.content_hash == changed_seed.content_hash


def test_failed_build_leaves_previous_directory_intact(corpus, tmp_path):
    out = tmp_path / "m"
    built = bootstrap_tiny_model(out, corpus, steps=2, **FAST)
    before = (out / WEIGHTS_FILE).read_bytes()

    def fail(step: int, loss: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bootstrap_tiny_model(out, corpus, steps=2, force=True, progress=fail, **FAST)
    assert (out / WEIGHTS_FILE).read_bytes() == before
    assert json.loads((out / METADATA_FILE).read_text())["content_hash"] == built.content_hash
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_num_threads_is_scoped_to_the_build(corpus, tmp_path):
    before = torch.get_num_threads()
    seen: list[int] = []
    wanted = 1 if before != 1 else 2
    bootstrap_tiny_model(tmp_path / "m", corpus, steps=1, progress=lambda step, loss: seen.append(
        torch.get_num_threads()), **{**FAST, "num_threads": wanted})
    assert seen == [wanted] and torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("corpus_arg", "kwargs", "message"),
    [([], {}, "empty"), (["", ""], {}, "empty"), (["SELECT 1;"], {"seq_len": 65}, "max_position_embeddings"),
     (["SELECT 1;"], {"steps": 0}, "steps >= 1")],
)
def test_invalid_inputs_are_rejected(tmp_path, corpus_arg, kwargs, message):
    args = {**FAST, "steps": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        bootstrap_tiny_model(tmp_path / "m", corpus_arg, **args)
    assert not (tmp_path / "m").exists()
