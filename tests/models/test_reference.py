"""Model references: classification, clear errors, and loading a local directory (never the network)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

import kubetune.models.bootstrap as bootstrap_module
from kubetune.models.reference import ModelRefError, load_base_model, resolve_model_ref, tiny_model_dir
from kubetune.models.tiny_gemma import build_tiny_gemma, tiny_gemma_config
from kubetune.models.tokenizer import train_tokenizer

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
         "head_dim": 32, "intermediate_size": 128}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def model_dir(tmp_path) -> Path:
    tokenizer = train_tokenizer(["SELECT a FROM t WHERE b = 1;", "How many rows are in t?"] * 10,
                                vocab_size=300)
    build_tiny_gemma(tiny_gemma_config(len(tokenizer), **SMALL), seed=3).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


@pytest.mark.parametrize("ref", ["tiny", "embedded", "TINY"])
def test_tiny_resolves_under_kubetune_home(ref, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBETUNE_HOME", str(tmp_path))
    resolved = resolve_model_ref(ref)
    assert resolved.kind == "tiny" and resolved.source == str(tmp_path / "models" / "tiny-gemma")


def test_kubetune_home_defaults_to_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBETUNE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tiny_model_dir() == tmp_path / ".cache" / "kubetune" / "models" / "tiny-gemma"


def test_local_directory(model_dir, monkeypatch):
    resolved = resolve_model_ref(str(model_dir))
    assert resolved.kind == "local" and resolved.source == str(model_dir.resolve())
    monkeypatch.chdir(model_dir.parent)
    assert resolve_model_ref("model").kind == "local"  # an existing relative dir wins over the Hub


def test_directory_without_config_lists_what_it_found(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ModelRefError, match=r"no config\.json.*found: sub/, weights\.bin"):
        resolve_model_ref(str(tmp_path))


@pytest.mark.parametrize("ref", ["./does-not-exist", "/nowhere/at/all", "a/b/c"])
def test_missing_path_is_an_error_not_a_hub_id(ref, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelRefError, match="does not exist"):
        resolve_model_ref(ref)


def test_file_is_not_a_model_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelRefError, match="is a file"):
        resolve_model_ref(str(tmp_path / "config.json"))


@pytest.mark.parametrize("ref", ["google/gemma-3-1b-it", "Qwen/Qwen2.5-0.5B-Instruct"])
def test_hub_id_is_recognised_without_network(ref, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = resolve_model_ref(ref)
    assert resolved.kind == "hub" and resolved.source == ref


def test_gcs_is_planned_not_silently_unsupported():
    with pytest.raises(NotImplementedError, match=r"planned.*local directory"):
        resolve_model_ref("gs://bucket/models/gemma")


@pytest.mark.parametrize("ref", ["s3://bucket/model", "not a model", "gemma"])
def test_unrecognised_refs_say_what_is_accepted(ref, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelRefError, match="expected 'tiny'"):
        resolve_model_ref(ref)


def test_load_local_directory(model_dir):
    model, tokenizer = load_base_model(str(model_dir), device="cpu")
    assert not model.training and model.device.type == "cpu" and model.dtype == torch.float32
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (0, 1, 2)
    expected = build_tiny_gemma(tiny_gemma_config(len(tokenizer), **SMALL), seed=3).eval()
    ids = torch.tensor([tokenizer("SELECT a FROM t;")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, expected(input_ids=ids).logits)


def test_load_with_dtype(model_dir):
    model, _ = load_base_model(str(model_dir), device="cpu", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16


def test_load_tiny_bootstraps_on_first_use_then_hits_cache(monkeypatch, tmp_path):
    # The real bootstrap with a small shape and 2 steps; the default build is measured in docs/models.md.
    monkeypatch.setenv("KUBETUNE_HOME", str(tmp_path))
    corpus = ["CREATE TABLE t (a INTEGER, b TEXT);\nSELECT a FROM t WHERE b = 'x';",
              "How many rows are in t?"]
    small_build = functools.partial(bootstrap_module.bootstrap_tiny_model, steps=2, batch_size=2,
                                    seq_len=16, vocab_size=300, model_overrides=SMALL, num_threads=1)
    results, seeds = [], []
    monkeypatch.setattr(bootstrap_module, "bootstrap_tiny_model",
                        lambda out_dir, documents:
                        results.append(small_build(out_dir, documents)) or results[-1])
    with pytest.raises(ModelRefError, match="not built yet.*kubetune model bootstrap"):
        load_base_model("tiny", device="cpu")  # no corpus to build it from
    model, tokenizer = load_base_model("tiny", device="cpu",
                                       tiny_corpus=lambda seed: seeds.append(seed) or corpus)
    assert model.config.hidden_size == 64 and tokenizer.bos_token_id == 2
    assert (tmp_path / "models" / "tiny-gemma" / "config.json").is_file()
    load_base_model("embedded", device="cpu", tiny_corpus=lambda seed: corpus)
    assert [r.cache_hit for r in results] == [False, True] and seeds == [0]
    load_base_model("tiny", device="cpu")  # built: no corpus needed
