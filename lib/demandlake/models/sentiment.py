"""Review sentiment classifier over token ids (the vectorizer lives in ``training.text``).

Input ``token_ids``: int ``[batch, L]``, 0 = padding, 1 = out-of-vocabulary (TextVectorization's
convention). Output ``positive``: ``[batch, 1]`` sigmoid probability that the review is positive.

Architectures (``sentiment_model.architecture``):

- ``textcnn`` (default): Kim (2014) convolutions of several widths over the embeddings, max-pooled
  over time. Over character tokens the kernels learn character n-grams, so Chinese needs no word
  segmenter; it is also several times faster than an RNN on CPUs.
- ``bilstm``: bidirectional LSTM over the (masked) tokens, final states concatenated.
"""
from __future__ import annotations

from typing import Sequence

import keras

from demandlake.models.layers import ClipIds, MaskedMean, NotPadding

ARCHITECTURES = ("textcnn", "bilstm")


def build_sentiment_model(
    vocab_size: int,
    max_length: int,
    architecture: str = "textcnn",
    embedding_dim: int = 64,
    filters: int = 64,
    kernel_sizes: Sequence[int] = (2, 3, 4),
    lstm_units: int = 48,
    hidden: int = 64,
    dropout: float = 0.3,
    embedding_dtype: str | None = "float32",
) -> keras.Model:
    """Build the binary text classifier.

    Args:
        vocab_size: number of token ids (vocabulary + padding + OOV).
        max_length: padded length L of ``token_ids``.
        architecture: ``textcnn`` or ``bilstm``.
        embedding_dim: token embedding width.
        filters, kernel_sizes: TextCNN convolutions (one branch per kernel size).
        lstm_units: BiLSTM width per direction.
        hidden: dense layer before the output.
        dropout: dropout before and after the dense layer.
        embedding_dtype: dtype policy of the token lookup (``None``: the global policy); float32
            by default for the reason given in :func:`~demandlake.models.build_sequence_model`.

    Returns:
        An uncompiled model ``token_ids -> {"positive": [batch, 1]}``.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    if vocab_size < 3 or max_length < 1:
        raise ValueError("vocab_size >= 3 and max_length >= 1 are required")
    if architecture == "textcnn" and (not kernel_sizes or max(kernel_sizes) > max_length):
        raise ValueError(f"kernel_sizes {list(kernel_sizes)} must be non-empty and <= max_length")

    ids_in = keras.Input((max_length,), dtype="int32", name="token_ids")
    mask = NotPadding(name="not_padding")(ids_in)
    ids = ClipIds(vocab_size, name="token_clip")(ids_in)
    emb = keras.layers.Embedding(vocab_size, embedding_dim, dtype=embedding_dtype,
                                 name="token_emb")(ids)
    emb = keras.layers.SpatialDropout1D(dropout / 2, name="emb_dropout")(emb)

    if architecture == "textcnn":
        pooled = []
        for k in kernel_sizes:
            conv = keras.layers.Conv1D(filters, int(k), activation="relu", padding="same",
                                       name=f"conv_{k}")(emb)
            pooled.append(keras.layers.GlobalMaxPooling1D(name=f"max_{k}")(conv))
            pooled.append(MaskedMean(name=f"mean_{k}")(conv, mask))
        x = keras.layers.Concatenate(name="pooled")(pooled)
    else:
        x = keras.layers.Bidirectional(keras.layers.LSTM(lstm_units), name="bilstm")(
            emb, mask=mask)

    x = keras.layers.Dropout(dropout, name="dropout_in")(x)
    x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(dropout, name="dropout_out")(x)
    out = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="positive")(x)
    return keras.Model({"token_ids": ids_in}, {"positive": out}, name=f"sentiment_{architecture}")
