"""A first run loads the history in one batch: the same tables as replaying it day by day."""
from __future__ import annotations

import datetime as dt
import json

from demandlake import faults, lake, synth
from demandlake.console import Reporter
from demandlake.pipeline import chain, graph
from helpers.catalog import forget_catalog

START = dt.date(2026, 11, 1)
DAYS = 4  # the raw files hold four days; both runs end on the third


def _ev(eid: str, price: float, ts: str) -> str:
    return json.dumps({"event_id": eid, "user_id": "h1", "event_type": "view", "item_id": "h9",
                       "category": "shoes", "brand": "acme", "price": price, "quantity": None,
                       "timestamp": ts})


def _write(path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")


def test_the_history_in_one_batch_gives_the_tables_of_the_day_by_day_replay(spark, cfg,
                                                                          tmp_path):
    """The history stages (ingest, sessions) replayed day by day and run once over every date:
    every table the same, the ingest counts the sum of the days', and the cases where the order
    of the files decides: ids sent again with other content on a later day (the earlier file's
    record wins both, whichever hash is smaller), an event in the future for the first day's
    run but not for the third's, a folder that is not a date, a day after the run date. In the
    lake's zone (Asia/Shanghai), so that dates are not UTC dates."""
    raw = tmp_path / "raw"
    synth.generate(raw, users=25, days=DAYS, start_date=START.isoformat(), seed=3)
    planted = synth.plant_faults(raw, seed=3)  # late events, repeats, conflicts, bad records
    assert planted["late"] == DAYS - 1 and planted["bad"] == 4 * (DAYS - 1)
    d0, d1, d2, d3 = (START + dt.timedelta(days=i) for i in range(DAYS))
    # "ahead" is future for d0's run (end of d0 in Shanghai + 24 h = d1 16:00 UTC), not for d2's.
    _write(raw / "events" / f"dt={d0}" / "part-extra.jsonl",
           [_ev("x", 1.0, f"{d0}T10:00:00Z"), _ev("y", 2.0, f"{d0}T10:00:00Z"),
            _ev("ahead", 3.0, f"{d2}T06:00:00Z")])
    _write(raw / "events" / f"dt={d1}" / "part-extra.jsonl",
           [_ev("x", 2.0, f"{d0}T10:00:00Z"), _ev("y", 1.0, f"{d0}T10:00:00Z")])
    _write(raw / "events" / "dt=latest" / "part-extra.jsonl", [_ev("nodate", 1.0, f"{d0}T10:00:00Z")])
    history = [s for s in graph.NIGHTLY if s.name in graph.HISTORY]
    quiet = Reporter(bar=False)
    settings = {"lake.raw_uri": str(raw), "lake.timezone": "Asia/Shanghai"}

    replay = cfg.with_overrides({**settings, "lake.uri": str(tmp_path / "replay")})
    daily = [chain.run_graph(spark, replay, history, d, quiet)["ingest"] for d in (d0, d1, d2)]
    replayed = faults.snapshot(spark, replay)

    forget_catalog(spark)  # two lakes in one test: the names must point at the one in use
    batch = cfg.with_overrides({**settings, "lake.uri": str(tmp_path / "batch")})
    totals = chain.run_graph(spark, batch, history, d2, quiet,
                             {"ingest": {"history": True}})["ingest"]
    batched = faults.snapshot(spark, batch)

    for name in ("bronze.events", "bronze.reviews", "bronze.quarantine", "silver.sessions"):
        assert replayed[name], f"{name} is empty: the sample does not exercise it"
    assert faults.compare(replayed, batched) == {}

    for k in ("read", "new", "duplicates", "quarantined"):
        assert totals[k] == sum(c[k] for c in daily), k
    assert totals["read"] == totals["new"] + totals["duplicates"] + totals["quarantined"]
    assert totals["dates"] == sorted({d for c in daily for d in c["dates"]})
    run = lake.read(spark, batch, "ops.runs").where("stage = 'ingest'").first()
    assert (run.run_date, run.metrics["history"]) == (d2, f"{d0}..{d2}")
    # What both must have stored, from the files written above (not from either run).
    events = {r.event_id: r for r in lake.read(spark, batch, "bronze.events")
              .where("event_id IN ('x', 'y', 'ahead', 'nodate')").collect()}
    assert (events["x"].price, events["y"].price) == (1.0, 2.0) and set(events) == {"x", "y"}
    quarantine = lake.read(spark, batch, "bronze.quarantine").collect()
    mine = sorted((json.loads(r.raw)["event_id"], r.reason, r.ingest_date) for r in quarantine
                  if r.source_file.endswith("part-extra.jsonl"))
    assert mine == [("ahead", "timestamp_in_future", d0), ("x", "conflicting_duplicate_id", d1),
                    ("y", "conflicting_duplicate_id", d1)]
    assert {r.ingest_date for r in quarantine} == {d0, d1, d2}  # the date each file was read under
    files = {r.source_file for name in ("bronze.events", "bronze.reviews", "bronze.quarantine")
             for r in lake.read(spark, batch, name).select("source_file").distinct().collect()}
    assert not [f for f in files if f"dt={d3}" in f or "dt=latest" in f]
