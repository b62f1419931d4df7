"""Training data: the driver pins a Delta snapshot, each rank reads its own shard of it.

The driver never collects examples. It resolves the table version, asks Spark which Parquet files
of that version hold a split (``inputFiles()``, after Delta's file skipping on the split filter)
and hands the list to the ranks; rank ``r`` of ``n`` reads ``files[r::n]`` with pyarrow, or, when
there are fewer files than ranks, an equal range of rows across the concatenated files. Rows of
other splits in a shared file are filtered out on the rank.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

log = logging.getLogger(__name__)


# ---- driver side --------------------------------------------------------------------------------
def snapshot_spec(spark, location: str, splits: Sequence[str], version: int | None = None,
                  extra_filter: str | None = None) -> dict:
    """File lists per split of one Delta version (the "data snapshot" every rank reads).

    Args:
        spark: the session.
        location: Delta table path.
        splits: split values to resolve (``train``, ``validation``, ``test``).
        version: table version; the latest when None.
        extra_filter: optional SQL predicate every rank applies too (e.g. ``label IS NOT NULL``)
            -- only used here for file skipping; ranks re-apply their task's own filter.

    Returns:
        ``{"location", "version", "splits": {split: {"split", "files", "version"}}}``.
    """
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    table = DeltaTable.forPath(spark, location)
    if version is None:
        version = int(table.history(1).first()["version"])
    check_plain_parquet(table.detail().first()["properties"] or {}, location)
    df = spark.read.format("delta").option("versionAsOf", version).load(location)
    out = {"location": location, "version": int(version), "splits": {}}
    for split in splits:
        sel = df.where(F.col("split") == split)
        if extra_filter:
            sel = sel.where(extra_filter)
        files = sorted(sel.inputFiles())
        out["splits"][split] = {"split": split, "files": files, "version": int(version)}
        log.info("snapshot %s@v%d split %s: %d files", location, version, split, len(files))
    return out


def check_plain_parquet(properties: dict, location: str) -> None:
    """Refuse tables whose Parquet files alone do not tell the rows (the ranks read files).

    Deletion vectors mark deleted rows outside the files and column mapping renames physical
    columns; pyarrow would see deleted rows or miss columns.

    Raises:
        ValueError: with the table property to change.
    """
    props = {k.lower(): str(v).lower() for k, v in properties.items()}
    if props.get("delta.enabledeletionvectors") == "true":
        raise ValueError(f"{location}: deletion vectors are enabled; training ranks read the "
                         "Parquet files directly. Set delta.enableDeletionVectors=false and run "
                         "REORG TABLE ... APPLY (PURGE) on this table.")
    if props.get("delta.columnmapping.mode", "none") != "none":
        raise ValueError(f"{location}: column mapping is enabled; training ranks read the "
                         "Parquet files by column name. Use a table without column mapping.")


# ---- rank side ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of one file (``stop`` None = to the end)."""

    file: str
    start: int = 0
    stop: int | None = None


def shard_plan(files: Sequence[str], rank: int, size: int,
               row_counts: Sequence[int] | None = None) -> list[Piece]:
    """The pieces rank ``rank`` of ``size`` reads.

    Args:
        files: the split's files, in the same order on every rank.
        rank, size: this rank and the number of ranks.
        row_counts: rows per file; needed only when ``len(files) < size`` (row ranges).

    Returns:
        ``files[rank::size]`` as whole-file pieces, or this rank's equal share of the rows.
    """
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} outside [0, {size})")
    if len(files) >= size:
        return [Piece(f) for f in list(files)[rank::size]]
    if row_counts is None or len(row_counts) != len(files):
        raise ValueError("row_counts for every file are needed when files < ranks")
    total = int(sum(row_counts))
    lo, hi = total * rank // size, total * (rank + 1) // size
    pieces, offset = [], 0
    for f, n in zip(files, row_counts):
        a, b = max(lo, offset), min(hi, offset + int(n))
        if a < b:
            pieces.append(Piece(f, a - offset, b - offset))
        offset += int(n)
    return pieces


def _fs_and_path(uri: str):
    import pyarrow.fs as pafs

    if uri.startswith("s3a://") or uri.startswith("s3n://"):
        uri = "s3://" + uri.split("://", 1)[1]
    if "://" not in uri and not uri.startswith("file:"):
        return pafs.LocalFileSystem(), uri
    return pafs.FileSystem.from_uri(uri)


