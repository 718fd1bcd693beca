"""The byte-level BPE tokenizer: Gemma's special ids, exact round-trips, determinism, offline reload."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from kubetune.models.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, train_tokenizer

CORPUS = [
    "CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);",
    "SELECT name FROM singer WHERE age > 30 ORDER BY age DESC LIMIT 5;",
    "SELECT COUNT(*) FROM singer WHERE country = 'France';",
    "How many singers are from France?",
    "List the names of singers older than 30.",
] * 20

# Quotes (with an escaped one), digits, runs of spaces, tabs, newlines, non-ASCII: all must survive.
ROUND_TRIP = [
    "SELECT name FROM singer WHERE country = 'O''Brien' AND age >= 1999;",
    'SELECT "weird col", t.x  FROM t\n\tWHERE y = 0.5 -- comment\n  LIMIT 10 ;',
    "  leading and trailing spaces  ",
    "Which café in São Paulo sells 12345 crêpes? 日本 🙂",
    "a\n\nb\r\nc",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=400)


def test_special_tokens_have_gemma_ids(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id,
            tokenizer.unk_token_id) == (PAD_ID, EOS_ID, BOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<eos>", "<bos>", "<unk>"]


def test_encoding_prepends_bos_only(tokenizer):
    ids = tokenizer("SELECT 1;")["input_ids"]
    assert ids[0] == BOS_ID
    assert BOS_ID not in ids[1:] and EOS_ID not in ids
    assert BOS_ID not in tokenizer("SELECT 1;", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_decode_restores_text_exactly(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert UNK_ID not in ids  # byte-level: every string is encodable
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_digits_are_single_tokens(tokenizer):
    tokens = tokenizer.tokenize("LIMIT 2024")
    assert tokens[-4:] == ["2", "0", "2", "4"]


def test_vocab_size_is_an_upper_bound(tokenizer):
    assert len(train_tokenizer(CORPUS, vocab_size=300)) == 300  # enough pairs to reach it
    assert 300 < len(tokenizer) <= 400  # five distinct lines run out of pairs to merge before 400


def test_same_texts_give_the_same_tokenizer(tokenizer):
    again = train_tokenizer(CORPUS, vocab_size=400)
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_saved_tokenizer_loads_offline_through_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.bos_token_id,
            loaded.unk_token_id) == (0, 1, 2, 3)
    for text in ROUND_TRIP:
        ids = loaded(text)["input_ids"]
        assert ids == tokenizer(text)["input_ids"]
        assert loaded.decode(ids, skip_special_tokens=True) == text
