"""The files of an index: layout and generations, SQLite documents, FAISS vectors, BM25 postings, checks."""
