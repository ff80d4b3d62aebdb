"""Search side of xlsearch: open an index, retrieve, fuse, aggregate to documents.

Rooms: ``index`` (open a plain or sharded index) and ``eval`` (benchmarks, metrics
and the evaluation harness). Names below load on first use.
"""
from ..indexer.lazy import lazy_exports

_EXPORTS = {
    "FUSIONS": ".options", "MODES": ".options", "Hit": ".searcher", "Searcher": ".searcher",
    "SearchResult": ".searcher", "linear": ".fusion", "min_max": ".fusion", "rrf": ".fusion",
    "LoadedIndex": ".index.loader", "load_index": ".index.loader",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
