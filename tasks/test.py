"""test tasks."""
