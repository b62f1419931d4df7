"""Next-purchase model over a user's recent event sequence.

Inputs (names match the columns of ``gold.sequence_examples``), all left-padded to ``max_length``
with 0, id 1 = out-of-vocabulary:

- ``item_ids``, ``category_ids``, ``event_type_ids``, ``price_buckets``: int ``[batch, L]``;
- ``time_gaps``: float ``[batch, L]``, ``log1p(seconds)`` since the previous event as
  ``gold.sequence_examples`` stores it, a numeric channel (``log_time_gaps=True`` for raw seconds);
- ``static_features``: float ``[batch, n_static]``.

Outputs:

- ``purchase``: ``[batch, 1]`` sigmoid, probability of any purchase in the horizon;
- ``categories``: ``[batch, n_categories]`` over the category vocabulary. Default ``softmax``:
  "which category, given a purchase", trained only on examples with a purchase (the training
  layer masks the rest) with the purchased categories as a uniform target distribution. Softmax
  ranks better than independent sigmoids when the vocabulary has thousands of categories, almost
  all negative for any user (the sigmoid loss is then dominated by easy negatives), and it is what
  recall@k / MRR measure. ``P(buy in c) ~= purchase * categories[c]``. ``"sigmoid"`` (multi-label,
  every example) is available for small vocabularies.

Padding is handled explicitly: a boolean mask ``item_ids != 0`` goes to the recurrent layer
(``mask=``), to the attention (``attention_mask``) and to the pooling. Ids outside a vocabulary
become OOV inside the model (:class:`~demandlake.models.layers.ClipIds`), so a newer vocabulary at
scoring time cannot crash it.
"""
from __future__ import annotations

from typing import Mapping

import keras

from demandlake.models.layers import (ClipIds, ExpandLast, LastStep, MaskedMean, NotPadding,
                                      PairMask, PositionalEmbedding, SignedLog1p)

ENCODERS = ("lstm", "gru", "attention")
CATEGORY_HEADS = ("softmax", "sigmoid")
ID_INPUTS = ("item_ids", "category_ids", "event_type_ids", "price_buckets")
INPUT_NAMES = (*ID_INPUTS, "time_gaps", "static_features")
# price bucket ids: 0 padding, 1 unknown price, then one per bucket; spare room is cheap.
DEFAULT_PRICE_VOCAB = 32


