"""Gold feature tables built from bronze/silver: user features, sequence examples, review corpus.

Every module here holds pure ``DataFrame -> DataFrame`` transforms; the stages that read and write
tables are in ``demandlake.pipeline.transform``.
"""
