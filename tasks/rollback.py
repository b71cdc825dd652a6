"""rollback tasks."""
