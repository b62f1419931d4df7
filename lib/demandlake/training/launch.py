"""Launchers: how the ranks of :func:`~demandlake.training.horovod_trainer.train` are started.

``training.launcher`` picks one:

- ``local`` (embedded default): this process is the only rank (size 1, no horovodrun);
- ``horovodrun``: ``horovodrun -np N -H HOSTS --gloo python -m demandlake.training.worker``
  as a subprocess (hosts default ``localhost:N``), the job described in ``OUT/job.json``;
- ``spark``: ``horovod.spark.run(fn, num_proc=N)`` inside the running (classic, not Connect)
  Spark application: N barrier-free Spark tasks that must all run at once, so the cluster needs N
  free task slots (on GPU clusters also ``spark.task.resource.gpu.amount=1``).

All three return rank 0's result dict.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

LAUNCHERS = ("local", "horovodrun", "spark")


def _rank_env(tcfg: dict, num_proc: int) -> dict[str, str]:
    """Thread settings for every rank: N ranks on one host must not each take every core
    (``training.threads``, else this host's cores divided by the ranks)."""
    threads = str(int(tcfg.get("threads") or 0) or max(1, (os.cpu_count() or 1) // num_proc))
    return {"OMP_NUM_THREADS": threads, "TF_NUM_INTRAOP_THREADS": threads,
            "TF_NUM_INTEROP_THREADS": threads, "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1"}


def launch(task: str, cfg: dict, data_spec: dict, out_dir: str, spark=None) -> dict:
    """Run the training job with the configured launcher.

    Args:
        task: ``sequence`` or ``sentiment``.
        cfg: resolved configuration (``Config.data``).
        data_spec: see :func:`~demandlake.training.horovod_trainer.train`.
        out_dir: folder for checkpoints, logs and the result (shared by the ranks).
        spark: the active session (``spark`` launcher only).

    Returns:
        Rank 0's result.
    """
    tcfg = dict(cfg.get("training") or {})
    launcher = tcfg.get("launcher", "local")
    num_proc = int(tcfg.get("num_proc", 1))
    if launcher not in LAUNCHERS:
        raise ValueError(f"training.launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if num_proc < 1:
        raise ValueError(f"training.num_proc must be >= 1, got {num_proc}")
    spec = {**data_spec, "launcher": launcher}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    log.info("training %s with launcher %s, %d rank(s), out %s", task, launcher, num_proc,
             out_dir)
    if launcher == "local":
        if num_proc != 1:
            raise ValueError("the local launcher runs exactly one rank; use horovodrun or spark")
        from demandlake.training.horovod_trainer import train

        return train(task, cfg, spec, out_dir)
    if launcher == "horovodrun":
        return run_horovodrun(task, cfg, spec, out_dir, num_proc, tcfg.get("hosts") or None,
                              _rank_env(tcfg, num_proc), int(tcfg.get("timeout_s") or 0) or None,
                              restarts=int(tcfg.get("restarts", 0)))
    if spark is None:
        raise ValueError("the spark launcher needs the SparkSession")
    return run_on_spark(task, cfg, spec, out_dir, num_proc, _rank_env(tcfg, num_proc),
                        int(tcfg.get("start_timeout_s") or 600))


def horovodrun_command(num_proc: int, job_file: str, hosts: str | None = None) -> list[str]:
    """The ``horovodrun`` command line for a job file."""
    exe = Path(sys.executable).parent / "horovodrun"
    return [str(exe) if exe.exists() else "horovodrun", "-np", str(num_proc),
            "-H", hosts or f"localhost:{num_proc}", "--gloo",
            sys.executable, "-m", "demandlake.training.worker", "--job", str(job_file)]


def run_horovodrun(task: str, cfg: dict, data_spec: dict, out_dir: str, num_proc: int,
                   hosts: str | None = None, env: dict | None = None,
                   timeout_s: int | None = None, restarts: int = 0) -> dict:
    """Start the ranks with ``horovodrun --gloo`` and wait; output goes to ``OUT/horovodrun.log``
    (``horovodrun-2.log``, ... for restarts).

    A rank that dies (killed, out of memory, a lost host) makes horovodrun stop every rank and
    exit non-zero. With ``restarts`` > 0 the job is started again, up to that many times, and
    resumes from the last complete checkpoint (``training.resume``), so it loses at most the
    epoch in progress; with ``training.deterministic`` it ends with the weights an uninterrupted
    run would have had (``tests/test_training.py``).

    Raises:
        RuntimeError: the last attempt failed (its log's tail is in the message).
    """
    if restarts < 0:
        raise ValueError(f"training.restarts must be >= 0, got {restarts}")
    out = Path(out_dir)
    job = out / "job.json"
    job.write_text(json.dumps({"task": task, "cfg": cfg, "data_spec": data_spec,
                               "out_dir": str(out)}, default=str))
    cmd = horovodrun_command(num_proc, str(job), hosts)
    run_env = {**os.environ, **(env or {})}
    lib = str(Path(__file__).resolve().parents[2])
    run_env["PYTHONPATH"] = os.pathsep.join(p for p in (lib, run_env.get("PYTHONPATH")) if p)
    for attempt in range(1, restarts + 2):
        (out / "result.json").unlink(missing_ok=True)
        log_path = out / ("horovodrun.log" if attempt == 1 else f"horovodrun-{attempt}.log")
        log.info("running %s (attempt %d of %d)", " ".join(cmd), attempt, restarts + 1)
        with open(log_path, "w") as fh:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=run_env,
                                  timeout=timeout_s)
        if proc.returncode == 0 and (out / "result.json").exists():
            result = json.loads((out / "result.json").read_text())
            result["attempts"] = attempt
            return result
        tail = log_path.read_text(errors="replace")[-4000:]
        if attempt <= restarts:
            log.warning("horovodrun exited with %d (log %s); restarting from the last "
                        "checkpoint", proc.returncode, log_path)
    raise RuntimeError(f"horovodrun exited with {proc.returncode}; log {log_path}:\n{tail}")


def _spark_rank(task: str, cfg: dict, data_spec: dict, out_dir: str, env: dict) -> dict:
    """Body of each Spark task started by ``horovod.spark.run`` (imports happen on the worker)."""
    os.environ.update(env)
    from demandlake.training.horovod_trainer import _jsonable, train

    result = train(task, cfg, data_spec, out_dir)
    return _jsonable(result)


def shipped_archives() -> tuple[list[str], str | None]:
    """The archives of ``--py-files`` / ``addPyFile`` (file names) and the driver's copy folder."""
    from pyspark import SparkContext, SparkFiles

    sc = SparkContext._active_spark_context
    includes = list(getattr(sc, "_python_includes", None) or []) if sc is not None else []
    try:
        driver_root = SparkFiles.getRootDirectory() if includes else None
    except Exception:  # noqa: BLE001 - only a fallback location for local[N]
        driver_root = None
    return includes, driver_root


def with_shipped_archives(target, includes: list[str], driver_root: str | None):
    """A function for ``horovod.spark.run`` that puts the shipped archives on ``sys.path``, then
    runs ``target`` (``"module:function"``, imported after that; or a function of ``__main__``).

    Each rank is a new process (``python -m horovod.spark.task.gloo_exec_fn``) started by the
    Spark task with the Python worker's environment. pyspark puts the ``--py-files`` archives on
    ``sys.path`` only inside its own workers, never in ``PYTHONPATH``, so a rank started this way
    could not import demandlake shipped as a zip: ``_spark_rank`` itself, pickled by reference,
    failed to load ("No module named 'demandlake'"). The returned closure is pickled by value
    and needs nothing from demandlake to load: it adds the archives as pyspark's worker does (the
    executor's copies, in its working folder, which Horovod passes as ``HOROVOD_SPARK_WORK_DIR``;
    else the driver's, for ``local[N]``), and only then imports ``target``.
    """
    def rank(*args, **kwargs):
        import importlib
        import os
        import sys

        bases = [os.environ.get("HOROVOD_SPARK_WORK_DIR"), os.getcwd(), driver_root]
        for name in includes:
            for base in filter(None, bases):
                path = os.path.join(base, name)
                if os.path.exists(path):
                    if path not in sys.path:
                        sys.path.insert(1, path)
                    break
        fn = target
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        return fn(*args, **kwargs)

    return rank


def run_on_spark(task: str, cfg: dict, data_spec: dict, out_dir: str, num_proc: int,
                 env: dict | None = None, start_timeout_s: int = 600) -> dict:
    """Run the ranks as Spark tasks with ``horovod.spark.run`` (Gloo); returns rank 0's result.

    Works with demandlake installed on the nodes or shipped with ``--py-files`` as a zip
    (:func:`with_shipped_archives`).
    """
    import horovod.spark

    fn = with_shipped_archives("demandlake.training.launch:_spark_rank", *shipped_archives())
    results = horovod.spark.run(
        fn, args=(task, cfg, data_spec, out_dir, dict(env or {})), num_proc=num_proc,
        use_gloo=True, start_timeout=start_timeout_s, verbose=1)
    return results[0]
