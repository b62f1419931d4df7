"""A first run loads the history in one batch: the same tables as replaying it day by day."""
from __future__ import annotations

import datetime as dt

from demandlake import faults, synth
from demandlake.console import Reporter
from demandlake.pipeline import chain, graph
from helpers.catalog import forget_catalog

START = dt.date(2026, 11, 1)
DAYS = 3


def test_the_history_in_one_batch_gives_the_tables_of_the_day_by_day_replay(spark, cfg,
                                                                          tmp_path):
    raw = tmp_path / "raw"
    synth.generate(raw, users=25, days=DAYS, start_date=START.isoformat(), seed=3)
    planted = synth.plant_faults(raw, seed=3)  # late events, repeats, conflicts, bad records
    assert planted["late"] == DAYS - 1 and planted["bad"] == 4 * (DAYS - 1)
    dates = [START + dt.timedelta(days=i) for i in range(DAYS)]
    history = [s for s in graph.NIGHTLY if s.name in graph.HISTORY]
    quiet = Reporter(bar=False)

    replay = cfg.with_overrides({"lake.raw_uri": str(raw), "lake.uri": str(tmp_path / "replay")})
    for d in dates:
        chain.run_graph(spark, replay, history, d, quiet)
    replayed = faults.snapshot(spark, replay)

    forget_catalog(spark)  # two lakes in one test: the names must point at the one in use
    batch = cfg.with_overrides({"lake.raw_uri": str(raw), "lake.uri": str(tmp_path / "batch")})
    chain.run_graph(spark, batch, history, dates[-1], quiet, {"ingest": {"history": True}})
    batched = faults.snapshot(spark, batch)

    for name in ("bronze.events", "bronze.reviews", "bronze.quarantine", "silver.sessions"):
        assert replayed[name], f"{name} is empty: the sample does not exercise it"
    assert faults.compare(replayed, batched) == {}
