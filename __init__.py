"""xlsearch: cross-lingual semantic search.

``import xlsearch`` loads no torch; the model loads when an index first needs it::

    import xlsearch
    with xlsearch.open_index("my-index", model="multilingual-e5-small") as index:
        index.add([{"id": "a1", "text": "Neil Armstrong pisó la Luna en 1969.", "lang": "es"}])
        for hit in index.search("Who first walked on the Moon?", k=5):
            print(hit.id, hit.score, hit.lang, hit.passage[:80])
"""
from .indexer.lazy import lazy_exports

_EXPORTS = {
    "open_index": ".api.library", "Index": ".api.library", "Document": ".indexer.document",
    "Hit": ".search.searcher", "IndexConfig": ".indexer.config", "XlsearchError": ".indexer.errors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
