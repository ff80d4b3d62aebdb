"""indexer.tasks."""