def build_sequence_model(
    vocab_sizes: Mapping[str, int],
    max_length: int,
    n_static: int,
    n_categories: int,
    encoder: str = "lstm",
    item_dim: int = 32,
    category_dim: int = 16,
    event_dim: int = 4,
    price_dim: int = 4,
    hidden: int = 64,
    attention_heads: int = 2,
    attention_layers: int = 1,
    dropout: float = 0.1,
    category_head: str = "softmax",
    log_time_gaps: bool = False,
    embedding_dtype: str | None = "float32",
) -> keras.Model:
    """Build the two-headed sequence model.

    Args:
        vocab_sizes: ``item``, ``category``, ``event_type`` (max id + 1 of ``gold.vocabularies``)
            and optionally ``price_bucket``.
        max_length: padded sequence length L.
        n_static: number of static features.
        n_categories: size of the ``categories`` head (normally ``vocab_sizes["category"]``).
        encoder: ``lstm``, ``gru`` or ``attention`` (self-attention with positions).
        item_dim, category_dim, event_dim, price_dim: embedding widths.
        hidden: width of the sequence encoder and of the shared trunk.
        attention_heads, attention_layers: shape of the attention encoder.
        dropout: dropout rate in the trunk and the attention blocks.
        category_head: ``softmax`` (default, see the module docstring) or ``sigmoid``.
        log_time_gaps: apply ``sign(x) * log1p(|x|)`` to the gaps (when they are raw seconds).
        embedding_dtype: dtype policy of the embedding lookups; ``None`` follows the global
            policy. Default ``float32``: under ``mixed_bfloat16`` the lookups' gradients are then
            scatter-added in float32, and the next layer casts the rows to bfloat16. With bfloat16
            lookups, one H200 trained this model 13-29x slower than in float32 (JAX backend,
            docs/BENCHMARKS.md); with float32 lookups, bf16 is as fast as fp32 or faster.

    Returns:
        An uncompiled functional model with inputs named as in ``INPUT_NAMES`` and outputs
        ``{"purchase", "categories"}``.
    """
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    if category_head not in CATEGORY_HEADS:
        raise ValueError(f"category_head must be one of {CATEGORY_HEADS}, got {category_head!r}")
    for key in ("item", "category", "event_type"):
        if int(vocab_sizes.get(key, 0)) < 2:
            raise ValueError(f"vocab_sizes[{key!r}] must be >= 2 (padding + OOV), "
                             f"got {vocab_sizes.get(key)}")
    if max_length < 1 or n_static < 0 or n_categories < 2:
        raise ValueError("max_length >= 1, n_static >= 0 and n_categories >= 2 are required")

    sizes = {
        "item_ids": int(vocab_sizes["item"]),
        "category_ids": int(vocab_sizes["category"]),
        "event_type_ids": int(vocab_sizes["event_type"]),
        "price_buckets": int(vocab_sizes.get("price_bucket", DEFAULT_PRICE_VOCAB)),
    }
    dims = {"item_ids": item_dim, "category_ids": category_dim,
            "event_type_ids": event_dim, "price_buckets": price_dim}

    inputs = {name: keras.Input((max_length,), dtype="int32", name=name) for name in ID_INPUTS}
    inputs["time_gaps"] = keras.Input((max_length,), dtype="float32", name="time_gaps")
    inputs["static_features"] = keras.Input((n_static,), dtype="float32", name="static_features")

    mask = NotPadding(name="not_padding")(inputs["item_ids"])
    parts = []
    for name in ID_INPUTS:
        ids = ClipIds(sizes[name], name=f"{name}_clip")(inputs[name])
        parts.append(keras.layers.Embedding(sizes[name], dims[name], dtype=embedding_dtype,
                                            name=f"{name}_emb")(ids))
    gaps = inputs["time_gaps"]
    if log_time_gaps:
        gaps = SignedLog1p(name="gap_log")(gaps)
    parts.append(ExpandLast(name="gap_channel")(gaps))
    steps = keras.layers.Concatenate(name="step_features")(parts)
    steps = keras.layers.Dense(hidden, activation="relu", name="step_projection")(steps)

    if encoder == "lstm":
        encoded = keras.layers.LSTM(hidden, name="lstm")(steps, mask=mask)
    elif encoder == "gru":
        encoded = keras.layers.GRU(hidden, name="gru")(steps, mask=mask)
    else:
        x = PositionalEmbedding(max_length, hidden, name="positions")(steps)
        pair_mask = PairMask(name="pair_mask")(mask)
        for i in range(attention_layers):
            att = keras.layers.MultiHeadAttention(
                attention_heads, max(hidden // attention_heads, 1), dropout=dropout,
                name=f"attention_{i}")(x, x, attention_mask=pair_mask)
            x = keras.layers.LayerNormalization(name=f"attention_norm_{i}")(x + att)
            ff = keras.layers.Dense(hidden * 2, activation="relu", name=f"ffn_in_{i}")(x)
            ff = keras.layers.Dense(hidden, name=f"ffn_out_{i}")(ff)
            ff = keras.layers.Dropout(dropout, name=f"ffn_dropout_{i}")(ff)
            x = keras.layers.LayerNormalization(name=f"ffn_norm_{i}")(x + ff)
        encoded = keras.layers.Concatenate(name="pooled")([
            MaskedMean(name="masked_mean")(x, mask), LastStep(name="last_step")(x)])

    branches = [encoded]
    if n_static:
        static = SignedLog1p(name="static_log")(inputs["static_features"])
        static = keras.layers.LayerNormalization(name="static_norm")(static)
        branches.append(keras.layers.Dense(16, activation="relu", name="static_dense")(static))
    trunk = branches[0] if len(branches) == 1 else keras.layers.Concatenate(name="trunk_in")(
        branches)
    trunk = keras.layers.Dense(hidden, activation="relu", name="trunk")(trunk)
    trunk = keras.layers.Dropout(dropout, name="trunk_dropout")(trunk)

    # Heads in float32 so mixed precision never rounds probabilities or the loss.
    purchase = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="purchase")(trunk)
    categories = keras.layers.Dense(n_categories, activation=category_head, dtype="float32",
                                    name="categories")(trunk)
    return keras.Model(inputs, {"purchase": purchase, "categories": categories},
                       name=f"sequence_{encoder}")
