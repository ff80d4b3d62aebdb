"""Padded and packed token layouts of a batch, and its attention groups.

A padded batch ``(batch, length, d)`` holds real tokens where ``attention_mask`` is 1.
Per-token layers (projections, feed-forward) need only those: the packed layout
``(tokens, d)`` keeps them in row-major order, so padding costs them nothing.
Attention needs each row laid out by position. Rows of very different lengths
would pad each other's attention to the longest, so consecutive rows of similar
length form a group, padded only to its own widest row.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class AttentionGroup:
    """Consecutive rows attended together.

    Attributes:
        start, stop: The group's tokens in the packed layout.
        size, width: Its rows, and the positions each row spans (last real token + 1).
        rows, columns: Row (within the group) and position of each of its tokens;
            None when the group has no padding.
        key_mask: ``(size, 1, 1, width)``, True on padding keys; None when none.
    """

    start: int
    stop: int
    size: int
    width: int
    rows: Tensor | None
    columns: Tensor | None
    key_mask: Tensor | None

    def unpack(self, packed: Tensor) -> Tensor:
        """The group's tokens of packed ``(tokens, d)`` as ``(size, width, d)``, zeros at padding."""
        tokens = packed[self.start:self.stop]
        if self.rows is None:
            return tokens.reshape(self.size, self.width, -1)
        padded = tokens.new_zeros((self.size, self.width, tokens.shape[-1]))
        padded[self.rows, self.columns] = tokens
        return padded

    def pack(self, padded: Tensor) -> Tensor:
        """``(size, width, d)`` -> the group's packed ``(stop - start, d)``."""
        if self.rows is None:
            return padded.reshape(self.stop - self.start, -1)
        return padded[self.rows, self.columns]


@dataclass(frozen=True)
class PackedBatch:
    """The map between a padded batch and its packed tokens, with its attention groups.

    The packed layout has ``packed_rows`` rows: the ``tokens`` real ones, then zero
    rows up to a multiple of ``multiple`` (16 where MKL runs the products: its matmuls
    with few rows run up to 2x faster on aligned row counts; 1 for oneDNN, see
    :func:`indexer.encoding.linear_kernel.row_multiple`). Per-token layers carry those
    rows along; attention never reads them.
    """

    size: int
    length: int
    tokens: int
    packed_rows: int
    rows: Tensor | None  # batch row of each real token; None when nothing is padded
    columns: Tensor | None  # its position in the row
    groups: tuple[AttentionGroup, ...]

    @classmethod
    def of(cls, attention_mask: Tensor, slack: float = 1.25, min_width: int = 64,
           multiple: int = 16) -> PackedBatch:
        """Layout of ``attention_mask`` ``(batch, length)``.

        Args:
            slack: A group grows while its padded attention cost (rows x width^2)
                stays within ``slack`` times the cost of its rows alone.
            min_width: Rows narrower than this count as this wide in that cost, so
                short rows share a group rather than each paying a group's overhead.
            multiple: Packed rows are rounded up to a multiple of this.
        """
        size, length = attention_mask.shape
        if bool(attention_mask.all()):
            tokens = size * length
            group = AttentionGroup(0, tokens, size, length, None, None, None)
            return cls(size, length, tokens, _round_up(tokens, multiple), None, None, (group,))
        rows, columns = attention_mask.nonzero(as_tuple=True)
        on_host = attention_mask.to("cpu", torch.bool)
        counts = on_host.sum(1).tolist()
        widths = (on_host * torch.arange(1, length + 1)).amax(1).tolist()  # last real position + 1
        groups, start = [], 0
        for first, last in _spans(widths, slack, min_width):
            stop = start + sum(counts[first:last])
            groups.append(_group(attention_mask[first:last], start, stop, max(widths[first:last])))
            start = stop
        return cls(size, length, start, _round_up(start, multiple), rows, columns, tuple(groups))

    def pack(self, padded: Tensor) -> Tensor:
        """``(batch, length, d)`` -> ``(packed_rows, d)``."""
        if self.rows is None:
            packed = padded.reshape(self.tokens, -1)
        else:
            packed = padded[self.rows, self.columns]
        if self.packed_rows > self.tokens:
            packed = torch.cat([packed, packed.new_zeros((self.packed_rows - self.tokens, packed.shape[-1]))])
        return packed

    def unpack(self, packed: Tensor) -> Tensor:
        """``(packed_rows, d)`` -> ``(batch, length, d)``, zeros at padding."""
        packed = packed[:self.tokens]
        if self.rows is None:
            return packed.reshape(self.size, self.length, -1)
        padded = packed.new_zeros((self.size, self.length, packed.shape[-1]))
        padded[self.rows, self.columns] = packed
        return padded


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _spans(widths: list[int], slack: float, min_width: int) -> list[tuple[int, int]]:
    """Greedy split of rows into ``[first, last)`` spans of similar width."""
    spans, first = [], 0
    widest, cost = widths[0], max(widths[0], min_width) ** 2
    for row in range(1, len(widths)):
        row_cost = max(widths[row], min_width) ** 2
        wider = max(widest, widths[row])
        if (row - first + 1) * max(wider, min_width) ** 2 <= slack * (cost + row_cost):
            widest, cost = wider, cost + row_cost
        else:
            spans.append((first, row))
            first, widest, cost = row, widths[row], row_cost
    spans.append((first, len(widths)))
    return spans


def _group(mask: Tensor, start: int, stop: int, width: int) -> AttentionGroup:
    mask = mask[:, :width]
    if stop - start == mask.numel():
        return AttentionGroup(start, stop, mask.shape[0], width, None, None, None)
    rows, columns = mask.nonzero(as_tuple=True)
    return AttentionGroup(start, stop, mask.shape[0], width, rows, columns, (mask == 0)[:, None, None, :])
