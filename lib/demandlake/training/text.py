"""Review tokenization shared by training and scoring.

Two tokenizers (``sentiment_model.tokenizer``), both ending in a Keras ``TextVectorization`` layer
that is saved inside the inference model, so scoring maps text to ids exactly like training:

- ``char`` (default): in-graph. Lower-case, punctuation to spaces, a space around every Han
  character, split on whitespace: Chinese becomes characters (the TextCNN kernels learn the
  character n-grams), English stays words. No Python step at scoring time.
- ``jieba``: Python pre-segmentation with jieba (which passes Latin words through), words joined
  by spaces, then the same in-graph lower-casing/punctuation/whitespace split (without the Han
  spacing). The pyfunc wrapper applies :func:`presegment` before the model, so the logged model
  still takes raw text.

``docs/MODELS.md`` has the measured comparison on the real Chinese corpus.

The vocabulary is "adapted on the training split" without collecting it anywhere: every rank
counts tokens of its own shard with the layer's own preprocessing (:func:`count_tokens`), the
counts are merged across ranks, and :func:`select_vocabulary` picks the same list on every rank
(ties broken by the token itself).
"""
from __future__ import annotations

import collections
import logging
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

TOKENIZERS = ("char", "jieba")
PAD, OOV = "", "[UNK]"
_PUNCT = r"[\p{P}\p{S}]+"


def _keras():
    import keras  # imported lazily: the Spark driver imports this module without TF
    return keras


def _register(fn):
    return _keras().saving.register_keras_serializable(package="demandlake")(fn)


def standardize_chars(text):
    """Lower-case, punctuation and symbols to spaces, a space around each Han character."""
    import tensorflow as tf

    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, _PUNCT, " ")
    return tf.strings.regex_replace(text, r"(\p{Han})", r" \1 ")


def standardize_words(text):
    """Lower-case and punctuation/symbols to spaces (for pre-segmented text)."""
    import tensorflow as tf

    text = tf.strings.lower(text, encoding="utf-8")
    return tf.strings.regex_replace(text, _PUNCT, " ")


standardize_chars = _register(standardize_chars)
standardize_words = _register(standardize_words)
_STANDARDIZE = {"char": standardize_chars, "jieba": standardize_words}


def _check(tokenizer: str) -> None:
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")


def presegment(texts: Iterable[str | None], tokenizer: str) -> list[str]:
    """The Python step before the vectorizer: jieba words joined by spaces, or the text itself.

    Args:
        texts: raw review texts (None becomes "").
        tokenizer: ``char`` (identity) or ``jieba``.

    Returns:
        Strings for the vectorizer, one per input.
    """
    _check(tokenizer)
    clean = ["" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t)
             for t in texts]
    if tokenizer == "char":
        return clean
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return [" ".join(w for w in jieba.lcut(t) if w.strip()) for t in clean]


def build_vectorizer(tokenizer: str, max_length: int, vocabulary: Sequence[str] | None = None,
                     ngrams: int | None = None):
    """A ``TextVectorization`` layer for ``tokenizer`` (adapted when ``vocabulary`` is given).

    Args:
        tokenizer: ``char`` or ``jieba``.
        max_length: output length (pads with 0 at the end, truncates).
        vocabulary: tokens without padding/OOV (from :func:`select_vocabulary`); None leaves
            the layer unadapted (only for :func:`count_tokens`).
        ngrams: optional n-gram width added by the layer (None: the model learns n-grams).
    """
    _check(tokenizer)
    keras = _keras()
    layer = keras.layers.TextVectorization(
        standardize=_STANDARDIZE[tokenizer], split="whitespace", ngrams=ngrams,
        output_mode="int", output_sequence_length=int(max_length), name="vectorizer")
    if vocabulary is not None:
        layer.set_vocabulary(list(vocabulary))
    return layer


def count_tokens(texts: Sequence[str], vectorizer, batch_size: int = 4096) -> collections.Counter:
    """Token counts of ``texts`` as the vectorizer itself splits them.

    Uses the layer's own preprocessing (standardize, split, n-grams) so the counted tokens are
    exactly the ones looked up at training and scoring time.
    """
    counts: collections.Counter = collections.Counter()
    for start in range(0, len(texts), batch_size):
        batch = np.asarray(list(texts[start:start + batch_size]), dtype=object)
        # TextVectorization has no public "tokens" method; _preprocess is the exact pipeline
        # its call() uses before the lookup (pinned by tests/test_models.py).
        tokens = vectorizer._preprocess(batch)
        counts.update(t.decode("utf-8") for t in tokens.flat_values.numpy())
    return counts


def select_vocabulary(counts: collections.Counter, max_tokens: int,
                      min_count: int = 1) -> list[str]:
    """The ``max_tokens - 2`` most frequent tokens (count desc, then token), deterministic.

    Args:
        counts: merged token counts.
        max_tokens: vocabulary size including padding and OOV.
        min_count: drop rarer tokens.
    """
    if max_tokens < 3:
        raise ValueError(f"max_tokens must be >= 3, got {max_tokens}")
    items = [(t, c) for t, c in counts.items() if c >= min_count and t not in (PAD, OOV)]
    items.sort(key=lambda tc: (-tc[1], tc[0]))
    return [t for t, _ in items[:max_tokens - 2]]


def vectorize(texts: Sequence[str], vectorizer, batch_size: int = 4096) -> np.ndarray:
    """Token ids ``int32 [n, max_length]`` for pre-segmented texts."""
    out = []
    for start in range(0, len(texts), batch_size):
        batch = np.asarray(list(texts[start:start + batch_size]), dtype=object)
        out.append(np.asarray(vectorizer(batch), dtype=np.int32))
    length = vectorizer.get_config()["output_sequence_length"]
    return np.concatenate(out) if out else np.zeros((0, length), np.int32)


def inference_model(vectorizer, classifier):
    """End-to-end model ``text (string [batch]) -> positive probability [batch, 1]``.

    The vectorizer (with its vocabulary) is saved inside, so a ``.keras`` file is all scoring
    needs (plus :func:`presegment` for the jieba tokenizer).
    """
    keras = _keras()
    text = keras.Input(shape=(), dtype="string", name="text")
    ids = vectorizer(text)
    out = classifier({"token_ids": ids})
    return keras.Model(text, out, name="sentiment_inference")
