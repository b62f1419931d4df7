"""Small serializable layers shared by the models (``keras.ops`` only, any backend)."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="demandlake")
class ClipIds(keras.layers.Layer):
    """Map ids outside ``[0, vocab_size)`` to the out-of-vocabulary id.

    Scoring data may carry ids from a newer vocabulary than the model was trained with (or
    garbage); an embedding lookup with such an id would fail (CPU) or read zeros (GPU), so they
    become OOV here, inside the model, where every caller gets the same behaviour.

    Args:
        vocab_size: number of ids the following embedding knows (max id + 1).
        oov_id: id to use instead (1 in every demandlake vocabulary; 0 is padding).
    """

    def __init__(self, vocab_size: int, oov_id: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.oov_id = int(oov_id)

    def call(self, ids):
        ids = ops.cast(ids, "int32")
        bad = ops.logical_or(ops.less(ids, 0), ops.greater_equal(ids, self.vocab_size))
        return ops.where(bad, ops.full_like(ids, self.oov_id), ids)


    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "oov_id": self.oov_id}


@keras.saving.register_keras_serializable(package="demandlake")
class NotPadding(keras.layers.Layer):
    """Boolean mask ``ids != 0`` (0 is padding in every demandlake sequence)."""

    def call(self, ids):
        return ops.not_equal(ops.cast(ids, "int32"), 0)



@keras.saving.register_keras_serializable(package="demandlake")
class SignedLog1p(keras.layers.Layer):
    """``sign(x) * log1p(|x|)``: tames counts, gaps and amounts without fitted statistics.

    Fitted normalizers (``Normalization.adapt``, batch norm) would need statistics gathered across
    ranks; this needs none, so every rank computes exactly the same thing.
    """

    def call(self, x):
        x = ops.cast(x, "float32")
        return ops.sign(x) * ops.log1p(ops.abs(x))



@keras.saving.register_keras_serializable(package="demandlake")
class ExpandLast(keras.layers.Layer):
    """Add a trailing axis of size 1 (a numeric channel beside embeddings)."""

    def call(self, x):
        return ops.expand_dims(x, -1)



@keras.saving.register_keras_serializable(package="demandlake")
class PositionalEmbedding(keras.layers.Layer):
    """Add a learned embedding of the position to a sequence of vectors.

    Args:
        max_length: sequence length the model was built for.
        dim: width of the vectors.
    """

    def __init__(self, max_length: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.max_length = int(max_length)
        self.dim = int(dim)
        self.positions = keras.layers.Embedding(self.max_length, self.dim, name="positions")

    def build(self, input_shape):
        self.positions.build((None, self.max_length))
        self.built = True

    def call(self, x):
        length = ops.shape(x)[1]
        pos = self.positions(ops.arange(length))
        return x + ops.cast(ops.expand_dims(pos, 0), x.dtype)


    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length, "dim": self.dim}


@keras.saving.register_keras_serializable(package="demandlake")
class MaskedMean(keras.layers.Layer):
    """Mean over the time axis of the unmasked steps (zeros when a row has no step)."""

    def call(self, x, valid):
        m = ops.cast(ops.expand_dims(valid, -1), x.dtype)
        total = ops.sum(x * m, axis=1)
        count = ops.maximum(ops.sum(m, axis=1), ops.cast(1.0, x.dtype))
        return total / count



@keras.saving.register_keras_serializable(package="demandlake")
class LastStep(keras.layers.Layer):
    """The last time step (sequences are left-padded, so it is the most recent event)."""

    def call(self, x):
        return x[:, -1, :]



@keras.saving.register_keras_serializable(package="demandlake")
class PairMask(keras.layers.Layer):
    """Attention mask ``[batch, query, key]``: a query may attend to every non-padding key.

    Padding queries also attend to real keys (their outputs are pooled away later); a row with no
    real key attends to nothing and MultiHeadAttention's masked softmax stays finite.
    """

    def call(self, valid):
        m = ops.cast(valid, "bool")
        length = ops.shape(m)[1]
        return ops.repeat(ops.expand_dims(m, 1), length, axis=1)

