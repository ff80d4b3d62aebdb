"""Which library runs an fp32 linear layer on this CPU: MKL (torch's default) or oneDNN.

torch sends an fp32 ``F.linear`` on the CPU to MKL. MKL picks its code path by CPU
vendor: on AMD processors with AVX-512 it measured 2.2-3.1x slower than oneDNN (also
shipped inside torch) on the shapes of mdeberta-v3-base and multilingual-e5-small, at 16
to 2048 rows, one thread. Neither is assumed to win: the first fp32 linear of each regime in
a process times both on its own weight, and the regime keeps the faster one. Few rows (20, a
query) are timed on the weight repeated to four times its width, as a feed-forward layer's first
product is; many (512, a batch of documents) on each of a block's shapes, as many times as a block
has it (four projections the weight's size, and the feed-forward layer's two products), because
one shape alone misleads: on an AMD EPYC oneDNN took 0.52-1.11x MKL's time on multilingual-e5-small's
384 x 384 weight at 256 rows, from one process to the next, while it encoded e5's batches 1.08-1.21x
faster in 7 of 8 comparisons (``bench/bench_linear_choice.py``). The many-row
regime is timed at the first product of more than :data:`FEW_ROWS` rows, at a server's warm-up
(:meth:`Encoder.warm_up`, before it takes requests, so that nothing else runs while it is timed), or
with the few-row one where a model without a fast forward first runs its own (:func:`routed`): a
process that only encodes short queries through a fast forward never pays for it. The two agree
to ~1e-6; either is exact fp32.

MKL's few-row products cost the same for 1-16 rows, 17-32 and so on, so its inputs are padded to
a multiple of 16 (and it is timed so); oneDNN's cost follows the row count, and its inputs are not padded
(:func:`row_multiple`).

With oneDNN, a layer called a second time with at most :data:`FEW_ROWS` rows runs on a
copy of its weight laid out for oneDNN ahead of time (2.3-3.3x faster than MKL at 16 rows
where reordering on every call is 1.6-1.9x; cached per weight version: 4 bytes per parameter
of each layer that serves queries, so a query server holds those layers twice); more rows
run on the weight as it is, oneDNN reordering it on the fly, which costs about 2% at 256
rows and no memory.

``XLSEARCH_LINEAR_KERNEL`` = ``mkl`` or ``onednn`` forces the choice (``auto``, the default,
measures). :func:`choice` says what was chosen and the timings it was chosen on.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ENV = "XLSEARCH_LINEAR_KERNEL"
MKL, ONEDNN = "mkl", "onednn"
FEW_ROWS = 128  # at most this many rows: the "few" regime (queries, short batches)
MKL_ROW_MULTIPLE = 16  # MKL's few-row products cost the same for 1-16 rows, 17-32, ...: inputs are padded to it
_PROBE_ROWS = {"few": 20, "many": 512}  # a query of about 20 tokens; a batch of documents (thousands, often)
# oneDNN must take at most this share of MKL's time to be chosen: with few rows it runs on a copy of each weight
# laid out for it (memory), with many on the weight as it is (nothing to pay for, so the faster one wins)
_MARGIN = {"few": 0.9, "many": 1.0}

_lock = threading.Lock()
_choice: dict | None = None
# ids of a layer's (or stacked layers') weights and biases -> (key, (laid-out weight, bias) once called twice)
_packed: dict[tuple, tuple[tuple, tuple[Tensor, Tensor | None] | None]] = {}


def onednn_available() -> bool:
    """Whether this torch build has the oneDNN linear ops used here."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise") \
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    except (AttributeError, RuntimeError):  # pragma: no cover - unusual builds
        return False


def choice() -> dict | None:
    """``{"few": kernel, "many": kernel, "ms": {...}}`` (a regime present once its first fp32 linear has run),
    else None."""
    return _choice


@contextlib.contextmanager
def forced(kernel: str) -> Iterator[None]:
    """Use ``kernel`` (``mkl`` or ``onednn``) for every fp32 linear inside the block (benches, tests)."""
    global _choice
    if kernel not in (MKL, ONEDNN):
        raise ValueError(f"kernel must be {MKL} or {ONEDNN}, not {kernel!r}")
    with _lock:
        saved, _choice = _choice, {"few": kernel, "many": kernel, "ms": {}, "forced": True}
    try:
        yield
    finally:
        with _lock:
            _choice = saved


