"""What a query may ask for: modes, fusions, the default fusion and the bound on k.

Kept apart from the searcher so that the command line can list the choices without
importing the stores (``xlsearch --help`` stays quick).
"""
from __future__ import annotations

from .fusion import FUSIONS as FUSION_METHODS

MODES = ("hybrid", "dense", "lexical")
AUTO = "auto"  # backed where the index holds the embeddings its model was trained to produce, else anchored
FUSIONS = (AUTO, *FUSION_METHODS)
DEFAULT_FUSION = AUTO
FUSION_HELP = ("auto (default): backed when the index holds the sentence embeddings its model was trained to "
               "produce (its sentence-transformers pooling at its layer: E5, or a model from xlsearch finetune), "
               "else anchored (a raw encoder such as mdeberta-v3-base, or another layer); backed: the dense side "
               "leads and the lexical side may only reorder what it believes in; anchored: the query's words lead "
               "as far as the best lexical hit covers the query, the dense side decides where they match nothing; "
               "evidence: each side votes with a "
               "probability over the candidates, the lexical vote scaled down when the dense side is sure; "
               "rrf: reciprocal rank, k=60; linear: min-max scores; zscore, dbsf: score normalisations")
MAX_K = 1000
