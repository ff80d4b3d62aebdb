"""A document cut into the pieces that become its chunks: title line, prompt and token budget
applied, language filled in where the record has none."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import IndexConfig
from ..document import Document
from .chunking import chunk_text
from .language import detect_language


@dataclass(frozen=True)
class Piece:
    """One chunk of a document before it has an id: ``text`` is ``doc.text[start:end]``;
    ``input`` is what is embedded and analyzed (the title line, then ``text``)."""

    start: int
    end: int
    text: str
    input: str


def document_pieces(doc: Document, tokenizer, config: IndexConfig) -> list[Piece]:
    """Split a document into chunks of at most ``config.chunk_tokens`` tokens, title and document
    prompt included."""
    prefix = title_prefix(doc.title, tokenizer, config.chunk_tokens // 4)
    prefix_tokens = len(tokenizer(config.document_prompt + prefix, add_special_tokens=False)["input_ids"]) \
        if prefix or config.document_prompt else 0
    budget = config.chunk_tokens - tokenizer.num_special_tokens_to_add(pair=False) - prefix_tokens
    return [Piece(c.start, c.end, c.text, prefix + c.text)
            for c in chunk_text(doc.text, tokenizer, budget, config.chunk_overlap)]


def with_language(doc: Document) -> Document:
    """``doc`` with ``lang`` detected from its title and text when it has none."""
    if doc.lang is not None:
        return doc
    return dataclasses.replace(doc, lang=detect_language(f"{doc.title or ''}\n{doc.text}"))


def title_prefix(title: str | None, tokenizer, max_tokens: int) -> str:
    """``"<title>\\n"`` cut to at most ``max_tokens`` tokens, or "" without a title."""
    if not title or not title.strip():
        return ""
    title = " ".join(title.split())
    offsets = tokenizer(title, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) > max_tokens:
        title = title[:offsets[max_tokens - 1][1]]
    return title + "\n"
