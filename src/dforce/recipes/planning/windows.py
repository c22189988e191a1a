"""Maze2D planning data: the z-scoring of step rows (:class:`Normalizer`), the point mass's velocity response fitted
to a dataset (:class:`ActionDynamics`, :func:`action_positions`: where a plan's forces lead), the dataset's
continuous segments (:func:`split_segments`), start tokens (:func:`start_rows`) and the training windows
(:class:`MazeWindows`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dforce.errors import DataError
from dforce.recipes.planning.config import DT, ROW, PlanDataConfig


# ---------------------------------------------------------------------------------------------------
# data: normalization, segments, windows
# ---------------------------------------------------------------------------------------------------


@dataclass
class Normalizer:
    """Per-channel z-scoring of step rows ``[a (2), o (4)]``: ``mean, std: (6,)``."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, data: dict[str, np.ndarray]) -> "Normalizer":
        rows = np.concatenate([data["actions"], data["observations"]], 1).astype(np.float64)
        return cls(rows.mean(0), rows.std(0) + 1e-6)

    def encode(self, rows):
        return (rows - self.mean) / self.std

    def decode(self, rows):
        return rows * self.std + self.mean

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64))


@dataclass(frozen=True)
class ActionDynamics:
    """The point mass's velocity response to the force, per axis (x, y): ``v_{t+1} = alpha·v_t + beta·a_t + bias``,
    fitted by least squares to a dataset's steps (:meth:`fit`). D4RL's point mass is damped and driven by the
    force, so away from walls this is nearly exact (the Large dataset: α 0.9957, β 0.2375; wall contacts are what it
    misses)."""

    alpha: tuple[float, float]
    beta: tuple[float, float]
    bias: tuple[float, float]

    @classmethod
    def fit(cls, data: dict[str, np.ndarray]) -> "ActionDynamics":
        """Least squares over the steps of ``data`` (``observations (N, 4)``, ``actions (N, 2)``) that continue the
        rollout (``p_{t+1} = p_t + DT·v_{t+1}``: resets and stream joins are left out)."""
        obs, act = data["observations"].astype(np.float64), data["actions"].astype(np.float64)
        cont = np.abs(obs[1:, :2] - obs[:-1, :2] - DT * obs[1:, 2:4]).max(1) < 1e-4  # (N-1,) continuing steps
        coef = []
        for ax in range(2):
            X = np.stack([obs[:-1, 2 + ax], act[:-1, ax], np.ones(len(act) - 1)], 1)[cont]
            coef.append(np.linalg.lstsq(X, obs[1:, 2 + ax][cont], rcond=None)[0])
        alpha, beta, bias = (tuple(float(c[i]) for c in coef) for i in range(3))
        if not all(0.0 < a < 1.0 for a in alpha):
            raise DataError(f"the data's fitted velocity decay alpha={alpha} is not in (0, 1): not a damped point mass")
        return cls(alpha, beta, bias)


def action_positions(dyn: ActionDynamics, p0: torch.Tensor, v0: torch.Tensor, forces: torch.Tensor,
                     planned: torch.Tensor, window: int = 0) -> torch.Tensor:
    """Where a plan's forces lead: positions ``(B, L, 2)`` after each step row, all world units.

    ``p0, v0: (B, 2)`` the real current state; ``forces: (B, L, 2)`` the plan's actions; ``planned: (B, L, 4)`` the
    plan's states ``[p, v]`` after each row. Row j's position is reached from an *anchor* state by the forces of the
    rows from the anchor on, under ``dyn`` and the semi-implicit Euler step ``p' = p + DT·v'``: the current state
    (``window`` 0, or within the first ``window`` rows), else the plan's own state ``window`` rows earlier. In closed
    form (prefix sums, no loop over rows): with ``u_i = β a_i + c`` and ``n`` rows from anchor state ``(p_s, v_s)``,
    ``p = p_s + DT·(v_s·α(1−αⁿ)/(1−α) + Σ_{i=s}^{j} u_i (1 − α^{j+1−i})/(1−α))``, in float64."""
    dtype = forces.dtype
    f = forces.double()
    alpha, beta, bias = (torch.tensor(v, dtype=torch.float64, device=f.device) for v in
                         (dyn.alpha, dyn.beta, dyn.bias))  # (2,) each
    B, L = f.shape[:2]
    rows = torch.arange(L, device=f.device)
    u = beta * f + bias  # (B, L, 2)
    zero = torch.zeros(B, 1, 2, dtype=torch.float64, device=f.device)
    U = torch.cat([zero, u.cumsum(1)], 1)  # (B, L+1, 2): U[k] = Σ_{i<k} u_i
    E = torch.cat([zero, (u * alpha ** -rows.unsqueeze(1).double()).cumsum(1)], 1)  # Σ_{i<k} α^{-i} u_i
    n = rows + 1  # (L,) state index after row j (0: the current state)
    anchor = (n - window).clamp(min=0) if window else torch.zeros_like(n)
    states = torch.cat([torch.cat([p0, v0], -1).double().unsqueeze(1), planned.double()], 1)  # (B, L+1, 4)
    ps, vs = states[:, anchor, :2], states[:, anchor, 2:]  # (B, L, 2) each
    steps = (n - anchor).unsqueeze(1).double()  # (L, 1)
    free = vs * alpha * (1 - alpha**steps) / (1 - alpha)  # Σ of the anchor velocity's decay over the rows
    driven = (U[:, n] - U[:, anchor] - alpha ** n.unsqueeze(1).double() * (E[:, n] - E[:, anchor])) / (1 - alpha)
    return (ps + DT * (free + driven)).to(dtype)


