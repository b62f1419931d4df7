"""The stage graph, declared once: which stages run, in which order, and what each one takes
from the stages before it.

Everything that runs the pipeline is built from this module: the CLI (``demandlake nightly``,
``backfill`` and the single-stage commands), the spark-submit shells in ``jobs/`` (one per stage,
``jobs/<stage>.py``) and both Airflow DAGs. It imports only the standard library, because the
Airflow DAG files load it by path in Airflow's own environment, where neither pyspark nor this
package is installed.

A stage hands nothing to the next one in memory. What a later stage needs from an earlier one
(``reads``) is either a table or a record in ``ops.runs``, so a stage run on its own, as a
spark-submit job or an Airflow task, finds exactly what the whole chain would have given it. For
example ``sessions`` re-sessionizes the event dates that the run date's ingest runs wrote to
(late dates included), which it reads from their ``dates`` metric in ``ops.runs``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class Stage:
    """One stage of a graph.

    Attributes:
        name: the stage's name: its CLI command, ``jobs/<name>.py`` and the Airflow task id.
        does: one line on what it does.
        reads: what it takes from earlier stages: tables, or ``ops.runs:<stage>.<metric>``.
        writes: the tables it writes (besides ``ops.runs`` and ``ops.quality_checks``).
        options: keyword options the graph runs it with; a job takes each as a flag
            (``if_none_serving=True`` -> ``--if-none-serving``).
        per_date: whether it runs for a run date (``--run-date``); ``maintain`` does not.
        headline: the counts its one line in a run's output shows.
    """

    name: str
    does: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    options: Mapping[str, bool] = field(default_factory=dict)
    per_date: bool = True
    headline: tuple[str, ...] = ()

    def job_flags(self) -> list[str]:
        """The spark-submit job's flags for this stage's options."""
        return [f"--{k.replace('_', '-')}" for k, on in sorted(self.options.items()) if on]


INGEST = Stage(
    "ingest", "raw files of the run date -> bronze (bad records quarantined with a reason)",
    reads=("raw: ingest.sources for the run date",),
    writes=("bronze.events", "bronze.reviews", "bronze.quarantine"),
    headline=("read", "new", "duplicates", "quarantined"))
SESSIONS = Stage(
    "sessions", "sessionize the users with events on the dates ingest wrote to (late ones too)",
    reads=("bronze.events", "ops.runs:ingest.dates"), writes=("silver.sessions",),
    headline=("sessions", "affected_users", "inserted", "updated", "deleted"))
REVIEW_SENTIMENT = Stage(
    "review_sentiment", "score unscored reviews with the serving sentiment model",
    reads=("bronze.reviews", "registry:demandlake-sentiment"),
    writes=("gold.review_sentiment", "gold.item_sentiment", "gold.complaint_terms"),
    headline=("scored", "item_sentiment", "complaint_terms", "skipped"))
FEATURES = Stage(
    "features", "point-in-time user features of the run date",
    reads=("bronze.events", "bronze.reviews", "silver.sessions", "gold.review_sentiment"),
    writes=("gold.user_features",), headline=("users",))
SCORE = Stage(
    "score", "score every active user: forecasts, profiles, recommendations",
    reads=("gold.user_features", "gold.review_sentiment", "bronze.events",
           "registry:demandlake-sequence"),
    writes=("gold.demand_forecasts", "gold.user_profiles", "gold.recommendations"),
    headline=("users", "forecasts", "fallbacks", "recommendations"))


def _train(model: str, table: str, when_missing: bool) -> Stage:
    what = f"train the {model} model" + (" when none is serving yet" if when_missing else "")
    source = "bronze.events" if model == "sequence" else "bronze.reviews"
    return Stage(f"train_{model}", what + " (registered; promoted only when better)",
                 reads=(source,), writes=(table, f"registry:demandlake-{model}"),
                 options={"if_none_serving": True} if when_missing else {},
                 headline=("skipped", "reason", "version", "promoted"))


TABLES_OF_TRAINING = {"sequence": "gold.sequence_examples", "sentiment": "gold.review_corpus"}

# The nightly chain. A model is trained here only when none serves yet (a new lake); the weekly
# RETRAIN graph retrains both. The sentiment model comes first so that features see review
# sentiment (gold.user_features.mean_review_sentiment).
NIGHTLY: tuple[Stage, ...] = (
    INGEST,
    SESSIONS,
    _train("sentiment", TABLES_OF_TRAINING["sentiment"], when_missing=True),
    REVIEW_SENTIMENT,
    FEATURES,
    _train("sequence", TABLES_OF_TRAINING["sequence"], when_missing=True),
    SCORE,
)

MAINTAIN = Stage("maintain", "compact every Delta table (OPTIMIZE)", per_date=False)

# Weekly: retrain both models, then redo what depends on the models for the latest date.
RETRAIN: tuple[Stage, ...] = (
    _train("sentiment", TABLES_OF_TRAINING["sentiment"], when_missing=False),
    _train("sequence", TABLES_OF_TRAINING["sequence"], when_missing=False),
    REVIEW_SENTIMENT,
    FEATURES,
    SCORE,
    MAINTAIN,
)

GRAPHS: dict[str, tuple[Stage, ...]] = {"nightly": NIGHTLY, "retrain": RETRAIN}

# The stages that a first run on an empty lake runs over the whole history in one batch before
# the nightly chain of the last date (``demandlake nightly``; docs/OPERATIONS.md).
HISTORY: tuple[str, ...] = ("ingest", "sessions")


def stage_names() -> list[str]:
    """Every stage of every graph, once, in first-seen order (one job file each)."""
    seen: dict[str, None] = {}
    for graph in GRAPHS.values():
        for stage in graph:
            seen.setdefault(stage.name, None)
    return list(seen)


def options_of(name: str) -> list[str]:
    """Every option that some graph runs stage ``name`` with (its job's and command's flags)."""
    return sorted({o for g in GRAPHS.values() for s in g if s.name == name for o in s.options})


def stage(name: str, graph: str = "nightly") -> Stage:
    """The stage called ``name`` in ``graph`` (falling back to any graph that has it)."""
    for s in GRAPHS[graph] + tuple(s for g in GRAPHS.values() for s in g):
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(stage_names())}")
