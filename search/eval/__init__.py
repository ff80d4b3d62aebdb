"""xlsearch evaluate: benchmark readers, metrics, and the harness that asks and scores."""
