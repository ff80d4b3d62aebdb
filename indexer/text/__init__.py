"""Text before the model sees it: record files, corpora, validation, language, chunking, lexical analysis."""
