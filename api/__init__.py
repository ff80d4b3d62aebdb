"""HTTP API and command line of xlsearch; no retrieval logic lives here."""
