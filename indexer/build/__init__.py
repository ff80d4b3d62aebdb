"""indexer.build."""
