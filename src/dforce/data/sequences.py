"""Generic sequence datasets: fixed-length training windows cut from (variable-length) sequences."""

from __future__ import annotations

import torch

from dforce.errors import DataError


class WindowDataset:
    """All length-``window`` windows (every ``stride`` steps) of a set of sequences, as a dataset.

    Args:
        sequences: ``(N, L, *D)`` tensor or a list of ``(L_i, *D)`` tensors.
        window: T, tokens per training example.
        cond: optional per-step conditioning, same layout with ``(L_i, C)``.
        stride: step between window starts.
        pad_short: keep sequences shorter than ``window`` as one right-padded example with a mask
            (otherwise they are dropped).
    ``get_batch(idx)`` returns ``{"x": (B, T, *D), "mask": (B, T) bool, ["cond": (B, T, C)]}``;
    index i maps to (sequence, start) deterministically, so the batch stream is reproducible.
    """

    def __init__(self, sequences, window: int, cond=None, stride: int = 1, pad_short: bool = True):
        seqs = list(sequences) if not torch.is_tensor(sequences) else list(sequences.unbind(0))
        if not seqs:
            raise DataError("no sequences given")
        self.seqs = [torch.as_tensor(s).float() for s in seqs]
        self.cond = None if cond is None else [torch.as_tensor(c).float() for c in (list(cond) if not torch.is_tensor(cond) else list(cond.unbind(0)))]
        if self.cond is not None and [len(c) for c in self.cond] != [len(s) for s in self.seqs]:
            raise DataError("cond must have one row per step of every sequence")
        self.window, self.stride = int(window), int(stride)
        lens = torch.tensor([len(s) for s in self.seqs])
        counts = torch.where(lens >= window, (lens - window) // stride + 1, torch.full_like(lens, int(pad_short)))
        if counts.sum() == 0:
            raise DataError(f"every sequence is shorter than the training window ({window} steps)")
        self.counts = counts
        self.cum = torch.cumsum(counts, 0)
        self.token_shape = tuple(self.seqs[0].shape[1:])
        self.cond_dim = 0 if self.cond is None else self.cond[0].shape[-1]

    def __len__(self) -> int:
        return int(self.cum[-1])

    def get_batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        seq = torch.searchsorted(self.cum, idx, right=True)
        start = (idx - (self.cum[seq] - self.counts[seq])) * self.stride
        T = self.window
        xs, cs, ms = [], [], []
        for s, st in zip(seq.tolist(), start.tolist()):
            x = self.seqs[s][st : st + T]
            m = torch.ones(T, dtype=torch.bool)
            if len(x) < T:
                m[len(x):] = False
                x = torch.cat([x, x.new_zeros(T - len(x), *x.shape[1:])])
            xs.append(x)
            ms.append(m)
            if self.cond is not None:
                c = self.cond[s][st : st + T]
                cs.append(torch.cat([c, c.new_zeros(T - len(c), *c.shape[1:])]) if len(c) < T else c)
        out = {"x": torch.stack(xs), "mask": torch.stack(ms)}
        if self.cond is not None:
            out["cond"] = torch.stack(cs)
        return out
