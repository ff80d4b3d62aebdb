"""Search side of xlsearch: open an index, retrieve, fuse, aggregate to documents."""
from .fusion import linear, min_max, rrf
from .index.loader import LoadedIndex, load_index
from .searcher import FUSIONS, MODES, Hit, Searcher, SearchResult

__all__ = ["FUSIONS", "MODES", "Hit", "LoadedIndex", "SearchResult", "Searcher", "linear",
           "load_index", "min_max", "rrf"]
