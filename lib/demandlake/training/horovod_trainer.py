"""The one distributed training code path (Horovod + TensorFlow + Keras 3), for every model.

``train(task, cfg, data_spec, out_dir)`` runs inside every rank, whichever launcher started it
(``horovodrun``, ``horovod.spark.run`` or a single process). The models differ only in their
:mod:`~demandlake.training.tasks` object (columns, preprocessing, model, loss, metrics).

What a rank does:

1. ``hvd.init()``; pins one GPU per local rank when there are GPUs (then mixed bfloat16 and XLA);
2. reads ITS OWN shard of the driver's Delta snapshot (:mod:`~demandlake.training.data`);
3. lets the task fit its preprocessing (the sentiment vocabulary is merged across ranks);
4. builds the model with the same seed everywhere, restores the last checkpoint on rank 0 and
   broadcasts model and optimizer state from rank 0;
5. trains with a custom ``tf.GradientTape`` step whose gradients are averaged across ranks with
   ``hvd.grouped_allreduce`` (never ``hvd.DistributedOptimizer``: with Keras 3 variables and
   ``model.fit`` the ranks would silently train apart, see docs/STACK.md); the learning rate is
   scaled by the number of ranks with a linear warm-up (Goyal et al. 2017);
6. after every epoch: validation sums reduced with ``hvd.allreduce``, a checkpoint written by
   rank 0 (model, optimizer, epoch, RNG states; the data order is a pure function of
   ``(seed, epoch, rank)``), metrics logged to MLflow by rank 0 only;
7. at the end: evaluation of the new model and of the serving champion (when given) on the same
   validation rows through their pyfunc wrappers (the champion's copy of them coded with its own
   vocabulary when the driver rebuilt one), then rank 0 logs plots and the model.

Every line that exists only for distribution is marked ``# Horovod: ...``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^ckpt-(\d{4,})$")


class _OneProcess:
    """Stand-in for ``horovod.tensorflow`` with one rank, used only when Horovod is not installed
    and the single-process launcher is used: every collective is the identity."""

    Average, Sum = "average", "sum"

    def init(self): ...
    def rank(self): return 0
    def size(self): return 1
    def local_rank(self): return 0
    def allreduce(self, tensor, op=None, name=None): return tensor
    def grouped_allreduce(self, tensors, op=None): return list(tensors)
    def broadcast_variables(self, variables, root_rank=0): ...
    def broadcast_object(self, obj, root_rank=0, name=None): return obj
    def allgather_object(self, obj, name=None): return [obj]


def _horovod(required: bool):
    try:
        import horovod.tensorflow as hvd
        return hvd
    except ImportError:
        if required:
            raise
        log.warning("horovod not importable: training as a single process without it")
        return _OneProcess()


def _training_cfg(cfg: dict) -> dict:
    return dict(cfg.get("training") or {})


def _warmup_schedule_class():
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="demandlake")
    class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
        """``base_lr`` ramping linearly to ``base_lr * multiplier`` over ``warmup_steps``, then
        constant or cosine-decayed to 0 at ``total_steps``."""

        def __init__(self, base_lr, multiplier=1.0, warmup_steps=0, total_steps=0,
                     decay="none"):
            self.base_lr, self.multiplier = float(base_lr), float(multiplier)
            self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
            self.decay = decay

        def __call__(self, step):
            step = ops.cast(step, "float32")
            warm = ops.minimum(1.0, step / float(max(self.warmup_steps, 1)))
            lr = self.base_lr * (1.0 + (self.multiplier - 1.0) * warm)
            if self.decay == "cosine" and self.total_steps > self.warmup_steps:
                span = float(self.total_steps - self.warmup_steps)
                progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
                lr = lr * 0.5 * (1.0 + ops.cos(math.pi * progress))
            return lr

        def get_config(self):
            return {"base_lr": self.base_lr, "multiplier": self.multiplier,
                    "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                    "decay": self.decay}

    return WarmupSchedule


# ---- checkpoints -----------------------------------------------------------------------------
class Checkpoints:
    """Per-epoch checkpoints in ``directory/ckpt-NNNN`` (model + optimizer variables + state).

    Written to a temporary folder and renamed, so a crash never leaves a half checkpoint that a
    resume would pick up.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        self.dir = Path(directory)
        self.keep = max(int(keep), 1)

    def all(self) -> list[Path]:
        if not self.dir.exists():
            return []
        found = [p for p in self.dir.iterdir()
                 if CKPT_RE.match(p.name) and (p / "state.json").exists()]
        return sorted(found, key=lambda p: int(CKPT_RE.match(p.name).group(1)))

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def save(self, epoch: int, model, optimizer, state: dict,
             best: list[np.ndarray] | None = None) -> Path:
        import keras

        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"ckpt-{epoch:04d}"
        tmp = self.dir / f".tmp-ckpt-{epoch:04d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        np.savez(tmp / "model.npz", *[keras.ops.convert_to_numpy(v) for v in model.variables])
        np.savez(tmp / "optimizer.npz",
                 *[keras.ops.convert_to_numpy(v) for v in optimizer.variables])
        if best is not None:
            np.savez(tmp / "best.npz", *best)
        (tmp / "state.json").write_text(json.dumps(state, indent=1, default=float))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.all()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def restore(path: Path, model, optimizer) -> dict:
        for name, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
            with np.load(path / f"{name}.npz") as data:
                values = [data[f"arr_{i}"] for i in range(len(data.files))]
            if len(values) != len(variables):
                raise ValueError(f"checkpoint {path} holds {len(values)} {name} variables, the "
                                 f"{name} has {len(variables)}: model config changed?")
            for var, value in zip(variables, values):
                if tuple(var.shape) != value.shape:
                    raise ValueError(f"checkpoint {path}: {var.path} shape {value.shape} != "
                                     f"{tuple(var.shape)}")
                var.assign(value)
        return json.loads((path / "state.json").read_text())

    @staticmethod
    def best_weights(path: Path) -> list[np.ndarray] | None:
        """The best epoch's model variables saved beside a checkpoint (None if not kept)."""
        if not (path / "best.npz").exists():
            return None
        with np.load(path / "best.npz") as data:
            return [data[f"arr_{i}"] for i in range(len(data.files))]


