"""xlsearch: cross-lingual semantic search."""
