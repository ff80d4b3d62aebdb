"""What a query may ask for: modes, fusions, the default fusion and the bound on k.

Kept apart from the searcher so that the command line can list the choices without
importing the stores (``xlsearch --help`` stays quick).
"""
from __future__ import annotations

from .fusion import FUSIONS as FUSION_METHODS

MODES = ("hybrid", "dense", "lexical")
FUSIONS = tuple(FUSION_METHODS)
DEFAULT_FUSION = "evidence"
MAX_K = 1000