# ---- helpers ---------------------------------------------------------------------------------
def epoch_order(n: int, total: int, seed: int, epoch: int, rank: int) -> np.ndarray:
    """This rank's example order for one epoch: a pure function of (seed, epoch, rank), so a
    resumed run sees exactly the batches an uninterrupted one would. Cycles through fresh
    permutations until ``total`` indices (every rank runs the same number of full batches)."""
    rng = np.random.default_rng([int(seed), int(epoch), int(rank)])
    reps = max(1, -(-int(total) // max(n, 1)))
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:total]


def _flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(tree, dict):
        out: dict[str, np.ndarray] = {}
        for k in sorted(tree):
            out.update(_flatten(tree[k], f"{prefix}{k}/"))
        return out
    return {prefix.rstrip("/"): np.atleast_1d(np.asarray(tree, dtype=np.float64))}


def _unflatten(flat: dict[str, np.ndarray], template: Any, prefix: str = "") -> Any:
    if isinstance(template, dict):
        return {k: _unflatten(flat, v, f"{prefix}{k}/") for k, v in template.items()}
    value = flat[prefix.rstrip("/")]
    return float(value[0]) if np.ndim(template) == 0 else value


def _finite(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))}


# ---- the rank's entry point --------------------------------------------------------------------
def train(task: str, cfg: dict, data_spec: dict, out_dir: str) -> dict:
    """Train one model; run by every rank.

    Args:
        task: ``sequence`` or ``sentiment``.
        cfg: the resolved configuration as a plain dict (``Config.data``).
        data_spec: from the driver: ``splits`` ({split: {"split", "files"}}), ``table_version``,
            task facts (``vocab_sizes``...), optional ``mlflow`` ({"tracking_uri", "run_id"}),
            optional ``champion_uri`` (the serving model to evaluate on the same validation
            data), optional ``champion_splits`` ({split: {"split", "files"}}: those rows coded
            with the champion's own vocabulary, when it differs from ``splits``') and
            ``launcher``.
        out_dir: shared folder for checkpoints and the result (rank 0 writes).

    Returns:
        On every rank: epochs, final metrics per split, champion metrics, model URI (rank 0).
    """
    import keras
    import tensorflow as tf

    from demandlake.training import evaluate as ev
    from demandlake.training.data import read_shard
    from demandlake.training.tasks import make_task

    tcfg = _training_cfg(cfg)
    hvd = _horovod(required=data_spec.get("launcher", "local") != "local")
    hvd.init()  # Horovod: join the job's ranks (a no-op world of one in a single process)
    rank, size = hvd.rank(), hvd.size()  # Horovod: who am I, how many of us
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    threads = int(tcfg.get("threads") or 0)
    if threads:
        try:  # only possible before TF's runtime starts (not in a process that already used TF)
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
        except RuntimeError:
            log.debug("TF threads already initialised; keeping them")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            # Horovod: one GPU per local rank, so the ranks on a host do not share a device.
            tf.config.experimental.set_visible_devices(gpus[hvd.local_rank() % len(gpus)], "GPU")
            tf.config.experimental.set_memory_growth(gpus[hvd.local_rank() % len(gpus)], True)
        except RuntimeError:
            log.warning("GPUs already initialised in this process; device pinning skipped")
    use_gpu = bool(gpus)
    mp = str(tcfg.get("mixed_precision", "auto"))
    policy = "mixed_bfloat16" if (mp == "auto" and use_gpu) or mp == "bfloat16" else "float32"
    xla_cfg = str(tcfg.get("xla", "auto")).lower()
    use_xla = (xla_cfg == "auto" and use_gpu) or xla_cfg in ("true", "1", "on")
    if tcfg.get("deterministic"):
        tf.config.experimental.enable_op_determinism()
    seed = int(tcfg.get("seed", 7))
    keras.utils.set_random_seed(seed)  # same initial weights on every rank and every run

    t = make_task(task, cfg, data_spec)
    splits = data_spec.get("splits") or {}
    if not splits.get("train", {}).get("files"):
        raise ValueError("data_spec has no train files")
    tables = {}
    for split in ("train", "validation", "test"):
        spec = splits.get(split)
        if spec and spec.get("files"):
            tables[split] = read_shard(spec, rank, size, t.columns, t.row_filter)
    # Horovod: every rank learns every shard size, so all agree on steps (or all raise).
    counts = hvd.allgather_object({s: (tab.num_rows if tab is not None else 0)
                                   for s, tab in tables.items()})
    train_counts = [c["train"] for c in counts]
    if min(train_counts) == 0:
        raise ValueError(f"a rank has no training rows (rows per rank: {train_counts}); "
                         f"use fewer ranks or more files")
    arrays = t.prepare(tables, hvd)
    x_train, y_train = arrays["train"]
    n_local = len(next(iter(y_train.values())))

    batch = int(tcfg.get("batch_size", 64))
    epochs = int(tcfg.get("epochs", 3))
    steps = -(-max(train_counts) // batch)  # Horovod: same step count on every rank
    scale = size if tcfg.get("scale_lr", True) else 1  # Horovod: larger global batch, larger lr
    warmup_steps = int(round(float(tcfg.get("warmup_epochs", 1)) * steps)) if scale > 1 else 0
    schedule = _warmup_schedule_class()(
        float(tcfg.get("learning_rate", 1e-3)), scale, warmup_steps, steps * epochs,
        str(tcfg.get("decay", "none")))

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = t.build_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    clipnorm = tcfg.get("clipnorm")
    optimizer = keras.optimizers.Adam(learning_rate=schedule,
                                      global_clipnorm=float(clipnorm) if clipnorm else None)
    trainable = model.trainable_variables
    optimizer.build(trainable)

    ckpts = Checkpoints(out / "checkpoints", int(tcfg.get("keep_checkpoints", 2)))
    state = {"epoch": 0, "history": [], "seed": seed, "ranks": size, "best": None}
    best_weights = None
    if rank == 0 and tcfg.get("resume", True):  # Horovod: only rank 0 reads the checkpoint...
        latest = ckpts.latest()
        if latest is not None:
            state = Checkpoints.restore(latest, model, optimizer)
            best_weights = Checkpoints.best_weights(latest)
            log.info("resumed from %s (epoch %d done)", latest, state["epoch"])
            if state.get("ranks") != size:
                log.warning("checkpoint written with %s ranks, resuming with %d: the data "
                            "order differs from an uninterrupted run", state.get("ranks"), size)
    state = hvd.broadcast_object(state, root_rank=0)  # Horovod: ...and tells the others
    resumed_from_epoch = int(state["epoch"])
    # Horovod: start every rank from rank 0's variables (fresh or restored) and optimizer state.
    hvd.broadcast_variables([v.value for v in model.variables], root_rank=0)
    hvd.broadcast_variables([v.value for v in optimizer.variables], root_rank=0)

    sparse_as_dense = bool(tcfg.get("sparse_as_dense", True))

    @tf.function(jit_compile=use_xla)
    def compute_gradients(xb, yb):
        with tf.GradientTape() as tape:
            outputs = model(xb, training=True)
            losses = t.losses(yb, outputs)
        return losses, tape.gradient(losses["loss"], trainable)

    @tf.function
    def train_step(xb, yb):
        losses, grads = compute_gradients(xb, yb)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, trainable)]
        if sparse_as_dense:
            # Horovod: embedding gradients arrive as IndexedSlices; dense ones allreduce in one
            # fused group (fine while embeddings are small; sparse_as_dense=false gathers slices).
            grads = [tf.convert_to_tensor(g) for g in grads]
        dense = [i for i, g in enumerate(grads) if not isinstance(g, tf.IndexedSlices)]
        # Horovod: average the gradients of all ranks, so every rank applies the same update.
        reduced = hvd.grouped_allreduce([grads[i] for i in dense], op=hvd.Average)
        for i, g in zip(dense, reduced):
            grads[i] = g
        for i, g in enumerate(grads):
            if isinstance(g, tf.IndexedSlices):
                grads[i] = hvd.allreduce(g, op=hvd.Average)  # Horovod: sparse = allgather
        optimizer.apply_gradients(zip(grads, trainable))
        return losses

    @tf.function(jit_compile=use_xla)
    def forward(xb):
        return model(xb, training=False)

    def batches(x, y, order):
        def gen():
            for s in range(0, len(order), batch):
                idx = order[s:s + batch]
                yield ({k: v[idx] for k, v in x.items()}, {k: v[idx] for k, v in y.items()})

        def spec(v):
            return tf.TensorSpec((batch, *v.shape[1:]), tf.as_dtype(v.dtype))

        sig = ({k: spec(v) for k, v in x.items()}, {k: spec(v) for k, v in y.items()})
        return tf.data.Dataset.from_generator(gen, output_signature=sig).prefetch(2)

    def predict_arrays(x):
        n = len(next(iter(x.values())))
        if n == 0:
            return keras.tree.map_structure(
                lambda s: np.zeros((0, *s.shape[1:]), np.float32), model.output)
        eb = int(tcfg.get("eval_batch_size", 512))
        parts = [forward({k: v[s:s + eb] for k, v in x.items()}) for s in range(0, n, eb)]
        return {k: np.concatenate([np.asarray(p[k], np.float32) for p in parts])
                for k in parts[0]}

    has_val = "validation" in arrays or any(c.get("validation") for c in counts)
    # Keep the weights of the best validation epoch (small data overfits): by the validation
    # loss (both heads, as trained), or by the promotion metric (keep_best_metric: promotion).
    if tcfg.get("keep_best_metric", "loss") == "promotion":
        metric_name, higher_is_better = t.promotion()
        best_key = f"val_{metric_name}"
    else:
        best_key, higher_is_better = "val_loss", False
    keep_best = bool(tcfg.get("keep_best", True)) and has_val
    tracker = None
    if rank == 0 and data_spec.get("mlflow"):  # Horovod: only rank 0 talks to MLflow
        from demandlake.training.tracking import RankTracker

        tracker = RankTracker(data_spec["mlflow"])
        tracker.log_params({"ranks": size, "steps_per_epoch": steps, "global_batch": batch * size,
                            "peak_learning_rate": float(tcfg.get("learning_rate", 1e-3)) * scale,
                            "policy": policy, "xla": use_xla, "train_rows": sum(train_counts)})

    broadcast_done = False
    for epoch in range(int(state["epoch"]), epochs):
        order = epoch_order(n_local, steps * batch, seed, epoch, rank)
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        for xb, yb in batches(x_train, y_train, order):
            losses = train_step(xb, yb)
            if not broadcast_done:
                # Horovod: after the first step, broadcast again so any optimizer state created
                # lazily by the first apply_gradients is identical on every rank.
                hvd.broadcast_variables([v.value for v in model.variables], root_rank=0)
                hvd.broadcast_variables([v.value for v in optimizer.variables], root_rank=0)
                broadcast_done = True
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        train_seconds = time.perf_counter() - t0
        local = {f"train_{k}": v / steps for k, v in sums.items()}
        # Horovod: average the epoch's training losses over the ranks.
        reduced = hvd.allreduce(tf.constant([local[k] for k in sorted(local)], tf.float64),
                                op=hvd.Average, name=f"train_losses_{epoch}")
        metrics = dict(zip(sorted(local), np.asarray(reduced).tolist()))
        metrics["examples_per_second"] = steps * batch * size / max(train_seconds, 1e-9)
        metrics["epoch_seconds"] = train_seconds
        if has_val:
            xv, yv = arrays.get("validation", (None, None))
            vsums = t.val_sums(yv, predict_arrays(xv)) if xv is not None else None
            if vsums is None:  # this rank has no validation rows: contribute zeros
                vsums = keras.tree.map_structure(np.zeros_like, t.val_sums(*_empty(t, model)))
            flat = _flatten(vsums)
            # Horovod: sum the validation statistics of all ranks, then compute the metrics.
            total = hvd.allreduce(tf.constant(np.concatenate(list(flat.values()))),
                                  op=hvd.Sum, name=f"val_sums_{epoch}")
            total = np.asarray(total)
            cuts = np.cumsum([v.size for v in flat.values()])[:-1]
            merged = _unflatten(dict(zip(flat, np.split(total, cuts))), vsums)
            metrics.update(t.val_metrics(merged))
        best = state.get("best")
        value = metrics.get(best_key, float("nan"))
        if keep_best and math.isfinite(value) and (
                best is None or (value > best["value"] if higher_is_better
                                 else value < best["value"])):
            # Same metrics on every rank (allreduced), so every rank makes the same choice.
            best = {"epoch": epoch + 1, "metric": best_key, "value": float(value)}
            best_weights = [keras.ops.convert_to_numpy(v) for v in model.variables]
        state = {"epoch": epoch + 1, "history": [*state["history"], {"epoch": epoch + 1,
                                                                     **_finite(metrics)}],
                 "seed": seed, "ranks": size, "best": best}
        if rank == 0:  # Horovod: only rank 0 writes checkpoints, so ranks cannot corrupt them
            ckpts.save(epoch + 1, model, optimizer, state,
                       best_weights if keep_best else None)
            log.info("epoch %d/%d: %s", epoch + 1, epochs,
                     {k: round(v, 4) for k, v in _finite(metrics).items()})
        if tracker is not None:
            tracker.log_metrics(_finite(metrics), step=epoch + 1)

    best = state.get("best")
    if keep_best and best and best["epoch"] != state["epoch"]:
        # Horovod: rank 0 always holds the best weights (a resumed rank 0 read them from the
        # checkpoint); the others take them from it.
        best_weights = hvd.broadcast_object(best_weights if rank == 0 else None, root_rank=0)
        for var, value in zip(model.variables, best_weights):
            var.assign(value)
        log.info("keeping the weights of epoch %d (%s %.4f)", best["epoch"], best["metric"],
                 best["value"])

    if tcfg.get("save_all_ranks"):
        # Diagnostics: every rank saves its weights so a test can check they are identical.
        np.savez(out / f"weights-rank{rank}.npz",
                 *[keras.ops.convert_to_numpy(v) for v in model.trainable_variables])

    result = _final_evaluation(t, model, tables, counts, data_spec, hvd, rank, ev)
    result.update(epochs=state["history"], ranks=size, policy=policy, xla=use_xla,
                  train_rows_per_rank=train_counts, best_epoch=state.get("best"),
                  task=task, table_version=data_spec.get("table_version"),
                  resumed_from_epoch=resumed_from_epoch)
    if rank == 0:
        serving = t.serving_model(model)
        serving.save(out / "model.keras")
        meta = t.pyfunc_meta()
        (out / "pyfunc_meta.json").write_text(json.dumps(meta, indent=1))
        if tracker is not None:
            example = next(t.frame(tab).head(3) for tab in tables.values()
                           if tab is not None and tab.num_rows)
            result["model_uri"] = tracker.log_final(t, serving, meta, example, result,
                                                    out / "plots")
        (out / "result.json").write_text(json.dumps(_jsonable(result), indent=1))
    return result


