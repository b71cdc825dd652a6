"""deploy tasks."""
