"""The pipeline: the stage graph and the stages that read the lake, call the pure transforms and
write their tables.

* ``graph``     the stage graph, declared once (standard library only; Airflow loads it too)
* ``stages``    stage name -> the function that runs it; what a stage reads from earlier stages
* ``chain``     runs a graph: ``nightly`` (batched history on an empty lake), ``backfill``
* ``ingest``    raw files -> bronze
* ``transform`` bronze -> silver.sessions and the gold feature tables
* ``train``     training data, training and registration of both models
* ``score``     review sentiment and nightly scoring

Nothing is imported here, so that ``demandlake.pipeline.graph`` loads without pyspark.
"""