def _empty(t, model):
    """Zero-row labels and outputs with the right shapes (for a rank without validation rows)."""
    import keras

    out = keras.tree.map_structure(lambda s: np.zeros((0, *s.shape[1:]), np.float32),
                                   model.output)
    if t.name == "sequence":
        y = {"purchase": np.zeros((0, 1), np.float32),
             "categories": np.zeros((0, t.max_labels), np.int32)}
    else:
        y = {"positive": np.zeros((0, 1), np.float32)}
    return y, out


def _champion_tables(t, data_spec, rank, size) -> dict | None:
    """This rank's shard of the rows the driver coded with the champion's own vocabulary
    (``champion_splits``), or None when there are none (the champion shares the new model's
    vocabulary, or has no vocabulary table: sentiment); the shared tables serve then."""
    from demandlake.training.data import read_shard

    specs = data_spec.get("champion_splits")
    if not specs:
        return None
    return {split: read_shard(spec, rank, size, t.columns, t.row_filter)
            for split, spec in specs.items()}


def _final_evaluation(t, model, tables, counts, data_spec, hvd, rank, ev) -> dict:
    """Metrics of the new model (and the champion) per split, through the pyfunc wrappers.

    The champion is judged on validation rows coded as scoring codes its inputs: its own copy
    of them when the driver rebuilt one with its vocabulary, else the new model's shards.
    """
    from demandlake.training import predictors

    cls = getattr(predictors, t.predictor_class_name)
    candidate = cls(t.pyfunc_meta(), t.serving_model(model))
    # who -> (pyfunc, this rank's tables, every rank's row counts of them)
    judged = {"model": (candidate, tables, counts)}
    champion_uri = data_spec.get("champion_uri")
    if champion_uri:
        import mlflow

        mlflow.set_tracking_uri(data_spec["mlflow"]["tracking_uri"])
        own = _champion_tables(t, data_spec, rank, hvd.size())
        if own is None:
            own, own_counts = tables, counts
        else:
            # Horovod: every rank learns every shard size, so all evaluate or skip together.
            own_counts = hvd.allgather_object({s: (tab.num_rows if tab is not None else 0)
                                               for s, tab in own.items()})
        judged["champion"] = (mlflow.pyfunc.load_model(champion_uri), own, own_counts)
    result: dict = {"metrics": {}, "sums": {}}
    for split in ("validation", "test"):
        for who, (m, split_tables, split_counts) in judged.items():
            if who == "champion" and split != "validation":
                continue
            if not any(c.get(split) for c in split_counts):
                continue
            tab = split_tables.get(split)
            if tab is not None and tab.num_rows:
                sums = t.eval_sums(tab, m.predict(t.frame(tab)))
            else:
                sums = {}
            # Horovod: gather every rank's sums (their keys differ, e.g. categories per shard).
            merged = ev.merge(hvd.allgather_object(sums))
            key = split if who == "model" else f"champion_{split}"
            result["metrics"][key] = t.eval_metrics(merged)
            result["sums"][key] = merged
    return result


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if k != "sums"}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj
