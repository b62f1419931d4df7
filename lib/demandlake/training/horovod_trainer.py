"""The one distributed training code path (Horovod + TensorFlow + Keras 3), for every model.

``train(task, cfg, data_spec, out_dir)`` runs inside every rank, whichever launcher started it
(``horovodrun``, ``horovod.spark.run`` or a single process). The models differ only in their
:mod:`~demandlake.training.tasks` object (columns, preprocessing, model, loss, metrics, the rows
the champion is judged on); this module never asks which task it trains.

What a rank does, each step a method of ``_RankRun`` that ``train`` calls in turn:

1. ``hvd.init()`` (as it is made), then ``devices_and_precision``: pins one GPU per local rank
   when there are GPUs (then mixed bfloat16 and XLA); seeds every rank alike;
2. ``read_data``: reads ITS OWN shard of the driver's Delta snapshot
   (:mod:`~demandlake.training.data`) and lets the task fit its preprocessing (the sentiment
   vocabulary is merged across ranks);
3. ``build_model`` and ``restore``: builds the model with the same seed everywhere, restores the
   last checkpoint on rank 0 and broadcasts model and optimizer state from rank 0;
4. ``epoch_loop``: trains with a custom ``tf.GradientTape`` step whose gradients are averaged
   across ranks with ``hvd.grouped_allreduce`` (never ``hvd.DistributedOptimizer``: with Keras 3
   variables and ``model.fit`` the ranks would silently train apart, see docs/STACK.md); the
   learning rate is scaled by the number of ranks with a linear warm-up (Goyal et al. 2017);
   after every epoch: validation sums reduced with ``hvd.allreduce``, a checkpoint written by
   rank 0 (model, optimizer, epoch, RNG states; the data order is a pure function of
   ``(seed, epoch, rank)``), metrics logged to MLflow by rank 0 only;
5. ``final_evaluation``: the new model and the serving champion (when given) on the same
   validation rows through their pyfunc wrappers (the champion's own copy of them when the task
   names one: the sequence rows coded with its vocabulary);
6. ``export``: rank 0 saves the model, logs it and the plots to MLflow, writes the result.

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
    # Keras and TensorFlow load before Horovod's TensorFlow binding, as they always have.
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    run = _RankRun(task, cfg, data_spec, out_dir)
    run.devices_and_precision()
    run.read_data()
    run.build_model()
    run.restore()
    run.epoch_loop()
    result = run.final_evaluation()
    run.export(result)
    return result


def _row_counts(tables: dict) -> dict[str, int]:
    return {s: (tab.num_rows if tab is not None else 0) for s, tab in tables.items()}


def _read(t, spec: dict, rank: int, size: int):
    """This rank's rows of one split, with the task's columns and row filter."""
    from demandlake.training.data import read_shard

    return read_shard(spec, rank, size, t.columns, t.row_filter, getattr(t, "order_by", ()))


class _RankRun:
    """One rank's training run: :func:`train` calls its steps in order.

    What the steps share is attributes: the Horovod world (``hvd``, ``rank``, ``size``), the task
    ``t`` (everything that differs between models), this rank's data, the model and optimizer,
    and ``state`` (epochs done, their metrics, the best epoch: what a checkpoint holds).
    """

    def __init__(self, task: str, cfg: dict, data_spec: dict, out_dir: str):
        self.task, self.cfg, self.data_spec = task, cfg, data_spec
        self.tcfg = _training_cfg(cfg)
        self.hvd = _horovod(required=data_spec.get("launcher", "local") != "local")
        self.hvd.init()  # Horovod: join the job's ranks (a no-op world of one in a single process)
        self.rank, self.size = self.hvd.rank(), self.hvd.size()  # Horovod: who am I, how many of us
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.tracker = None
        self.broadcast_done = False

    # -- device and precision --
    def devices_and_precision(self) -> None:
        """TF threads, one GPU per local rank, the precision policy, XLA, determinism, the seed."""
        import keras
        import tensorflow as tf

        tcfg = self.tcfg
        threads = int(tcfg.get("threads") or 0)
        if threads:
            try:  # only possible before TF's runtime starts (not in a process that already used TF)
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
            except RuntimeError:
                log.debug("TF threads already initialised; keeping them")
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            mine = gpus[self.hvd.local_rank() % len(gpus)]
            try:
                # Horovod: one GPU per local rank, so the ranks on a host do not share a device.
                tf.config.experimental.set_visible_devices(mine, "GPU")
                tf.config.experimental.set_memory_growth(mine, True)
            except RuntimeError:
                log.warning("GPUs already initialised in this process; device pinning skipped")
        use_gpu = bool(gpus)
        mp = str(tcfg.get("mixed_precision", "auto"))
        self.policy = ("mixed_bfloat16" if (mp == "auto" and use_gpu) or mp == "bfloat16"
                       else "float32")
        xla_cfg = str(tcfg.get("xla", "auto")).lower()
        self.use_xla = (xla_cfg == "auto" and use_gpu) or xla_cfg in ("true", "1", "on")
        if tcfg.get("deterministic"):
            tf.config.experimental.enable_op_determinism()
        self.seed = int(tcfg.get("seed", 7))
        keras.utils.set_random_seed(self.seed)  # same initial weights on every rank and every run

    # -- data --
    def read_data(self) -> None:
        """The task, this rank's shard of every split, every rank's row counts, and the task's
        arrays (with whatever preprocessing it fits on the training rows)."""
        from demandlake.training.tasks import make_task

        self.t = make_task(self.task, self.cfg, self.data_spec)
        splits = self.data_spec.get("splits") or {}
        if not splits.get("train", {}).get("files"):
            raise ValueError("data_spec has no train files")
        self.tables = {split: _read(self.t, splits[split], self.rank, self.size)
                       for split in ("train", "validation", "test")
                       if splits.get(split) and splits[split].get("files")}
        # Horovod: every rank learns every shard size, so all agree on steps (or all raise).
        self.counts = self.hvd.allgather_object(_row_counts(self.tables))
        self.train_counts = [c["train"] for c in self.counts]
        if min(self.train_counts) == 0:
            raise ValueError(f"a rank has no training rows (rows per rank: {self.train_counts}); "
                             f"use fewer ranks or more files")
        self.arrays = self.t.prepare(self.tables, self.hvd)
        self.x_train, self.y_train = self.arrays["train"]
        self.n_local = len(next(iter(self.y_train.values())))

    # -- model --
    def build_model(self) -> None:
        """Steps per epoch, the learning-rate schedule, the model (built in the precision policy)
        and its optimizer."""
        import keras

        tcfg = self.tcfg
        self.batch = int(tcfg.get("batch_size", 64))
        self.epochs = int(tcfg.get("epochs", 3))
        self.steps = -(-max(self.train_counts) // self.batch)  # Horovod: same steps on every rank
        # Horovod: a larger global batch takes a larger learning rate, reached by a warm-up.
        self.scale = self.size if tcfg.get("scale_lr", True) else 1
        warmup_steps = (int(round(float(tcfg.get("warmup_epochs", 1)) * self.steps))
                        if self.scale > 1 else 0)
        schedule = _warmup_schedule_class()(
            float(tcfg.get("learning_rate", 1e-3)), self.scale, warmup_steps,
            self.steps * self.epochs, str(tcfg.get("decay", "none")))
        keras.mixed_precision.set_global_policy(self.policy)
        try:
            self.model = self.t.build_model()
        finally:
            keras.mixed_precision.set_global_policy("float32")
        clipnorm = tcfg.get("clipnorm")
        self.optimizer = keras.optimizers.Adam(
            learning_rate=schedule, global_clipnorm=float(clipnorm) if clipnorm else None)
        self.trainable = self.model.trainable_variables
        self.optimizer.build(self.trainable)

    # -- restore --
    def restore(self) -> None:
        """Rank 0 restores the latest checkpoint (when ``resume``); every rank then starts from
        rank 0's training state, model variables and optimizer state."""
        tcfg = self.tcfg
        self.ckpts = Checkpoints(self.out / "checkpoints", int(tcfg.get("keep_checkpoints", 2)))
        state = {"epoch": 0, "history": [], "seed": self.seed, "ranks": self.size, "best": None}
        self.best_weights = None
        if self.rank == 0 and tcfg.get("resume", True):  # Horovod: only rank 0 reads it...
            latest = self.ckpts.latest()
            if latest is not None:
                state = Checkpoints.restore(latest, self.model, self.optimizer)
                self.best_weights = Checkpoints.best_weights(latest)
                log.info("resumed from %s (epoch %d done)", latest, state["epoch"])
                if state.get("ranks") != self.size:
                    log.warning("checkpoint written with %s ranks, resuming with %d: the data "
                                "order differs from an uninterrupted run", state.get("ranks"),
                                self.size)
        self.state = self.hvd.broadcast_object(state, root_rank=0)  # Horovod: ...and tells all
        self.resumed_from_epoch = int(self.state["epoch"])
        self._broadcast_variables()

    def _broadcast_variables(self) -> None:
        # Horovod: every rank takes rank 0's model variables and optimizer state.
        self.hvd.broadcast_variables([v.value for v in self.model.variables], root_rank=0)
        self.hvd.broadcast_variables([v.value for v in self.optimizer.variables], root_rank=0)

    # -- epoch loop --
    def epoch_loop(self) -> None:
        """Train the epochs not done yet (validation, checkpoint and MLflow metrics after each),
        then keep the best epoch's weights."""
        self._compile_steps()
        self._choose_best_metric()
        self._start_tracking()
        for epoch in range(int(self.state["epoch"]), self.epochs):
            metrics = self._train_epoch(epoch)
            if self.has_val:
                metrics.update(self._validation_metrics(epoch))
            self._end_epoch(epoch, metrics)
        self._keep_best_weights()
        if self.tcfg.get("save_all_ranks"):
            import keras

            # Diagnostics: every rank saves its weights so a test can check they are identical.
            np.savez(self.out / f"weights-rank{self.rank}.npz",
                     *[keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables])

    def _compile_steps(self) -> None:
        """The compiled training step (gradients averaged over the ranks) and forward pass."""
        import tensorflow as tf

        hvd, model, optimizer, t = self.hvd, self.model, self.optimizer, self.t
        trainable = self.trainable
        sparse_as_dense = bool(self.tcfg.get("sparse_as_dense", True))

        @tf.function(jit_compile=self.use_xla)
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
                # Horovod: embedding gradients arrive as IndexedSlices; dense ones allreduce in
                # one fused group (fine while embeddings are small; sparse_as_dense=false
                # gathers slices).
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

        @tf.function(jit_compile=self.use_xla)
        def forward(xb):
            return model(xb, training=False)

        self.train_step, self.forward = train_step, forward

    def _choose_best_metric(self) -> None:
        """Which epoch's weights to keep (small data overfits): the best by the validation loss
        (both heads, as trained), or by the promotion metric (``keep_best_metric: promotion``)."""
        tcfg = self.tcfg
        self.has_val = "validation" in self.arrays or any(c.get("validation")
                                                          for c in self.counts)
        if tcfg.get("keep_best_metric", "loss") == "promotion":
            metric_name, self.higher_is_better = self.t.promotion()
            self.best_key = f"val_{metric_name}"
        else:
            self.best_key, self.higher_is_better = "val_loss", False
        self.keep_best = bool(tcfg.get("keep_best", True)) and self.has_val

    def _start_tracking(self) -> None:
        if self.rank != 0 or not self.data_spec.get("mlflow"):  # Horovod: rank 0 talks to MLflow
            return
        from demandlake.training.tracking import RankTracker

        self.tracker = RankTracker(self.data_spec["mlflow"])
        self.tracker.log_params({
            "ranks": self.size, "steps_per_epoch": self.steps,
            "global_batch": self.batch * self.size,
            "peak_learning_rate": float(self.tcfg.get("learning_rate", 1e-3)) * self.scale,
            "policy": self.policy, "xla": self.use_xla, "train_rows": sum(self.train_counts)})

    def _batches(self, x: dict, y: dict, order: np.ndarray):
        """``(x, y)`` batches of ``batch`` rows in ``order``, as a prefetching dataset."""
        import tensorflow as tf

        batch = self.batch

        def gen():
            for s in range(0, len(order), batch):
                idx = order[s:s + batch]
                yield ({k: v[idx] for k, v in x.items()}, {k: v[idx] for k, v in y.items()})

        def spec(v):
            return tf.TensorSpec((batch, *v.shape[1:]), tf.as_dtype(v.dtype))

        sig = ({k: spec(v) for k, v in x.items()}, {k: spec(v) for k, v in y.items()})
        return tf.data.Dataset.from_generator(gen, output_signature=sig).prefetch(2)

    def _train_epoch(self, epoch: int) -> dict:
        """One epoch of training steps; the training losses averaged over the ranks."""
        import tensorflow as tf

        hvd, steps, batch = self.hvd, self.steps, self.batch
        order = epoch_order(self.n_local, steps * batch, self.seed, epoch, self.rank)
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        for xb, yb in self._batches(self.x_train, self.y_train, order):
            losses = self.train_step(xb, yb)
            if not self.broadcast_done:
                # Horovod: after the first step, broadcast again so any optimizer state created
                # lazily by the first apply_gradients is identical on every rank.
                self._broadcast_variables()
                self.broadcast_done = True
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        train_seconds = time.perf_counter() - t0
        local = {f"train_{k}": v / steps for k, v in sums.items()}
        # Horovod: average the epoch's training losses over the ranks.
        reduced = hvd.allreduce(tf.constant([local[k] for k in sorted(local)], tf.float64),
                                op=hvd.Average, name=f"train_losses_{epoch}")
        metrics = dict(zip(sorted(local), np.asarray(reduced).tolist()))
        metrics["examples_per_second"] = steps * batch * self.size / max(train_seconds, 1e-9)
        metrics["epoch_seconds"] = train_seconds
        return metrics

    def _predict_arrays(self, x: dict) -> dict:
        import keras

        n = len(next(iter(x.values())))
        if n == 0:
            return keras.tree.map_structure(
                lambda s: np.zeros((0, *s.shape[1:]), np.float32), self.model.output)
        eb = int(self.tcfg.get("eval_batch_size", 512))
        parts = [self.forward({k: v[s:s + eb] for k, v in x.items()}) for s in range(0, n, eb)]
        return {k: np.concatenate([np.asarray(p[k], np.float32) for p in parts])
                for k in parts[0]}

    def _validation_sums(self) -> dict:
        """This rank's validation statistics (the task's sums over its rows)."""
        import keras

        if "validation" in self.arrays:
            xv, yv = self.arrays["validation"]
            return self.t.val_sums(yv, self._predict_arrays(xv))
        # No validation rows on this rank: it contributes zeros, in the structure the task's
        # sums have (taken from zero rows of its training arrays).
        x0 = {k: v[:0] for k, v in self.x_train.items()}
        y0 = {k: v[:0] for k, v in self.y_train.items()}
        return keras.tree.map_structure(np.zeros_like,
                                        self.t.val_sums(y0, self._predict_arrays(x0)))

    def _validation_metrics(self, epoch: int) -> dict:
        """The task's validation metrics over every rank's validation rows."""
        import tensorflow as tf

        vsums = self._validation_sums()
        flat = _flatten(vsums)
        # Horovod: sum the validation statistics of all ranks, then compute the metrics.
        total = self.hvd.allreduce(tf.constant(np.concatenate(list(flat.values()))),
                                   op=self.hvd.Sum, name=f"val_sums_{epoch}")
        total = np.asarray(total)
        cuts = np.cumsum([v.size for v in flat.values()])[:-1]
        return self.t.val_metrics(_unflatten(dict(zip(flat, np.split(total, cuts))), vsums))

    def _end_epoch(self, epoch: int, metrics: dict) -> None:
        """Note the best epoch so far, checkpoint (rank 0) and log the epoch's metrics."""
        import keras

        best = self.state.get("best")
        value = metrics.get(self.best_key, float("nan"))
        if self.keep_best and math.isfinite(value) and (
                best is None or (value > best["value"] if self.higher_is_better
                                 else value < best["value"])):
            # Same metrics on every rank (allreduced), so every rank makes the same choice.
            best = {"epoch": epoch + 1, "metric": self.best_key, "value": float(value)}
            self.best_weights = [keras.ops.convert_to_numpy(v) for v in self.model.variables]
        self.state = {"epoch": epoch + 1,
                      "history": [*self.state["history"], {"epoch": epoch + 1,
                                                           **_finite(metrics)}],
                      "seed": self.seed, "ranks": self.size, "best": best}
        if self.rank == 0:  # Horovod: only rank 0 writes checkpoints, so ranks cannot corrupt them
            self.ckpts.save(epoch + 1, self.model, self.optimizer, self.state,
                            self.best_weights if self.keep_best else None)
            log.info("epoch %d/%d: %s", epoch + 1, self.epochs,
                     {k: round(v, 4) for k, v in _finite(metrics).items()})
        if self.tracker is not None:
            self.tracker.log_metrics(_finite(metrics), step=epoch + 1)

    def _keep_best_weights(self) -> None:
        best = self.state.get("best")
        if not (self.keep_best and best and best["epoch"] != self.state["epoch"]):
            return
        # Horovod: rank 0 always holds the best weights (a resumed rank 0 read them from the
        # checkpoint); the others take them from it.
        self.best_weights = self.hvd.broadcast_object(
            self.best_weights if self.rank == 0 else None, root_rank=0)
        for var, value in zip(self.model.variables, self.best_weights):
            var.assign(value)
        log.info("keeping the weights of epoch %d (%s %.4f)", best["epoch"], best["metric"],
                 best["value"])

    # -- final evaluation --
    def final_evaluation(self) -> dict:
        """Metrics of the new model (and the champion) per split, through the pyfunc wrappers,
        with the run's facts.

        The champion is judged on validation rows coded as scoring codes its inputs: those the
        task names for it (:meth:`~demandlake.training.tasks.Task.champion_splits`), else the new
        model's shards.
        """
        from demandlake.training import evaluate as ev

        t, hvd = self.t, self.hvd
        result: dict = {"metrics": {}, "sums": {}}
        judged = self._judged()
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
        result.update(epochs=self.state["history"], ranks=self.size, policy=self.policy,
                      xla=self.use_xla, train_rows_per_rank=self.train_counts,
                      best_epoch=self.state.get("best"), task=self.task,
                      table_version=self.data_spec.get("table_version"),
                      resumed_from_epoch=self.resumed_from_epoch)
        return result

    def _judged(self) -> dict:
        """Who is evaluated: ``{who: (pyfunc, this rank's tables, every rank's row counts)}``."""
        from demandlake.training import predictors

        t, hvd = self.t, self.hvd
        cls = getattr(predictors, t.predictor_class_name)
        judged = {"model": (cls(t.pyfunc_meta(), t.serving_model(self.model)), self.tables,
                            self.counts)}
        champion_uri = self.data_spec.get("champion_uri")
        if not champion_uri:
            return judged
        import mlflow

        mlflow.set_tracking_uri(self.data_spec["mlflow"]["tracking_uri"])
        specs = t.champion_splits(self.data_spec)
        if specs is None:
            own, own_counts = self.tables, self.counts
        else:
            own = {split: _read(t, spec, self.rank, self.size) for split, spec in specs.items()}
            # Horovod: every rank learns every shard size, so all evaluate or skip together.
            own_counts = hvd.allgather_object(_row_counts(own))
        judged["champion"] = (mlflow.pyfunc.load_model(champion_uri), own, own_counts)
        return judged

    # -- export --
    def export(self, result: dict) -> None:
        """Rank 0 saves the serving model and its pyfunc facts, logs model and plots to MLflow
        (adding ``model_uri`` to ``result``) and writes ``result.json``."""
        if self.rank != 0:  # Horovod: only rank 0 writes the model and the result
            return
        t = self.t
        serving = t.serving_model(self.model)
        serving.save(self.out / "model.keras")
        meta = t.pyfunc_meta()
        (self.out / "pyfunc_meta.json").write_text(json.dumps(meta, indent=1))
        if self.tracker is not None:
            example = next(t.frame(tab).head(3) for tab in self.tables.values()
                           if tab is not None and tab.num_rows)
            result["model_uri"] = self.tracker.log_final(t, serving, meta, example, result,
                                                         self.out / "plots")
        (self.out / "result.json").write_text(json.dumps(_jsonable(result), indent=1))


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
