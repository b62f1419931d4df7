"""Raw logs to bronze: format readers, validation into quarantine reasons, dedup, reconciliation."""
