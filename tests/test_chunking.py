"""Chunking: token budgets, sentence cuts, overlap, offsets, never inside a character."""
from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SAMPLE, sib_sentences
from xlsearch.indexer.text.chunking import chunk_text


def token_count(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def check_chunks(text, chunks, tokenizer, budget):
    for chunk in chunks:
        assert text[chunk.start:chunk.end] == chunk.text
        assert chunk.text.strip() == chunk.text and chunk.text
        assert token_count(tokenizer, chunk.text) <= budget + 2  # re-tokenising a slice may shift a piece
        if chunk.start > 0:
            assert not unicodedata.category(text[chunk.start]).startswith("M")
    starts = [c.start for c in chunks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


@pytest.mark.parametrize("lang", ["eng_Latn", "zho_Hans", "tha_Thai", "hin_Deva", "arb_Arab", "jpn_Jpan"])
def test_real_text_chunks_cover_the_document(tiny_model, lang):
    text = " ".join(sib_sentences(lang, limit=12))
    chunks = chunk_text(text, tiny_model.tokenizer, budget=48, overlap=8)
    assert len(chunks) > 2
    check_chunks(text, chunks, tiny_model.tokenizer, 48)
    assert chunks[0].start == 0 and chunks[-1].end == len(text.rstrip())
    for before, after in zip(chunks, chunks[1:]):
        assert not text[before.end:after.start].strip()  # overlap or a gap of spaces: nothing lost


def test_cuts_prefer_sentence_boundaries(tiny_model):
    short = [s for s in sib_sentences("eng_Latn", limit=700) if token_count(tiny_model.tokenizer, s) < 40]
    text = " ".join(short[:20])
    chunks = chunk_text(text, tiny_model.tokenizer, budget=100, overlap=0)
    assert len(chunks) > 2
    assert all(c.text in text and c.text.endswith(tuple(s[-1] for s in short)) for c in chunks)
    assert all(any(c.text.startswith(s[:20]) for s in short) for c in chunks)


def test_chinese_cuts_at_full_stops(tiny_model):
    text = "".join(sib_sentences("zho_Hans", limit=6))
    chunks = chunk_text(text, tiny_model.tokenizer, budget=100, overlap=0)
    assert len(chunks) > 1
    assert all(c.text.endswith("。") for c in chunks[:-1])


def test_short_text_is_one_chunk_and_whitespace_none(tiny_model):
    assert [c.text for c in chunk_text("  Hello world.  ", tiny_model.tokenizer)] == ["Hello world."]
    assert chunk_text("   \n\t ", tiny_model.tokenizer) == []


def test_overlap_repeats_tokens(tiny_model):
    text = " ".join(sib_sentences("deu_Latn", limit=6))
    chunks = chunk_text(text, tiny_model.tokenizer, budget=40, overlap=10)
    assert any(after.start < before.end for before, after in zip(chunks, chunks[1:]))


def test_sample_documents_chunk_cleanly(tiny_model):
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        text = json.loads(line)["text"]
        check_chunks(text, chunk_text(text, tiny_model.tokenizer, budget=24, overlap=6), tiny_model.tokenizer, 24)


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=400))
def test_any_unicode_chunks_without_crash(tiny_model, text):
    chunks = chunk_text(text, tiny_model.tokenizer, budget=16, overlap=4)
    for chunk in chunks:
        assert text[chunk.start:chunk.end] == chunk.text and chunk.text.strip()


@pytest.mark.parametrize("separator", ["\n", " ", "\n\n", " \n \t "])
def test_a_long_text_tokenized_by_segments_gives_the_same_tokens(tiny_model, separator):
    """Tokenizing a long document a segment at a time (so the tokenizer never holds all of it)
    changes no token: segments are cut before a run of whitespace."""
    import random

    from xlsearch.indexer.text.chunking import token_offsets

    records = [json.loads(line)["text"] for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    texts = records + [s for lang in ("tha_Thai", "hin_Deva", "arb_Arab") for s in sib_sentences(lang, limit=20)]
    random.Random(7).shuffle(texts)
    text = separator.join(texts * 3)
    whole = token_offsets(text, tiny_model.tokenizer, segment_chars=len(text) + 1)
    segmented = token_offsets(text, tiny_model.tokenizer, segment_chars=2_000)
    assert len(text) > 20 * 2_000 and segmented == whole


def test_chunking_a_long_text_warns_of_nothing(tiny_deberta_dir, caplog):
    """Tokenizing a document longer than the model takes is what chunking is for: no
    'Token indices sequence length is longer than...' warning."""
    import logging

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_deberta_dir), model_max_length=512)  # fresh: warns once
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            chunks = chunk_text("Der Vulkan bricht aus. " * 2000, tokenizer, budget=254, overlap=32)
            quiet = [r for r in caplog.records if "sequence length" in r.getMessage()]
            tokenizer("Der Vulkan bricht aus. " * 2000)  # the plain call does warn: the check can fail
            loud = [r for r in caplog.records if "sequence length" in r.getMessage()]
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.disable_propagation()
    assert len(chunks) > 10 and not quiet and len(loud) == 1


def _chunking_work(text: str, tokenizer) -> int:
    """Lines of ``indexer/text/chunking.py`` executed while chunking ``text``: the Python work,
    counted, not timed (the tokenizer and the regex engine run in native code)."""
    import sys

    from xlsearch.indexer.text import chunking

    source, lines = chunking.__file__, 0

    def trace(frame, event, arg):
        nonlocal lines
        if frame.f_code.co_filename != source:
            return None
        if event == "line":
            lines += 1
        return trace

    sys.settrace(trace)
    try:
        chunking.chunk_text(text, tokenizer, budget=64, overlap=8)
    finally:
        sys.settrace(None)
    return lines


@settings(max_examples=25, deadline=None)
@given(unit=st.sampled_from([".", "!?", "…", "。", "؟", "\n", " ", "x", "😀", "a\u0301", "ab. ", "\u200b", "🇫🇷", "‼"]),
       tail=st.text(max_size=3))
def test_chunking_work_grows_linearly_with_the_input(tiny_model, unit, tail):
    """Doubling any repeated input at most about doubles the work of chunking it."""
    small = _chunking_work(unit * 400 + tail, tiny_model.tokenizer)
    large = _chunking_work(unit * 800 + tail, tiny_model.tokenizer)
    assert large <= 2.2 * small + 200, (unit, small, large)
