"""A word-level tokenizer for the embedded image–text model's closed vocabulary.

The captions of the synthetic scenes use a few dozen words, so each word is a token: a
Hugging Face ``PreTrainedTokenizerFast`` built offline from the word list, saved with the model
(``tokenizer.json``) and loaded by ``AutoTokenizer`` like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "word_tokenizer"]

#: Padding, unknown word, start and end of text: token ids 0-3, in this order.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


def word_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A lower-casing, whitespace-and-punctuation-splitting tokenizer over ``words``.

    Every text becomes ``[BOS] word ... [EOS]``; words outside the list become ``[UNK]``.

    Args:
        words: the vocabulary (lower case, without the special tokens).

    Returns:
        The tokenizer; ids ``0-3`` are :data:`SPECIAL_TOKENS`, then ``words`` in order.

    Raises:
        ValueError: for a repeated word or a special token among ``words``.

    Examples:
        >>> tokenizer = word_tokenizer(["the", "red", "star"])
        >>> tokenizer("The red star")["input_ids"]
        [2, 4, 5, 6, 3]
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocabulary = [*SPECIAL_TOKENS, *words]
    if len(set(vocabulary)) != len(vocabulary):
        raise ValueError("words must be distinct and must not include the special tokens")
    ids = {word: index for index, word in enumerate(vocabulary)}
    tokenizer = Tokenizer(models.WordLevel(ids, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", ids["[BOS]"]), ("[EOS]", ids["[EOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_input_names=["input_ids", "attention_mask"],
    )