def split_segments(data: dict[str, np.ndarray], how: str = "streams") -> list[tuple[int, int]]:
    """``[(start, end)]`` step ranges (end exclusive). ``timeouts``: split after every flagged step;
    ``streams``: only where the flagged step is followed by a jump in position (a new rollout), since a
    goal switch does not interrupt the physics."""
    ends = np.flatnonzero(data["timeouts"])
    if how == "streams":
        obs = data["observations"]
        nxt = np.minimum(ends + 1, len(obs) - 1)
        pred = obs[ends, :2] + 0.01 * obs[ends, 2:]  # dt = 0.01
        jump = np.linalg.norm(obs[nxt, :2] - pred, axis=1) > 0.2
        ends = ends[jump | (ends == len(obs) - 1)]
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [(int(s), int(e) + 1) for s, e in zip(starts, ends) if e + 1 - s >= 2]


def start_rows(obs0: np.ndarray, k: int) -> np.ndarray:
    """The start token's raw rows ``(N, k, 6)`` for first observations ``obs0: (N, 4)``."""
    n = len(obs0)
    return np.concatenate([np.zeros((n, k, 2)), np.repeat(obs0[:, None], k, 1)], -1)


class MazeWindows:
    """Training windows of ``T`` tokens of ``k`` rows from every segment, at any step offset.

    Each segment becomes ``[start token rows (k), [a_t, o_{t+1}] rows...]`` (normalized) in one flat
    array; a window starts either at a segment's start token or at any real row. With ``cfg.markovian``
    every window starting at real row t opens instead with the start token of ``o_t`` (the observation
    before that row), followed by ``T - 1`` tokens of real rows.
    ``get_batch(idx (B,)) -> {"x": (B, T, k, 6)}``.
    """

    def __init__(self, data: dict[str, np.ndarray], cfg: PlanDataConfig, norm: Normalizer):
        k, T = cfg.frame_stack, cfg.window
        self.markovian = cfg.markovian
        need = (T - 1) * k if self.markovian else T * k  # real rows a window reads
        chunks, firsts, starts, n = [], [], [], 0
        for s, e in split_segments(data, cfg.segments):
            obs, act = data["observations"][s:e], data["actions"][s:e]
            real = np.concatenate([act[:-1], obs[1:]], 1)  # (e-s-1, 6): [a_t, o_{t+1}]
            if self.markovian:
                rows, first = real, start_rows(obs[:-1], 1)[:, 0]  # the start row [0, o_t] of each real row
                offsets = np.arange(len(rows) - need + 1)
            else:
                rows = np.concatenate([start_rows(obs[:1], k)[0], real])
                offsets = np.concatenate([[0], np.arange(k, len(rows) - need + 1)])
            if len(rows) >= need:
                starts.append(n + offsets)
                chunks.append(rows)
                if self.markovian:
                    firsts.append(first)
                n += len(rows)
        if not chunks:
            raise DataError(f"no data segment is long enough for a window of {T} tokens × {k} steps")
        self.rows = torch.from_numpy(norm.encode(np.concatenate(chunks)).astype(np.float32))  # (N, 6)
        self.firsts = (torch.from_numpy(norm.encode(np.concatenate(firsts)).astype(np.float32))
                       if self.markovian else None)  # (N, 6)
        self.starts = torch.from_numpy(np.concatenate(starts))
        self.T, self.k = T, k
        self.offsets = torch.arange(need)

    def __len__(self) -> int:
        return len(self.starts)

    def get_batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        start = self.starts[idx]
        rows = self.rows[start.unsqueeze(1) + self.offsets]  # (B, need, 6)
        if self.markovian:
            rows = torch.cat([self.firsts[start].unsqueeze(1).expand(-1, self.k, -1), rows], 1)
        return {"x": rows.view(len(idx), self.T, self.k, ROW)}
