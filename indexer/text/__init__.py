"""indexer.text."""