def read_shard(split_spec: dict, rank: int, size: int, columns: Sequence[str],
               row_filter=None, order_by: Sequence[str] = ()):
    """Read this rank's rows of one split as a pyarrow Table.

    Args:
        split_spec: ``{"split", "files"}`` from :func:`snapshot_spec`.
        rank, size: this rank and the number of ranks.
        columns: columns to read (``split`` is added for the filter).
        row_filter: optional ``Table -> boolean mask`` applied after the split filter.
        order_by: key columns (those the files hold) by which the rows are put in order, a
            stable sort after the files' rows are concatenated in path order. The order of
            rows inside a Parquet file is whatever the writing tasks produced, which differs
            between two lakes written with the same rows (a cluster against ``local[2]``);
            with the key order, the same files give a rank the same rows in the same order,
            so deterministic training gives the same weights.

    Returns:
        The rank's rows (possibly empty), with ``columns`` only.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = list(split_spec.get("files") or [])
    cols = list(dict.fromkeys([*columns, "split", *order_by]))

    def read(file):
        fs, path = _fs_and_path(file)
        # Partition columns (cutoff_date) live in the path, not the file; only read real ones.
        schema_names = set(pq.read_schema(path, filesystem=fs).names)
        return pq.read_table(path, filesystem=fs, columns=[c for c in cols if c in schema_names])

    def in_order(t):  # pyarrow's sort_indices is stable: ties keep the files' path order
        keys = [c for c in order_by if c in t.column_names]
        return t.take(pc.sort_indices(t, [(c, "ascending") for c in keys])) \
            if keys and t.num_rows else t

    split = split_spec.get("split")

    def wanted(t):
        if split is not None and "split" in t.column_names:
            t = t.filter(pc.equal(t["split"], split))
        if row_filter is not None and t.num_rows:
            t = t.filter(row_filter(t))
        return t

    tables = []
    if 0 < len(files) < size and order_by:
        # Fewer files than ranks: every rank reads the (few, small) files whole and takes its
        # equal range of this split's wanted rows in key order (one file often holds every
        # split: ranges over all its rows could leave a rank without a row of this split).
        whole = in_order(wanted(pa.concat_tables([read(f) for f in files],
                                                 promote_options="default")))
        lo, hi = whole.num_rows * rank // size, whole.num_rows * (rank + 1) // size
        tables.append(whole.slice(lo, hi - lo))
    else:
        counts = None
        if 0 < len(files) < size:
            counts = []
            for f in files:
                fs, path = _fs_and_path(f)
                with fs.open_input_file(path) as fh:
                    counts.append(pq.ParquetFile(fh).metadata.num_rows)
        for piece in shard_plan(files, rank, size, counts):
            t = read(piece.file)
            if piece.start or piece.stop is not None:
                t = t.slice(piece.start, (piece.stop or t.num_rows) - piece.start)
            tables.append(t)
    if not tables:
        return None
    table = in_order(wanted(pa.concat_tables(tables, promote_options="default")))
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"shard of split {split!r} lacks columns {missing}")
    return table.select(list(columns))


def fixed_width(column, width: int, dtype, fit: bool = False) -> "np.ndarray":
    """A list column whose rows all have ``width`` values -> ``dtype [n, width]`` (no Python loop).

    Args:
        column: a pyarrow list column (chunked or not).
        width: values per row.
        dtype: NumPy dtype of the result.
        fit: also take rows of other lengths, as the sequences job would have written them at
            ``width``: the last ``width`` values of a longer row, a shorter row left-padded with
            0. A lake keeps rows written before ``sequences.max_length`` changed; training then
            reads old and new rows alike.

    Raises:
        ValueError: when a row is null, or has another length and ``fit`` is false (the
            sequence contract is broken).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        return np.zeros((0, width), dtype)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    values = arr.flatten().to_numpy(zero_copy_only=False)
    if not arr.null_count and (lengths == width).all():
        return values.astype(dtype).reshape(n, width)
    if arr.null_count or not fit:
        bad = int(np.argmax((lengths != width) | np.isnan(lengths.astype(float))))
        raise ValueError(f"list column rows must all have {width} values; row {bad} has "
                         f"{lengths[bad]}")
    lengths = lengths.astype(np.int64)
    ends = np.cumsum(lengths)  # one past each row's last value in ``values``
    steps = np.arange(width)[None, :]
    source = (ends - width)[:, None] + steps
    present = steps >= (width - np.minimum(lengths, width))[:, None]
    picked = values[np.clip(source, 0, max(len(values) - 1, 0))] if len(values) else \
        np.zeros(source.shape, values.dtype)
    return np.where(present, picked, 0).astype(dtype)


def padded_lists(column, width: int, pad: int = 0) -> "np.ndarray":
    """A variable-length int list column (nulls allowed) -> ``int32 [n, width]`` padded."""
    import numpy as np

    values = column.to_pylist()
    out = np.full((len(values), width), pad, np.int32)
    for i, v in enumerate(values):
        if v:
            v = list(dict.fromkeys(int(x) for x in v if x is not None))[:width]
            out[i, :len(v)] = v
    return out
