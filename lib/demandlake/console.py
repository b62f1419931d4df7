"""What a person sees of a run: one line per stage, a progress bar over many dates, quiet logs.

``setup_logging`` sends the Python log (INFO, full tracebacks) to a file under the lake,
``<lake>/_logs/`` (a local cache folder when the lake is remote), and shows only warnings and
errors on the console; ``spark_log`` names the file the JVM's own log goes to beside it. A run's
output is then the stage lines of ``Reporter`` and, at the end, where the logs are.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, TextIO

from demandlake.config import Config, local_path

log = logging.getLogger(__name__)

FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that log at INFO what nobody running the pipeline needs on the console.
NOISY = ("py4j", "mlflow", "alembic", "urllib3", "matplotlib", "absl", "h5py", "tensorflow")


@dataclass(frozen=True)
class RunLogs:
    """Where one command's logs go."""

    folder: Path
    python: Path
    spark: Path


def log_folder(cfg: Config) -> Path:
    """``<lake>/_logs`` for a local lake, else the user's cache (``~/.cache/demandlake/logs``)."""
    lake = local_path(cfg.lake_uri)
    if lake is not None:
        return lake / "_logs"
    return Path(os.environ.get("DEMANDLAKE_CACHE", Path.home() / ".cache" / "demandlake")) / "logs"


def setup_logging(cfg: Config, command: str, console_level: str = "WARNING") -> RunLogs:
    """Log to a file per command run and keep the console to ``console_level`` and above.

    Args:
        command: names the files (``<timestamp>-<command>.log``).
        console_level: the least level shown on stderr (``--log-level``).

    Returns:
        The files: Python's log, and the one for the JVM (``spark.get_spark(java_log=...)``).
    """
    folder = log_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logs = RunLogs(folder, folder / f"{stamp}-{command}.log", folder / f"{stamp}-{command}.spark.log")
    level = getattr(logging, console_level.upper(), logging.WARNING)
    root = logging.getLogger()
    for h in list(root.handlers):  # a second command in one process (tests) replaces ours only
        if getattr(h, "_demandlake", False):
            root.removeHandler(h)
            h.close()
    to_file = logging.FileHandler(logs.python, encoding="utf-8")
    to_file.setFormatter(logging.Formatter(FILE_FORMAT))
    to_file.setLevel(min(level, logging.INFO))
    to_console = logging.StreamHandler(sys.stderr)
    to_console.setFormatter(_Brief("%(levelname)s %(name)s: %(message)s"))
    to_console.setLevel(level)
    to_console.addFilter(_for_the_console)
    for h in (to_file, to_console):
        h._demandlake = True
        root.addHandler(h)
    root.setLevel(min(level, logging.INFO))
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Libraries' warnings (UserWarning & co.) and MLflow's own records go through logging, so
    # to the file; MLflow would otherwise install its own console handler when imported.
    logging.captureWarnings(True)
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    return logs


def _for_the_console(record: logging.LogRecord) -> bool:
    """The project's own warnings and anybody's errors; the rest stays in the log file."""
    if getattr(record, "file_only", False):
        return False
    return record.levelno >= logging.ERROR or record.name.split(".")[0] == "demandlake"


class _Brief(logging.Formatter):
    """The console's format: the message without its traceback (the log file has it)."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text = saved


# ``log.error(..., extra=FILE_ONLY)``: for the log file alone (the console gets one line).
FILE_ONLY = {"file_only": True}


def _number(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.3g}"
    return str(v)


def stage_line(run_date: dt.date | None, stage: str, counts: Mapping, seconds: float,
               headline: tuple[str, ...]) -> str:
    """``2026-11-28  ingest            3.4 s  read=5,210 new=5,190 ...`` (the headline counts)."""
    shown = " ".join(f"{k}={_number(counts[k])}" for k in headline
                     if k in counts and counts[k] is not None)
    when = run_date.isoformat() if run_date else "-" * 10
    return f"{when}  {stage:18s}{seconds:7.1f} s  {shown}".rstrip()


class Reporter:
    """Prints a run's stage lines; over several dates, a progress bar on a terminal.

    On a terminal (``stream.isatty()``) ``dates`` shows a ``rich`` progress bar that the stage
    lines scroll above; otherwise (a log file, Airflow, CI) it prints plain lines only.
    """

    def __init__(self, stream: TextIO | None = None, bar: bool | None = None):
        self.stream = stream or sys.stdout
        self.bar = self.stream.isatty() if bar is None else bar
        self._progress = None

    def line(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def stage(self, run_date: dt.date | None, stage: str, counts: Mapping, seconds: float,
              headline: tuple[str, ...] = ()) -> None:
        self.line(stage_line(run_date, stage, counts, seconds, headline))

    @contextlib.contextmanager
    def dates(self, what: str, dates: list[dt.date]) -> Iterator["callable"]:
        """Yields ``advance(date)``, called when a date is done."""
        t0 = time.monotonic()
        if not self.bar or len(dates) < 2:
            def advance(d: dt.date) -> None:
                i = dates.index(d) + 1
                self.line(f"{what}: {i}/{len(dates)} dates done ({d}, "
                          f"{time.monotonic() - t0:.0f} s)")

            yield advance
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        progress = Progress(TextColumn(f"{what} {{task.description}}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=Console(file=self.stream))
        task = progress.add_task(str(dates[0]), total=len(dates))
        self._progress = progress
        try:
            with progress:
                def advance(d: dt.date) -> None:
                    nxt = dates.index(d) + 1
                    progress.update(task, advance=1,
                                    description=str(dates[nxt]) if nxt < len(dates) else "done")

                yield advance
        finally:
            self._progress = None
