"""Nightly scoring: pandas-UDF model scoring, segments and profiles, forecasts, recommendations
and review sentiment.

Modules here are transforms (DataFrames in, DataFrames out) and UDF builders; reading the lake,
resolving the serving models and writing the outputs happen in :mod:`demandlake.pipeline.score`.
``docs/SCORING.md`` describes the tables, the rules and the measured throughput.
"""