def reset() -> None:
    """Forget the choice and the packed weights (tests; after changing ``XLSEARCH_LINEAR_KERNEL``)."""
    global _choice
    with _lock:
        _choice = None
        _packed.clear()


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(x, weight, bias)`` for 2-D fp32 ``x`` on the CPU, by the kernel chosen for its row count.

    Anything else (another dtype or device, autograd) goes to ``F.linear``. The result may be a
    transposed (non-contiguous) view when MKL serves few rows.
    """
    if (x.dim() != 2 or x.dtype != torch.float32 or weight.dtype != torch.float32 or x.device.type != "cpu"
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
        return F.linear(x, weight, bias)
    regime = "few" if x.shape[0] <= FEW_ROWS else "many"
    kernel = _kernel(regime, weight, bias)
    if kernel == ONEDNN:
        packed = _laid_out([(weight, bias)]) if regime == "few" else None
        return torch.ops.mkldnn._linear_pointwise(x, packed[0] if packed else weight, bias, "none", [], "")
    return _mkl(x, weight, bias)


def product(x: Tensor, weight: Tensor) -> Tensor:
    """``x @ weight.T`` for 2-D ``x`` on the kernel chosen for products of its rows, where ``weight`` is made
    for the call (DeBERTa's position rows): never laid out ahead of time, and never timed to choose a kernel
    (a block's projections have chosen one by then; before any choice, torch's own)."""
    chosen = _choice or {}
    kernel = chosen.get("few" if x.shape[0] <= FEW_ROWS else "many") or chosen.get("few") or chosen.get("many")
    if (kernel == ONEDNN and x.dtype in (torch.float32, torch.bfloat16) and x.device.type == "cpu"
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")
    return F.linear(x, weight)


def linears(x: Tensor, layers: Sequence[tuple[Tensor, Tensor | None]]) -> list[Tensor]:
    """:func:`linear` of one input by several ``(weight, bias)`` (attention's query, key and value projections).

    Where oneDNN serves few rows, they run as one product on a copy of the weights stacked and laid out for it
    (made at the second such call, in place of each weight's own copy: no more memory), and the result is split
    into column views; the same sums as one product each, so the same vectors to the bit. A query's products
    are small enough for each call's own cost to count: one call instead of three took a query from 18.1-18.7
    to 17.4-18.5 ms of CPU on multilingual-e5-small and from 42.6 to 40.8 on the mdeberta-v3-base shape (a
    2-core AMD EPYC, one thread, interleaved in one process).
    """
    if (len(layers) > 1 and x.dim() == 2 and x.dtype == torch.float32 and x.device.type == "cpu"
            and x.shape[0] <= FEW_ROWS and all(w.dtype == torch.float32 for w, _ in layers)
            and not (torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w, _ in layers)))
            and _kernel("few", *layers[0]) == ONEDNN):
        stacked = _laid_out(layers)
        if stacked is not None:
            out = torch.ops.mkldnn._linear_pointwise(x, stacked[0], stacked[1], "none", [], "")
            return list(out.split([w.shape[0] for w, _ in layers], dim=1))
    return [linear(x, weight, bias) for weight, bias in layers]


def _laid_out(layers: Sequence[tuple[Tensor, Tensor | None]]) -> tuple[Tensor, Tensor | None] | None:
    """``layers``' weights (one layer's, or several stacked) laid out for oneDNN, and their biases (stacked;
    None if none has one), from the second few-row call on, cached until one of them changes; None at the
    first, which runs on the weights as they are, so a bulk run whose last batch is short copies no layer."""
    tensors = [t for layer in layers for t in layer if t is not None]
    ids, key = tuple(id(t) for t in tensors), weight_key(tensors)
    cached = _packed.get(ids)
    if cached is not None and cached[0] == key and cached[1] is not None:
        return cached[1]
    with _lock:
        cached = _packed.get(ids)
        if cached is None or cached[0] != key:
            _packed[ids] = (key, None)
            return None
        if cached[1] is None:
            weight, bias = layers[0] if len(layers) == 1 else concatenated(layers)
            cached = _packed[ids] = (key, (torch.ops.mkldnn._reorder_linear_weight(weight.detach()), bias))
        return cached[1]


def concatenated(layers: Sequence[tuple[Tensor, Tensor | None]]) -> tuple[Tensor, Tensor | None]:
    """``layers``' weights stacked along the output channels, and their biases (None if none has one, zeros
    for one that has none): one layer whose outputs are theirs side by side."""
    weight = torch.cat([w.detach() for w, _ in layers])
    if all(b is None for _, b in layers):
        return weight, None
    return weight, torch.cat([b.detach() if b is not None else w.new_zeros(w.shape[0]) for w, b in layers])


def _mkl(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if x.shape[0] > FEW_ROWS:
        return F.linear(x, weight, bias)
    # Few rows: weight @ x^T runs faster than x @ weight^T on MKL (1.3-2x up to ~128 rows on an
    # Intel Xeon); the result is a transposed view, which the next ops read as it is.
    if bias is None:
        return torch.mm(weight, x.t()).t()
    return torch.addmm(bias.unsqueeze(1), weight, x.t()).t()


def row_multiple(rows: int, weight: Tensor, bias: Tensor | None) -> int:
    """What to round ``rows`` up to before fp32 products with ``rows`` rows: :data:`MKL_ROW_MULTIPLE` where
    MKL serves that regime (padding costs it nothing, and its products measured up to 2x faster on aligned
    row counts), 1 where oneDNN does (its cost follows the row count: a 17-row product of mdeberta-v3-base's
    feed-forward shape took 0.59x the time of a 32-row one on an Intel Xeon)."""
    return MKL_ROW_MULTIPLE if _kernel("few" if rows <= FEW_ROWS else "many", weight, bias) == MKL else 1


def weight_key(tensors: Sequence[Tensor]) -> tuple:
    """Changes whenever one of ``tensors`` is modified in place or replaced: the key of a cached copy."""
    return tuple((id(t), t._version, t.data_ptr(), t.dtype, t.device) for t in tensors)


def _kernel(regime: str, weight: Tensor, bias: Tensor | None) -> str:
    """The kernel of ``regime``, chosen now if it has not been."""
    chosen = _choice
    if chosen is None or regime not in chosen:
        chosen = _choose(regime, weight, bias)
    return chosen[regime]


def _choose(regime: str, weight: Tensor, bias: Tensor | None) -> dict:
    """Choose ``regime``'s kernel (once per process): forced, or MKL and oneDNN timed on ``weight``."""
    global _choice
    with _lock:
        if _choice is not None and regime in _choice:
            return _choice
        forced = os.environ.get(ENV, "auto").strip().lower() or "auto"
        if forced not in ("auto", MKL, ONEDNN):
            raise ValueError(f"{ENV} must be auto, {MKL} or {ONEDNN}, not {forced!r}")
        chosen = dict(_choice or {"ms": {}, "forced": False})
        chosen["forced"] = chosen["forced"] or forced != "auto"  # any regime forced
        if forced == MKL or not onednn_available():
            chosen[regime] = MKL
        elif forced == ONEDNN:
            chosen[regime] = ONEDNN
        else:
            timings = _measure(regime, weight.detach(), None if bias is None else bias.detach())
            chosen["ms"] = {**chosen["ms"], regime: timings}
            chosen[regime] = ONEDNN if timings[ONEDNN] <= _MARGIN[regime] * timings[MKL] else MKL
        _choice = chosen
        return _choice


def _measure(regime: str, weight: Tensor, bias: Tensor | None) -> dict:
    """``{mkl: ms, onednn: ms, rows: n}``: each library's time for ``regime``'s probe (see the module)."""
    rows = _PROBE_ROWS[regime]
    up = weight.repeat(4, 1), None if bias is None else bias.repeat(4)  # a feed-forward layer's first product
    down = weight.repeat(1, 4), bias  # and its second, on inputs four times as wide
    # (layer, how many of it a block has); few rows are timed where a query spends most: the feed-forward layer
    shapes = [(up, 1)] if regime == "few" else [((weight, bias), 4), (up, 1), (down, 1)]
    mkl = onednn = 0.0
    with torch.no_grad():
        for (w, b), count in shapes:
            x = torch.randn(rows, w.shape[1])
            padded = torch.cat([x, x.new_zeros((-rows % MKL_ROW_MULTIPLE, x.shape[1]))])  # as MKL is fed
            onednn_weight = torch.ops.mkldnn._reorder_linear_weight(w) if regime == "few" else w
            mkl += count * _best_ms(lambda: _mkl(padded, w, b))
            onednn += count * _best_ms(lambda: torch.ops.mkldnn._linear_pointwise(x, onednn_weight, b, "none", [], ""))
    return {MKL: round(mkl, 4), ONEDNN: round(onednn, 4), "rows": rows}


def _best_ms(fn, repeats: int = 5) -> float:
    """Best of ``repeats`` CPU-time measurements of ``fn`` (after one warm-up), in ms."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best * 1e3


@contextlib.contextmanager
def routed(model: nn.Module, kernel: Callable[[Tensor, Tensor, Tensor | None], Tensor] | None = None) -> Iterator[None]:
    """Run every fp32 ``nn.Linear`` of ``model`` through ``kernel`` (default :func:`linear`) inside the
    block (inference of models whose own forward runs). The instances' ``forward`` is set and restored;
    callers serialise calls."""
    layers = [m for m in model.modules() if type(m) is nn.Linear and m.weight.dtype == torch.float32]
    if kernel is None:
        kernel = linear
        if layers and all(_kernel(regime, layers[0].weight, layers[0].bias) == MKL for regime in _PROBE_ROWS):
            layers = []  # MKL serves both regimes: torch's own path, untouched
    for layer in layers:
        layer.forward = _routed_forward(layer, kernel)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def _routed_forward(layer: nn.Linear, kernel: Callable[[Tensor, Tensor, Tensor | None], Tensor]):
    def forward(x: Tensor) -> Tensor:
        if x.dim() == 2:
            return kernel(x, layer.weight, layer.bias)
        if x.dim() > 2 and x.is_contiguous():
            return kernel(x.view(-1, x.shape[-1]), layer.weight, layer.bias).reshape(*x.shape[:-1], -1)
        return F.linear(x, layer.weight, layer.bias)
    return forward
