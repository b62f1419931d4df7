"""Test data and lake builders shared by several test modules (no tests here).

Test modules import these, never each other: ``scored_lake`` builds the tiny scored lake behind
the ``scored_lake`` fixture of tests/conftest.py; ``feature_events`` holds the hand-made events
of the user-feature tests.
"""
