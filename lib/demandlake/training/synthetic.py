"""Small planted-signal training data matching the gold contracts (tests and benchmarks).

The signal is easy on purpose: a model that trains correctly reaches a high score in one or two
epochs, one that does not (ranks training apart, a broken resume) does not.

- sequences: users who put something in the cart recently buy with probability 0.9 (else 0.1;
  the first static feature is a noisy copy of "carted"), and what they buy is the category they
  browse most;
- reviews: positive/negative cue words in Chinese or English among neutral filler.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

VIEW, CART = 2, 3  # event type ids (0 padding, 1 OOV)
N_STATIC = 5


def sequence_examples(n: int, max_length: int = 20, n_items: int = 300, n_categories: int = 30,
                      seed: int = 0, splits: dict[str, float] | None = None) -> pd.DataFrame:
    """``gold.sequence_examples``-shaped rows with a planted purchase/category signal.

    Args:
        n: number of examples.
        max_length: padded length L.
        n_items, n_categories: vocabulary sizes (ids 2.. are real, 0 pad, 1 OOV).
        seed: random seed.
        splits: fraction per split (default 70/15/15 train/validation/test).

    Returns:
        A pandas DataFrame with the contract's columns.
    """
    rng = np.random.default_rng(seed)
    splits = splits or {"train": 0.7, "validation": 0.15, "test": 0.15}
    names = list(splits)
    split = rng.choice(names, size=n, p=np.asarray(list(splits.values())) / sum(splits.values()))
    rows = []
    item_cat = rng.integers(2, n_categories, n_items)
    for i in range(n):
        length = int(rng.integers(3, max_length + 1))
        fav = int(rng.integers(2, n_categories))
        carted = rng.random() < 0.5
        cats = np.where(rng.random(length) < 0.6, fav, rng.integers(2, n_categories, length))
        items = np.array([int(rng.choice(np.flatnonzero(item_cat == c)))
                          if (item_cat == c).any() else 1 for c in cats])
        events = np.full(length, VIEW)
        if carted:
            events[-int(rng.integers(1, min(length, 5) + 1))] = CART
        buy = int(rng.random() < (0.9 if carted else 0.1))
        pad = max_length - length

        def left(a, fill=0):
            return [fill] * pad + [int(v) if not isinstance(v, float) else v for v in a]

        rows.append({
            "user_id": f"u{i}", "cutoff_date": dt.date(2026, 11, 1 + i % 3),
            "split": str(split[i]), "seq_len": length,
            "item_ids": left(items), "category_ids": left(cats), "event_type_ids": left(events),
            "time_gaps": [0.0] * pad + [float(np.log1p(g)) for g in
                                        rng.exponential(600.0, length)],
            "price_buckets": left(rng.integers(2, 10, length)),
            "static_features": [float(carted) * 2 - 1 + float(rng.normal(0, 0.5))]
            + [float(v) for v in rng.normal(0, 1, N_STATIC - 1)],
            "label_purchase": buy, "label_categories": [fav] if buy else [],
        })
    return pd.DataFrame(rows)


_POS = {"zh": ["很好", "喜欢", "满意", "推荐", "不错", "超值"],
        "en": ["great", "love", "perfect", "recommend", "comfortable", "beautiful"]}
_NEG = {"zh": ["很差", "失望", "退货", "垃圾", "难用", "后悔"],
        "en": ["terrible", "awful", "returned", "disappointed", "cheap", "broken"]}
_FILL = {"zh": ["这个", "手机", "衣服", "酒店", "书", "快递", "包装", "价格", "东西", "今天"],
         "en": ["the", "dress", "fabric", "size", "color", "order", "it", "was", "and", "this"]}


def review_corpus(n: int, seed: int = 0, splits: dict[str, float] | None = None) -> pd.DataFrame:
    """``gold.review_corpus``-shaped rows: half Chinese, half English, planted cue words."""
    rng = np.random.default_rng(seed)
    splits = splits or {"train": 0.7, "validation": 0.15, "test": 0.15}
    names = list(splits)
    p = np.asarray(list(splits.values())) / sum(splits.values())
    rows = []
    for i in range(n):
        lang = "zh" if i % 2 == 0 else "en"
        label = int(rng.random() < 0.5)
        words = list(rng.choice(_FILL[lang], int(rng.integers(4, 10))))
        cue = _POS[lang] if label else _NEG[lang]
        for _ in range(int(rng.integers(1, 3))):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(cue)))
        sep = "" if lang == "zh" else " "
        text = sep.join(words) + ("。" if lang == "zh" else ".")
        rows.append({"review_id": f"r{i}", "user_id": None, "item_id": None,
                     "category": ["phone", "clothes", "hotel"][i % 3],
                     "rating": None, "label": label, "text": text, "language": lang,
                     "split": str(rng.choice(names, p=p)), "source": "synthetic",
                     "n_chars": len(text)})
    return pd.DataFrame(rows)


def write_parquet(df: pd.DataFrame, directory, n_files: int = 2) -> dict:
    """Write ``df`` as ``n_files`` Parquet files and return a data spec's ``splits`` for it."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    files = []
    for i, part in enumerate(np.array_split(np.arange(len(df)), n_files)):
        path = d / f"part-{i:05d}.parquet"
        pq.write_table(pa.Table.from_pandas(df.iloc[part], preserve_index=False), path)
        files.append(str(path))
    return {s: {"split": s, "files": files} for s in sorted(df["split"].unique())}
