"""A small byte-level BPE tokenizer trained on the task corpus, with Gemma's special token ids."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# Gemma's ids, so code written against a real Gemma checkpoint (pad=0, eos=1, bos=2) works unchanged.
PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, EOS, BOS, UNK)
PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Trains a byte-level BPE tokenizer on ``texts``.

    Digits are split one per token so numbers in SQL (limits, ids, years) are composed rather than
    memorised as opaque merges. Byte-level pre-tokenization makes every string encodable (no
    ``<unk>`` in practice) and decoding restores whitespace exactly. The same texts give the same
    tokenizer.

    Args:
        texts: The training corpus, one document per item.
        vocab_size: Upper bound on the vocabulary, special tokens and the 256 byte symbols included;
            a small corpus may stop short of it.

    Returns:
        A ``PreTrainedTokenizerFast`` that prepends ``<bos>`` when encoding, with ids
        ``<pad>``=0, ``<eos>``=1, ``<bos>``=2, ``<unk>``=3.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),  # trained first, so they take ids 0..3 in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is unknown
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    ids = [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS]
    assert ids == [PAD_ID, EOS_ID, BOS_ID, UNK_ID], f"special token ids {ids} are not Gemma's"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, BOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        # The default clean-up would turn "a ." into "a." and break the exact round-trip.
        clean_up_tokenization_spaces=False,
    )
