"""Okapi BM25 index over analyzed chunks, with incremental add and remove.

Scores equal ``rank_bm25.BM25Okapi(corpus, k1=k1, b=b, epsilon=epsilon)`` built on
the live chunks' token lists, in the same float64 operation order (bit for bit on
a freshly built index): ``idf = log(N - df + 0.5) - log(df + 0.5)``, negative idfs
replaced by ``epsilon * mean(idf)`` over the live vocabulary, and per query token
(repeats count again) ``idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))``.
Higher is better.

Term frequencies live in a CSC matrix (rows: chunks, columns: terms), so a query
touches only its terms' postings, and :meth:`BM25Index.search` skips most of a common term's
by MaxScore (:mod:`indexer.store.maxscore`). ``add`` queues a block of new rows, merged into the
matrix on the next read; ``remove`` marks rows dead, as Lucene's live-docs bits do: dead
rows stay in the matrix, masked out of every result, until more than an eighth of the
rows are dead and the matrix is compacted. N, df and avgdl always count live chunks only.

On disk: ``indexer.lexical_io`` (``save_bm25``, ``load_bm25``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import chain, count, repeat

import numpy as np
import scipy.sparse as sp

from ..errors import ChunkError, ConfigError
from .maxscore import Postings, QueryTerms, exact_scores, top_k



class BM25Index:
    """BM25 (Okapi, rank-bm25 semantics) over chunks addressed by int64 chunk ids.

    Args:
        k1: Term frequency saturation (>= 0).
        b: Length normalisation, in [0, 1].
        epsilon: Floor factor for negative idfs (times the mean idf).
    """

    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25) -> None:
        if not (math.isfinite(k1) and k1 >= 0 and 0 <= b <= 1 and math.isfinite(epsilon)):
            raise ConfigError(f"invalid BM25 parameters k1={k1}, b={b}, epsilon={epsilon}: "
                             "need k1 >= 0, 0 <= b <= 1 and a finite epsilon")
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        self._vocab: dict[str, int] = {}
        self._terms: list[str] = []
        self._matrix = sp.csc_matrix((0, 0), dtype=np.int32)  # merged rows x terms
        self._pending: list[sp.csc_matrix] = []  # added blocks not merged yet, in row order
        self._row_ids = np.empty(0, np.int64)  # chunk id per row, dead rows included
        self._doc_len = np.empty(0, np.int64)
        self._alive = np.empty(0, bool)
        self._row_of: dict[int, int] = {}  # live chunk id -> row
        self._total_len = 0  # tokens in live rows
        self._df: np.ndarray | None = None  # live chunks per term, cached
        self._stats: tuple[np.ndarray, np.ndarray] | None = None  # (idf per term, k1 * norm per row)
        self._scoring: Postings | None = None  # every posting with its tf part, for top_k
        self._tf_ready = np.zeros(0, bool)  # per term: its tf parts in _scoring are filled (with _stats)
        self._tf_top = np.zeros(0)  # per term: the largest of them
        self._collection: Collection | None = None  # statistics of a whole this index is part of, when set
        self._global_ids: tuple[Vocabulary, np.ndarray] | None = None  # term id -> id in a shared vocabulary
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None  # (sorted ids, their rows)

    # -- size ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._row_of)

    @property
    def chunk_ids(self) -> np.ndarray:
        """Live chunk ids in row order (the order of :meth:`get_scores`), int64 ``(n,)``."""
        return self._row_ids[self._alive]

    @property
    def total_length(self) -> int:
        """Tokens in live chunks."""
        return self._total_len

    def document_frequencies(self) -> np.ndarray:
        """int64 ``(terms,)``: live chunks holding each term, by term id (0 for terms of removed chunks)."""
        self._flush()
        if self._df is None:
            df = np.diff(self._matrix.indptr).astype(np.int64)
            if len(self._row_of) < len(self._row_ids):  # dead rows still in the matrix: uncount them
                dead = np.flatnonzero(~self._alive[self._matrix.indices])
                df -= np.bincount(np.searchsorted(self._matrix.indptr, dead, side="right") - 1, minlength=len(df))
            self._df = df
        return self._df

    def use_collection(self, collection: Collection | None) -> None:
        """Score with the statistics of a whole collection this index is a part of (a segment or a
        shard; None: its own)."""
        self._collection, self._stats = collection, None

    @property
    def vocabulary_size(self) -> int:
        """Number of distinct terms that occur in at least one live chunk."""
        return int(np.count_nonzero(self.document_frequencies()))

    # -- updates -------------------------------------------------------------
    def add(self, chunk_ids: Sequence[int], token_lists: Sequence[list[str]]) -> None:
        """Add chunks; existing chunks are neither re-tokenised nor rebuilt.

        Args:
            chunk_ids: ``n`` new integer chunk ids.
            token_lists: ``n`` lists of terms (from :func:`indexer.analysis.analyze`).

        Raises:
            ChunkError: Lengths differ, ids are not integers, or an id is already
                indexed or repeated.
        """
        ids = self._check_new_ids(chunk_ids, token_lists)
        if len(ids) == 0:
            return
        flat = list(chain.from_iterable(token_lists))
        term_ids = self._term_ids(flat)
        lengths = np.fromiter(map(len, token_lists), np.int64, len(ids))
        local_rows = np.repeat(np.arange(len(ids)), lengths)
        block = sp.coo_matrix((np.ones(len(flat), np.int32), (local_rows, term_ids)),
                              shape=(len(ids), len(self._terms))).tocsc()
        first = len(self._row_ids)
        self._pending.append(block)
        self._row_ids = np.concatenate([self._row_ids, ids])
        self._doc_len = np.concatenate([self._doc_len, lengths])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), bool)])
        self._row_of.update(zip(ids.tolist(), range(first, first + len(ids))))
        self._total_len += int(lengths.sum())
        self._stats = self._sorted = self._df = None

    def _term_ids(self, flat: list[str]) -> np.ndarray:
        """Map terms to ids, giving new terms the next ids in first-occurrence order.

        One C-level ``setdefault`` pass: a new term is first stored under its position
        in ``flat`` (offset by the vocabulary size), then renumbered. On error the
        vocabulary is left as it was.
        """
        base = len(self._terms)
        try:
            ids = np.fromiter(map(self._vocab.setdefault, flat, count(base)), np.int64, len(flat))
            firsts = np.flatnonzero(ids == np.arange(base, base + len(flat)))  # new terms, in order
            new_terms = [flat[p] for p in firsts.tolist()]
            if not all(map(isinstance, new_terms, repeat(str))) or "" in self._vocab:
                raise ChunkError("every term must be a non-empty str")
        except BaseException as exc:
            while self._vocab and next(reversed(self._vocab.values())) >= base:
                self._vocab.popitem()  # new terms were inserted last
            if isinstance(exc, TypeError):
                raise ChunkError(f"every term must be a non-empty str ({exc})") from None
            raise
        self._vocab.update(zip(new_terms, range(base, base + len(new_terms))))
        self._terms.extend(new_terms)
        renumber = np.zeros(len(flat), np.int64)
        renumber[firsts] = np.arange(base, base + len(firsts))
        new = ids >= base
        ids[new] = renumber[ids[new] - base]
        return ids

    def _check_new_ids(self, chunk_ids: Sequence[int], token_lists: Sequence[list[str]]) -> np.ndarray:
        """Validate the arguments of :meth:`add`; return the ids as int64 ``(n,)``."""
        if len(chunk_ids) != len(token_lists):
            raise ChunkError(f"{len(chunk_ids)} chunk ids but {len(token_lists)} token lists")
        ids = np.asarray(chunk_ids)
        if ids.size == 0:
            return np.empty(0, np.int64)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ChunkError(f"chunk ids must be a flat sequence of integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ChunkError("chunk ids repeat within one add() call")
        known = [i for i in ids.tolist() if i in self._row_of]
        if known:
            raise ChunkError(f"chunk ids already indexed: {known[:5]}; remove them first")
        if any(map(isinstance, token_lists, repeat(str))):
            raise ChunkError("token_lists must hold lists of terms, not strings; use analyze(text)")
        return ids

    def remove(self, chunk_ids: Iterable[int]) -> None:
        """Remove chunks by id; unknown ids are ignored."""
        if isinstance(chunk_ids, np.ndarray):
            chunk_ids = chunk_ids.tolist()
        for chunk_id in chunk_ids:
            row = self._row_of.pop(int(chunk_id), None)
            if row is not None:
                self._alive[row] = False
                self._total_len -= int(self._doc_len[row])
                self._stats = self._sorted = self._df = None

    def _flush(self, compact: bool = False) -> None:
        """Merge pending blocks; drop dead rows from the matrix when more than an eighth of the
        rows are dead, or whenever ``compact`` (no-op when clean)."""
        n_terms = len(self._terms)
        if self._pending:
            blocks = [self._matrix] + self._pending
            for block in blocks:
                block.resize((block.shape[0], n_terms))
            self._matrix = sp.vstack(blocks, format="csc", dtype=np.int32)
            self._matrix.sort_indices()  # postings must list rows in increasing order
            self._pending, self._scoring = [], None
        dead = len(self._row_ids) - len(self._row_of)
        if dead and (compact or dead * 8 > len(self._row_ids)):
            self._matrix = _drop_rows(self._matrix, self._alive)
            self._df = self._sorted = self._stats = self._scoring = None
            self._row_ids, self._doc_len = self._row_ids[self._alive], self._doc_len[self._alive]
            self._alive = np.ones(len(self._row_ids), bool)
            self._row_of = dict(zip(self._row_ids.tolist(), range(len(self._row_ids))))

    # -- scoring -------------------------------------------------------------
    def _prepare(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(idf per term, k1 * (1 - b + b * dl / avgdl) per row)``, computing them if stale."""
        if self._stats is None:
            self._flush()
            n = len(self._row_of)
            if self._collection is None:
                avgdl, idf = self._total_len / n if n else 1.0, _idf(self.document_frequencies(), n, self.epsilon)
            else:  # idf looked up per query term: a re-open costs no pass over this part's terms
                avgdl, idf = self._collection.avgdl, _PartIdf(self._collection, self)
            self._stats = (idf, self.k1 * (1 - self.b + self.b * self._doc_len / avgdl))
            self._tf_ready = np.zeros(self._matrix.shape[1], bool)
            self._tf_top = np.zeros(self._matrix.shape[1])
        return self._stats

    def _scoring_for(self, terms: np.ndarray) -> Postings:
        """Every posting, the tf parts ``tf * (k1 + 1) / (tf + k1 * norm)`` of ``terms`` filled (computed once
        per term until the statistics change)."""
        _, norm = self._prepare()
        matrix, scoring = self._matrix, self._scoring
        if scoring is None:
            scoring = self._scoring = Postings(matrix.data, matrix.indices, matrix.indptr, len(self._row_ids))
            self._tf_ready[:] = False
        scoring.fill(terms, norm, self.k1, self._tf_ready, self._tf_top)
        return scoring

    def _query_terms(self, query_tokens: list[str]) -> tuple[list[int], list[int]]:
        """(the distinct query terms in the vocabulary, in first-occurrence order, each token's position in
        them); a term's postings may be empty."""
        positions, query, vocab = {}, [], self._vocab
        for token in query_tokens:
            term = vocab.get(token)
            if term is not None:
                query.append(positions.setdefault(term, len(positions)))
        return list(positions), query

    def _postings(self, query_tokens: list[str]) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, contributions)`` per query token (repeats included) that is indexed."""
        idf, _ = self._prepare()
        terms, query = self._query_terms(query_tokens)
        scoring, indptr = self._scoring_for(np.array(terms, np.int64)), self._matrix.indptr
        for position in query:
            term = terms[position]
            lo, hi = indptr[term], indptr[term + 1]
            if hi > lo:
                yield scoring.rows[lo:hi], idf[term] * scoring.weights[lo:hi]

    def get_scores(self, query_tokens: list[str]) -> np.ndarray:
        """BM25 of every live chunk, float64 ``(n,)`` in :attr:`chunk_ids` order (higher is better)."""
        self._prepare()
        scores = np.zeros(len(self._row_ids))
        for rows, contrib in self._postings(query_tokens):
            scores[rows] += contrib
        return scores if len(self._row_of) == len(self._row_ids) else scores[self._alive]

    def query_weights(self, query_tokens: list[str]) -> np.ndarray:
        """float64 ``(len(query_tokens),)``: the idf each query term carries in this collection; a term
        no live chunk holds gets the idf of a term in no chunk, ``log((N + 0.5) / 0.5)``, the rarest there is.

        Their sum is about the BM25 score of an average-length chunk holding every query term once,
        the yardstick of how much of the query a chunk covers (``search.fusion``).
        """
        idf, _ = self._prepare()
        collection = self._collection
        n = collection.chunks if collection is not None else len(self._row_of)
        rarest = math.log(n + 0.5) - math.log(0.5)
        df = self.document_frequencies() if collection is None else None
        weights = np.full(len(query_tokens), rarest)
        for position, token in enumerate(query_tokens):
            if collection is not None:
                weight = collection.weight(token)
                if weight is not None:
                    weights[position] = weight
                continue
            term = self._vocab.get(token)
            if term is not None and df[term] > 0:  # some live chunk holds it
                weights[position] = idf[term]
        return weights

    def score_chunks(self, query_tokens: list[str], chunk_ids: Sequence[int]) -> np.ndarray:
        """Exact BM25 of the given chunks, float64 ``(len(chunk_ids),)``, 0 where no term matches.

        Raises:
            ChunkError: A chunk id is not in the index.
        """
        self._prepare()
        ids = np.asarray(chunk_ids, dtype=np.int64).tolist()
        missing = [i for i in ids if i not in self._row_of]
        if missing:
            raise ChunkError(f"chunk ids not in the lexical index: {missing[:5]}")
        wanted = np.array([self._row_of[i] for i in ids], dtype=np.int64)
        scoring, terms = self._scoring_terms(query_tokens)
        return np.zeros(len(wanted)) if terms is None else exact_scores(scoring, terms, wanted)

    def _scoring_terms(self, query_tokens: list[str]) -> tuple[Postings | None, QueryTerms | None]:
        """(the postings with the query's tf parts filled, the query's terms); None twice when no query term
        is in the vocabulary."""
        idf, _ = self._prepare()
        terms, query = self._query_terms(query_tokens)
        if not query:
            return None, None
        ids = np.array(terms, np.int64)
        scoring = self._scoring_for(ids)
        return scoring, scoring.terms(ids, np.asarray(idf[ids], np.float64), self._tf_top[ids], query)

    def search(self, query_tokens: list[str], k: int,
               allowed: np.ndarray | None = None, with_ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` chunks containing at least one query term.

        Args:
            query_tokens: Analyzed query; a repeated term counts each time.
            k: How many chunks at most (``k <= 0`` gives empty arrays).
            allowed: Optional int64 chunk ids to search among; the filter is applied
                before the top ``k`` are cut. Unknown ids are ignored.
            with_ties: Also return the chunks that tie with the ``k``-th score (up to ``2 k`` chunks
                in all), so the set returned does not depend on how ties are broken (by chunk id,
                which differs between a sharded and an unsharded index of the same documents).

        Returns:
            ``(chunk_ids int64, scores float64)``, at most ``k`` each, best first
            (higher is better); equal scores in insertion order.
        """
        scoring, terms = self._scoring_terms(query_tokens)
        if k <= 0 or terms is None:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        keep = None if allowed is None else self._row_mask(np.asarray(allowed, dtype=np.int64))
        if len(self._row_of) < len(self._row_ids):
            keep = self._alive if keep is None else keep & self._alive
        rows, scores, _ = top_k(scoring, terms, k, keep, with_ties)
        return self._row_ids[rows], scores

    def contains(self, chunk_ids: np.ndarray) -> np.ndarray:
        """Boolean mask over int64 ``chunk_ids``: which are live chunks of this index."""
        ids = np.asarray(chunk_ids, dtype=np.int64)
        sorted_ids, order = self._sorted_ids()
        if len(sorted_ids) == 0 or len(ids) == 0:
            return np.zeros(len(ids), bool)
        pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        return (sorted_ids[pos] == ids) & self._alive[order[pos]]

    def _sorted_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(every row's chunk id sorted, the rows in that order); dead rows included."""
        if self._sorted is None:
            order = np.argsort(self._row_ids, kind="stable")
            self._sorted = (self._row_ids[order], order)
        return self._sorted

    def _row_mask(self, allowed: np.ndarray) -> np.ndarray:
        """Boolean ``(n,)`` mask of the rows whose chunk id is in ``allowed``."""
        sorted_ids, order = self._sorted_ids()
        mask = np.zeros(len(sorted_ids), bool)
        if len(sorted_ids):
            pos = np.minimum(np.searchsorted(sorted_ids, allowed), len(sorted_ids) - 1)
            mask[order[pos[sorted_ids[pos] == allowed]]] = True
        return mask

    # -- persistence ---------------------------------------------------------
    def to_arrays(self) -> tuple[dict[str, np.ndarray], list[str]]:
        """The live index as the arrays and term list of the on-disk format (terms of removed
        chunks dropped, postings sorted); see the module docstring."""
        self._flush(compact=True)
        used = np.flatnonzero(np.diff(self._matrix.indptr))
        matrix = self._matrix[:, used] if len(used) < len(self._terms) else self._matrix
        matrix.sort_indices()
        arrays = {"chunk_ids": self._row_ids, "doc_len": self._doc_len, "indptr": matrix.indptr,
                  "rows": matrix.indices, "tf": matrix.data}
        return arrays, [self._terms[t] for t in used.tolist()]

    @classmethod
    def from_arrays(cls, k1: float, b: float, epsilon: float, arrays: dict[str, np.ndarray],
                    terms: list[str]) -> BM25Index:
        """The inverse of :meth:`to_arrays` (arrays already checked by the caller)."""
        index, n = cls(k1, b, epsilon), len(arrays["chunk_ids"])
        index._matrix = sp.csc_matrix((arrays["tf"], arrays["rows"], arrays["indptr"]), shape=(n, len(terms)))
        index._matrix.sum_duplicates()  # sorts rows within terms if a writer did not (no-op check otherwise)
        index._terms, index._vocab = terms, dict(zip(terms, range(len(terms))))
        index._row_ids, index._doc_len = arrays["chunk_ids"], arrays["doc_len"]
        index._alive = np.ones(n, bool)
        index._row_of = dict(zip(index._row_ids.tolist(), range(n)))
        index._total_len = int(index._doc_len.sum())
        return index

    @classmethod
    def concatenated(cls, indexes: Sequence[BM25Index], k1: float, b: float, epsilon: float) -> BM25Index:
        """One index of the live chunks of ``indexes``, rows in their order (a segment merge).

        Terms keep their first-occurrence order across the parts, so scores equal those of one
        index built from the same chunks in the same order.
        """
        vocab: dict[str, int] = {}
        columns, rows, tf, ids, lengths = [], [], [], [], []
        offset = 0
        for index in indexes:
            arrays, terms = index.to_arrays()
            term_ids = np.array([vocab.setdefault(term, len(vocab)) for term in terms], np.int64)
            columns.append(np.repeat(term_ids, np.diff(arrays["indptr"])))
            rows.append(arrays["rows"].astype(np.int64) + offset)
            tf.append(arrays["tf"])
            ids.append(arrays["chunk_ids"])
            lengths.append(arrays["doc_len"])
            offset += len(arrays["chunk_ids"])
        merged = cls(k1, b, epsilon)
        if not offset:
            return merged
        matrix = sp.csc_matrix((np.concatenate(tf), (np.concatenate(rows), np.concatenate(columns))),
                               shape=(offset, len(vocab)), dtype=np.int32)
        matrix.sort_indices()
        arrays = {"chunk_ids": np.concatenate(ids), "doc_len": np.concatenate(lengths),
                  "indptr": matrix.indptr, "rows": matrix.indices, "tf": matrix.data}
        return cls.from_arrays(k1, b, epsilon, arrays, list(vocab))


class Vocabulary:
    """Term -> id shared by the parts of a collection, and their document frequencies summed.

    Each part's term ids are mapped once (a segment never changes its terms), and each part's
    contribution to the sums is kept, so gathering the statistics again after a commit costs
    the parts that changed (new segments, segments with new tombstones), not the collection:
    a reader re-opening after a small write pays for the write.
    """

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.df = np.zeros(0, np.int64)  # live chunks per shared id, over the parts last gathered
        self.histogram = np.zeros(1, np.int64)  # shared ids per df value (index 0: unused)
        self._parts: dict[int, tuple[BM25Index, np.ndarray]] = {}  # id(part) -> (part, the df it added)

    def __len__(self) -> int:
        return len(self.ids)

    def of(self, index: BM25Index) -> np.ndarray:
        """int64 ``(terms of index,)``: the shared id of each of its term ids."""
        cached = index._global_ids
        if cached is None or cached[0] is not self or len(cached[1]) != len(index._terms):
            ids = self.ids
            mapped = np.fromiter((ids.setdefault(t, len(ids)) for t in index._terms), np.int64, len(index._terms))
            cached = index._global_ids = (self, mapped)
        return cached[1]

    def gather(self, indexes: Sequence[BM25Index]) -> None:
        """Make :attr:`df` and :attr:`histogram` the sums over exactly ``indexes``."""
        maps = [self.of(index) for index in indexes]  # grows the vocabulary first
        if len(self.df) < len(self.ids):
            self.df = np.concatenate([self.df, np.zeros(len(self.ids) - len(self.df), np.int64)])
        current = {id(index): index for index in indexes}
        for key, (part, added) in list(self._parts.items()):
            if current.get(key) is not part:
                self._add(self.of(part), -added)
                del self._parts[key]
        for index, mapped in zip(indexes, maps):
            df = index.document_frequencies()  # the same array object while the part is unchanged
            known = self._parts.get(id(index))
            if known is not None and known[1] is df:
                continue
            if known is not None:
                self._add(mapped, -known[1])
            self._add(mapped, df)
            self._parts[id(index)] = (index, df)

    def _add(self, mapped: np.ndarray, df: np.ndarray) -> None:
        changed = np.flatnonzero(df)
        if not len(changed):
            return
        positions = mapped[changed]  # distinct: a part maps each of its terms to its own id
        old = self.df[positions]
        new = old + df[changed]
        self.df[positions] = new
        top = int(new.max())
        if top >= len(self.histogram):
            self.histogram = np.concatenate([self.histogram, np.zeros(top + 1 - len(self.histogram), np.int64)])
        np.subtract.at(self.histogram, old, 1)
        np.add.at(self.histogram, new, 1)


class Collection:
    """Term statistics of chunks split over several BM25 indexes (the segments or shards of one index).

    A term's idf depends only on its document frequency, so the idf of every df value that occurs
    is computed once (rank-bm25's formula, negative ones floored at ``epsilon`` times the mean over
    the live terms, the mean taken over the histogram of dfs); a part looks up the idf of a query
    term when it scores it.
    """

    def __init__(self, chunks: int, avgdl: float, vocabulary: Vocabulary, by_df: np.ndarray):
        self.chunks, self.avgdl, self.vocabulary = chunks, avgdl, vocabulary
        self.by_df = by_df  # float64 idf per df value (0 for df 0)

    @classmethod
    def of(cls, indexes: Sequence[BM25Index], vocabulary: Vocabulary | None = None) -> Collection:
        """Add up the parts' counts; idf as one index over all their live chunks would compute it.

        Args:
            vocabulary: Reused between calls over changing parts (a reader re-opening after commits):
                only the parts that changed are counted again.
        """
        vocabulary = vocabulary if vocabulary is not None else Vocabulary()
        vocabulary.gather(indexes)
        n = sum(len(index) for index in indexes)
        total = sum(index.total_length for index in indexes)
        epsilon = indexes[0].epsilon if indexes else 0.25
        histogram = vocabulary.histogram
        values = np.flatnonzero(histogram[1:]) + 1  # the dfs some live term has
        by_df = np.zeros(len(histogram))
        if len(values):
            idf = np.array([math.log(n - d + 0.5) - math.log(d + 0.5) for d in values.tolist()])
            average = float(np.dot(histogram[values], idf)) / float(histogram[values].sum())
            idf[idf < 0] = epsilon * average
            by_df[values] = idf
        return cls(n, total / n if n else 1.0, vocabulary, by_df)

    @property
    def held(self) -> np.ndarray:
        """bool per shared term id: some live chunk holds it."""
        return self.vocabulary.df > 0

    def weight(self, term: str) -> float | None:
        """The term's idf, or None when no live chunk holds it."""
        position = self.vocabulary.ids.get(term)
        if position is None or position >= len(self.vocabulary.df) or self.vocabulary.df[position] == 0:
            return None
        return float(self.by_df[self.vocabulary.df[position]])


class _PartIdf:
    """``idf[term]`` of one part's term ids under a collection's statistics, computed on demand."""

    def __init__(self, collection: Collection, index: BM25Index):
        self.collection, self.index = collection, index

    def __getitem__(self, term: int | np.ndarray) -> float | np.ndarray:
        vocabulary = self.collection.vocabulary
        return self.collection.by_df[vocabulary.df[vocabulary.of(self.index)[term]]]


def _idf(df: np.ndarray, n: int, epsilon: float) -> np.ndarray:
    """rank-bm25's Okapi idf per term, float64; 0 for terms absent from every live chunk.

    ``math.log`` is applied per distinct df (as rank-bm25 does per term) and the
    mean is a left-to-right sum in term-id order (first occurrence, rank-bm25's dict order).
    """
    idf = np.zeros(len(df))
    live = df > 0
    if not live.any():
        return idf
    live_df = df[live]
    values = np.flatnonzero(np.bincount(live_df))  # the distinct dfs, without sorting every term
    per_df = np.zeros(int(values[-1]) + 1)
    per_df[values] = [math.log(n - d + 0.5) - math.log(d + 0.5) for d in values.tolist()]
    live_idf = per_df[live_df]
    average = float(np.cumsum(live_idf)[-1]) / len(live_idf)
    live_idf[live_idf < 0] = epsilon * average
    idf[live] = live_idf
    return idf


def _drop_rows(matrix: sp.csc_matrix, alive: np.ndarray) -> sp.csc_matrix:
    """Return ``matrix`` without its dead rows (row order kept), in O(postings)."""
    new_row = np.cumsum(alive) - 1
    keep = alive[matrix.indices]
    terms = np.repeat(np.arange(matrix.shape[1]), np.diff(matrix.indptr))[keep]
    indptr = np.zeros(matrix.shape[1] + 1, np.int64)
    np.cumsum(np.bincount(terms, minlength=matrix.shape[1]), out=indptr[1:])
    return sp.csc_matrix((matrix.data[keep], new_row[matrix.indices[keep]].astype(np.int32), indptr),
                         shape=(int(alive.sum()), matrix.shape[1]))
