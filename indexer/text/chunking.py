"""Split a document into token windows cut at sentence boundaries where possible.

A window holds at most ``budget`` tokens of the document (the model's special
tokens and the title are budgeted by the caller). When a document does not fit,
each window ends at the last good cut point in its second half, by preference a
sentence start, then a word start, then any character boundary; a cut never
falls inside a character (byte-fallback pieces of one character share offsets)
nor before a combining mark. The next window starts up to ``overlap`` tokens
earlier, at the best cut point there. Every chunk keeps character offsets into
the document text, so a hit can show its passage.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Sentence ends: Latin/Cyrillic/Greek ., !, ?, ellipsis; CJK 。！？; Devanagari danda;
# Arabic/Urdu question mark and full stop; Ethiopic, Myanmar, Armenian, Tibetan stops;
# followed by closing quotes/brackets. A new line also ends a sentence.
# Linear time: a run of end marks is matched only from its first mark (the lookbehind) and
# possessively (a run followed by no space fails once, not once per shorter prefix); without
# both, n dots with no space after them cost O(n^2) (16,000 dots: 30 s).
_SENTENCE_END = re.compile(
    r"(?:(?<![.!?…‼⁇⁈⁉])[.!?…‼⁇⁈⁉]++[\"'”’»)\]]*+\s+|[。！？｡]+[」』”’)）]*\s*|[।॥؟۔።၊။։།]+\s*|\n\s*)"
)
SENTENCE, WORD, CHAR, NONE = 3, 2, 1, 0


@dataclass(frozen=True)
class Chunk:
    """A window of a document: ``text == document_text[start:end]``."""

    start: int
    end: int
    text: str


def _cut_quality(text: str, offsets: list[tuple[int, int]], sentence_starts: set[int]) -> list[int]:
    """Quality of cutting before token t, for t in 0..n (0 and n are always fine)."""
    n = len(offsets)
    quality = [SENTENCE] + [NONE] * (n - 1) + [SENTENCE]
    for t in range(1, n):
        start, prev_end = offsets[t][0], offsets[t - 1][1]
        if start < prev_end or (start < len(text) and unicodedata.category(text[start]).startswith("M")):
            continue
        if t in sentence_starts:
            quality[t] = SENTENCE
        elif text[start].isspace() or (start > 0 and text[start - 1].isspace()):
            quality[t] = WORD
        else:
            quality[t] = CHAR
    return quality


def _sentence_starts(text: str, offsets: list[tuple[int, int]]) -> set[int]:
    """Token indices where a sentence starts (the first token ending after a boundary)."""
    ends = [end for _, end in offsets]
    starts: set[int] = set()
    t = 0
    for match in _SENTENCE_END.finditer(text):
        boundary = match.end()
        while t < len(ends) and ends[t] <= boundary:
            t += 1
        if t < len(ends):
            starts.add(t)
    return starts


def _best_cut(quality: list[int], low: int, high: int) -> int:
    """Latest cut in [low, high] of the best quality available there (high if none)."""
    for level in (SENTENCE, WORD, CHAR):
        for t in range(high, low - 1, -1):
            if quality[t] >= level:
                return t
    return high


def _overlap_start(quality: list[int], start: int, end: int, overlap: int) -> int:
    """Where the window after ``[start, end)`` begins: the earliest best cut in the last
    ``overlap`` tokens (sentence start, else word, else character), or ``end``."""
    low = max(start + 1, end - overlap)
    for level in (SENTENCE, WORD, CHAR):
        for t in range(low, end):
            if quality[t] >= level:
                return t
    return end


def _windows(quality: list[int], budget: int, overlap: int) -> list[tuple[int, int]]:
    n = len(quality) - 1
    windows, start = [], 0
    while True:
        if n - start <= budget:
            windows.append((start, n))
            return windows
        end = _best_cut(quality, start + max(1, budget // 2), start + budget)
        windows.append((start, end))
        start = _overlap_start(quality, start, end, overlap) if overlap else end


def chunk_text(text: str, tokenizer, budget: int = 254, overlap: int = 32) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``budget`` tokens of ``tokenizer``.

    Args:
        text: Document text.
        tokenizer: A fast Hugging Face tokenizer (character offsets are needed).
        budget: Maximum tokens per chunk, without special tokens.
        overlap: Tokens shared by consecutive chunks (at most; cuts move to boundaries).

    Returns:
        Chunks in document order; none is empty or only whitespace. A text with
        no tokens gives no chunk.
    """
    offsets = token_offsets(text, tokenizer)
    if not offsets:
        return []
    quality = _cut_quality(text, offsets, _sentence_starts(text, offsets))
    chunks = []
    for first, last in _windows(quality, budget, min(overlap, budget // 2)):
        start = min(s for s, _ in offsets[first:last])
        end = max(e for _, e in offsets[first:last])
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            chunks.append(Chunk(start, end, text[start:end]))
    return chunks


SEGMENT_CHARS = 50_000  # a long text is tokenized this much at a time, cut after whitespace


def token_offsets(text: str, tokenizer, segment_chars: int = SEGMENT_CHARS) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets in ``text`` of its non-empty tokens, in order.

    A text longer than ``segment_chars`` is tokenized a segment at a time, each cut just
    before a whitespace character (where a tokenizer starts a new word anyway), so the
    tokenizer's own per-token objects (ids, token strings, masks) exist for one segment
    at a time instead of for the whole document. A segment with no whitespace in its
    second half (a long run of Chinese or Thai) is cut at ``segment_chars``.
    """
    offsets: list[tuple[int, int]] = []
    start = 0
    while start < len(text):
        end = len(text) if len(text) - start <= segment_chars else _segment_end(text, start, segment_chars)
        mapping = tokenizer(text[start:end], add_special_tokens=False, return_offsets_mapping=True,
                            verbose=False)["offset_mapping"]  # longer than the model takes: chunks are cut next
        offsets.extend((a + start, b + start) for a, b in mapping if b > a)
        start = end
    return offsets


def _segment_end(text: str, start: int, segment_chars: int) -> int:
    """At the start of the last run of whitespace in the second half of ``text[start:start +
    segment_chars]``: the next segment starts with the run, as the word after it does in the
    whole text (``▁word``)."""
    limit, low = start + segment_chars, start + segment_chars // 2
    for at in range(limit - 1, low, -1):
        if text[at].isspace():
            while at > low and text[at - 1].isspace():  # the whole run of whitespace goes with the next word
                at -= 1
            return at
    return limit

