"""indexer.encoding."""
