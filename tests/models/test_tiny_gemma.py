"""The tiny Gemma3: default size, layer layout, seeded init, Auto* round-trip."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3ForCausalLM

from kubetune.models.tiny_gemma import build_tiny_gemma, count_parameters, tiny_gemma_config
from kubetune.models.tokenizer import train_tokenizer

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
         "head_dim": 32, "intermediate_size": 128}


def test_default_config_shape_and_size():
    config = tiny_gemma_config(4096)
    assert config.model_type == "gemma3_text"
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.num_key_value_heads, config.head_dim, config.intermediate_size) == (256, 4, 4, 2, 64, 1024)
    assert config.layer_types == ["sliding_attention"] * 3 + ["full_attention"]
    assert config.sliding_window == 128 and config.max_position_embeddings == 512
    assert (config.pad_token_id, config.eos_token_id, config.bos_token_id) == (0, 1, 2)
    assert config.tie_word_embeddings and config.query_pre_attn_scalar == config.head_dim
    params = count_parameters(build_tiny_gemma(config))
    assert 4_000_000 <= params <= 6_000_000, params


def test_overrides_rederive_layer_types_and_attention_scale():
    config = tiny_gemma_config(100, **SMALL)
    assert config.layer_types == ["sliding_attention", "full_attention"]
    assert config.query_pre_attn_scalar == 32


def test_same_seed_same_weights_and_caller_rng_untouched():
    config = tiny_gemma_config(100, **SMALL)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = build_tiny_gemma(config, seed=7).state_dict()
    assert torch.equal(torch.rand(3), expected_next)  # init ran in a forked RNG
    second = build_tiny_gemma(config, seed=7).state_dict()
    other = build_tiny_gemma(config, seed=8).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_saved_model_and_tokenizer_load_through_auto_classes(tmp_path):
    tokenizer = train_tokenizer(["SELECT a FROM t WHERE b = 1;", "How many rows are in t?"] * 10,
                                vocab_size=300)
    model = build_tiny_gemma(tiny_gemma_config(len(tokenizer), **SMALL), seed=0).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert isinstance(loaded, Gemma3ForCausalLM)
    assert loaded.config.layer_types == model.config.layer_types
    assert (loaded.generation_config.eos_token_id, loaded.generation_config.pad_token_id) == (1, 0)
    ids = torch.tensor([loaded_tokenizer("SELECT a FROM t;")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
        out = loaded.generate(ids, max_new_tokens=4, do_sample=False)
    assert ids.shape[1] < out.shape[1] <= ids.shape[1] + 4 and torch.equal(out[:, : ids.shape[1]], ids)
