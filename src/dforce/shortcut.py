"""Few-step students for per-token noise levels: shortcut models (Frans et al. 2024) on Diffusion Forcing.

A *student* is any backbone whose level embedding also embeds a **step size per token**
(:class:`StepLevelEmbedding`, put in place of the backbone's own ``level_emb`` by :func:`make_student`; the
backbones are not edited). It is trained so that one DDIM step of size 2d lands where two steps of size d
land (self-consistency), which lets a scheduling matrix with S rows per token take S *big* steps: S = 1 or 2
instead of the 20 a plain DF model needs.

Step sizes. ``model.shortcut_steps`` = S_max (a power of two) is the finest grid the student knows: step
class j ∈ 0..J−1 (J = log2 S_max + 1) is one step of the S_max/2^j-step grid of raw levels
(:func:`dforce.diffusion.sampling_levels`; the grids nest, step u of S steps is step 2u of 2S). A student
samples with S ∈ {S_max, S_max/2, ..., 1}; S is read off the scheduling matrix (its step unit), so every
named schedule (full_sequence, autoregressive, pyramid, trapezoid) and every custom matrix that moves a
token one unit per row works unchanged (:func:`step_conditioned`, the sampler's only hook).

Model input. A student takes one integer per token, ``level + j·(K+1)`` (:func:`encode_levels`): the
backbones pass it to their level embedding and nothing else, and the transformer's memoized per-level
modulation table simply covers (K+1)·J entries. Class 0 with a zero step embedding (its initialization)
is exactly the teacher, so fine-tuning a trained DF run into a student (``--init-from``) starts from it.

Loss (:func:`shortcut_loss`), per training sequence:
    class 0 (share 1 − ``objective.shortcut_fraction``): the ordinary Diffusion Forcing loss
        (:func:`dforce.objective.diffusion_forcing_loss`, levels of the objective's strategy); with a
        ``teacher`` (progressive distillation, :mod:`dforce.distill`) the target is the teacher's prediction;
    class j ≥ 1: every token at its own level on the class's grid, k_t = grid_j[u_t], u_t ~ U{0..S_j}. Two
        DDIM steps (eta 0) of class j − 1 — the student itself without gradient, or the teacher for j = 1 when
        distilling — move *all* noisy tokens together (as two rows of a scheduling matrix) from k_t via the
        midpoint to k_t', one class-j step below; the target is the x̂0 for which one DDIM step from k_t lands
        on the same x_t' (Salimans & Ho 2022, eq. 9 / "x̃"):
            x̂0* = (x_t' − c·x_t) / (√ᾱ_t' − c·√ᾱ_t),  c = √(1 − ᾱ_t') / √(1 − ᾱ_t),
        regressed in the objective's space (eps | x0 | v) with the objective's loss weights; x̂0* is bounded by
        the batch's largest |x0| (a target outside the data's range is never right).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dforce.diffusion import NoiseSchedule, sampling_levels
from dforce.errors import ConfigError, ScheduleError
from dforce.models.layers import LevelEmbedding
from dforce.objective import LossOutput, ObjectiveConfig, loss_weights, sample_levels

# ---------------------------------------------------------------------------------------------------
# the student's embedding: level + step class per token
# ---------------------------------------------------------------------------------------------------


class StepLevelEmbedding(LevelEmbedding):
    """A backbone's level embedding plus a step-size embedding: ``index (B, T) int → (B, T, dim)``.

    ``index = level + j·(K+1)``: ``level`` in 0..K goes through the teacher's sinusoid + MLP (its
    parameters keep their names, so a teacher's weights load unchanged), step class ``j`` in 0..J−1 through
    ``step_emb`` (``(J, dim)``, zero-initialized: the student starts as the teacher), and the two are added.

    Attributes:
        base_levels: K of the noise schedule.
        max_steps: S_max, the finest grid (a power of two); ``num_classes`` = J = log2 S_max + 1.
        num_levels: the largest index it embeds, (K+1)·J − 1 (what the transformer's level table enumerates).
    """

    def __init__(self, base: LevelEmbedding, max_steps: int):
        dim = base.mlp[-1].out_features
        super().__init__(dim, base.num_levels, base.freq_dim)
        self.mlp = base.mlp  # the teacher's level MLP, same parameter names
        self.base_levels = base.num_levels
        self.max_steps = max_steps
        self.num_classes = int(math.log2(max_steps)) + 1
        self.num_levels = (self.base_levels + 1) * self.num_classes - 1
        self.step_emb = nn.Embedding(self.num_classes, dim)
        nn.init.zeros_(self.step_emb.weight)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        K1 = self.base_levels + 1
        level, step = index % K1, index // K1
        args = (level.float() * (1000.0 / self.base_levels)).unsqueeze(-1) * self.freqs  # (B, T, half)
        return self.mlp(torch.cat([args.sin(), args.cos()], dim=-1)) + self.step_emb(step)


def make_student(model: nn.Module, max_steps: int) -> nn.Module:
    """Turn ``model`` (any backbone with a ``level_emb``) into a few-step student, in place; returns it.

    Raises:
        ConfigError: ``max_steps`` is not a power of two in [2, K], or the model has no level embedding.
    """
    base = getattr(model, "level_emb", None)
    if not isinstance(base, LevelEmbedding) or isinstance(base, StepLevelEmbedding):
        raise ConfigError(f"model.shortcut_steps needs a backbone with a plain level embedding; "
                          f"{type(model).__name__} has {type(base).__name__}")
    check_max_steps(max_steps, base.num_levels)
    model.level_emb = StepLevelEmbedding(base, max_steps)
    return model


def check_max_steps(max_steps: int, num_levels: int | None = None) -> None:
    """``model.shortcut_steps`` must be a power of two >= 2 (and <= K when K is given)."""
    if max_steps < 2 or max_steps & (max_steps - 1):
        raise ConfigError(f"model.shortcut_steps must be a power of two >= 2 (or 0: no student), got {max_steps}")
    if num_levels is not None and max_steps > num_levels:
        raise ConfigError(f"model.shortcut_steps={max_steps} exceeds the {num_levels} noise levels")


def step_embedding(obj) -> StepLevelEmbedding | None:
    """The :class:`StepLevelEmbedding` inside ``obj`` (a module, a DDP / sampler wrapper of one), or None."""
    for cand in (obj, getattr(obj, "module", None), getattr(obj, "fn", None), getattr(obj, "net", None)):
        if isinstance(cand, nn.Module):
            for m in cand.modules():
                if isinstance(m, StepLevelEmbedding):
                    return m
    return None


def student_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Names of the parameters a student adds to its teacher (for ``load_init_weights(allow_missing=...)``)."""
    return tuple(f"{name}.step_emb" if name else "step_emb" for name, m in model.named_modules()
                 if isinstance(m, StepLevelEmbedding))


def encode_levels(levels: torch.Tensor, step_class: torch.Tensor | int, num_levels: int) -> torch.Tensor:
    """A student's input index ``level + j·(K+1)``; ``levels: (B, T)``, ``step_class``: int, ``(B, 1)`` or
    ``(B, T)``. Levels broadcast over the batch (stride 0, as the sampler passes them) stay broadcast."""
    if isinstance(step_class, int) and levels.ndim == 2 and levels.shape[0] > 1 and levels.stride(0) == 0:
        return (levels[:1] + step_class * (num_levels + 1)).expand_as(levels)
    return levels + step_class * (num_levels + 1)


def step_class(num_steps: int, max_steps: int) -> int:
    """The class j of one step of an S-step grid for a student of S_max (S = S_max / 2^j).

    Raises:
        ConfigError: S is larger than S_max or S_max / S is not a power of two.
    """
    if num_steps > max_steps:
        raise ConfigError(f"sampler.steps={num_steps}: this few-step student was trained for at most {max_steps} "
                          f"steps per token (model.shortcut_steps); use {_choices(max_steps)}")
    if max_steps % num_steps or (max_steps // num_steps) & (max_steps // num_steps - 1):
        raise ConfigError(f"sampler.steps={num_steps}: a few-step student takes a power of two of steps per token, "
                          f"one of {_choices(max_steps)}")
    return int(math.log2(max_steps // num_steps))


def _choices(max_steps: int) -> str:
    return ", ".join(str(max_steps >> j) for j in range(int(math.log2(max_steps)), -1, -1))


# ---------------------------------------------------------------------------------------------------
# sampling: the step class of a rollout, fixed on the model
# ---------------------------------------------------------------------------------------------------


class StepConditioned:
    """A student with its step class fixed for one rollout: the state protocol of :mod:`dforce.models`, with
    raw levels ``(B, T)`` turned into the student's ``level + j·(K+1)`` before every call."""

    def __init__(self, net, step_cls: int, num_levels: int):
        self.net, self.step_cls, self.num_levels = net, step_cls, num_levels
        if hasattr(net, "forward_absorb"):
            self.forward_absorb = self._forward_absorb

    def _levels(self, levels: torch.Tensor) -> torch.Tensor:
        return encode_levels(levels, self.step_cls, self.num_levels)

    def init_state(self, batch: int, device=None):
        return self.net.init_state(batch, device)

    def repeat_state(self, state, n: int):
        return self.net.repeat_state(state, n)

    def forward(self, x, levels, cond=None, state=None):
        return self.net.forward(x, self._levels(levels), cond, state)

    __call__ = forward

    def absorb(self, x, levels, cond=None, state=None):
        return self.net.absorb(x, self._levels(levels), cond, state)

    def _forward_absorb(self, x, levels, cond=None, state=None, n_commit: int = 0):
        return self.net.forward_absorb(x, self._levels(levels), cond, state, n_commit)


def step_conditioned(net, num_steps: int, num_levels: int, matrix: torch.Tensor | None = None):
    """What a rollout of S steps per token calls: ``net`` itself for an ordinary model; for a student, ``net``
    with the step class of one step of S (:class:`StepConditioned`).

    Args:
        net: the sampler's stateful denoiser (:func:`dforce.sampler.as_stateful` of the model).
        num_steps: S, the scheduling matrix's steps (``sampler.steps``).
        matrix: a custom ``(M, T)`` matrix in step units (validated), or None for a named schedule (those move
            every token one step per row).
    Raises:
        ConfigError: S is not one the student was trained for; ScheduleError: the custom matrix moves a token
            more than one step in a row (a student's step size is the matrix's step).
    """
    emb = step_embedding(net)
    if emb is None:
        return net
    cls = step_class(num_steps, emb.max_steps)
    if matrix is not None:
        jump = matrix[:-1] - matrix[1:]  # (M-1, T) steps each token moves per row
        if (jump > 1).any():
            m, t = (int(i) for i in (jump > 1).nonzero()[0])
            raise ScheduleError(f"custom scheduling matrix moves token {t} by {int(jump[m, t])} steps in row {m}; a "
                                "few-step student takes one step per row (use a matrix of fewer steps instead)")
    return StepConditioned(net, cls, num_levels)


# ---------------------------------------------------------------------------------------------------
# training: the shortcut (self-consistency) loss
# ---------------------------------------------------------------------------------------------------


def ddim_x0_target(schedule: NoiseSchedule, x_t: torch.Tensor, k_t: torch.Tensor, k_s: torch.Tensor,
                   x_s: torch.Tensor) -> torch.Tensor:
    """The x̂0 for which one DDIM step (eta 0) from ``x_t`` at ``k_t`` lands on ``x_s`` at ``k_s < k_t``:
    x̂0 = (x_s − c·x_t) / (√ᾱ_s − c·√ᾱ_t), c = √(1 − ᾱ_s) / √(1 − ᾱ_t) (Salimans & Ho 2022).

    ``x_t, x_s: (B, T, *D)``, ``k_t, k_s: (B, T)``; tokens with ``k_s == k_t`` return ``x_s``.
    """
    a_t, a_s = schedule._at("alphas_cumprod", k_t, x_t), schedule._at("alphas_cumprod", k_s, x_t)
    c = (1 - a_s).clamp(min=0).sqrt() / (1 - a_t).clamp(min=1e-12).sqrt()
    den = a_s.sqrt() - c * a_t.sqrt()
    x0 = (x_s - c * x_t) / den.clamp(min=1e-6)
    moving = (k_s < k_t).reshape(*k_t.shape, *((1,) * (x_t.ndim - k_t.ndim)))
    return torch.where(moving, x0, x_s)


def two_step_target(half, schedule: NoiseSchedule, x_t: torch.Tensor, k_t: torch.Tensor, k_mid: torch.Tensor,
                    k_end: torch.Tensor, cond: torch.Tensor | None, clip: float | torch.Tensor | None = None
                    ) -> torch.Tensor:
    """Self-consistency target in the objective's space: two DDIM steps of ``half(x, levels, cond)`` (the
    smaller step: raw levels in, prediction out) move every token ``k_t → k_mid → k_end`` together; the
    result is the prediction one step ``k_t → k_end`` must make. Shapes as :func:`ddim_x0_target`; ``clip``
    bounds the target's x̂0 to ``[-clip, clip]`` (None: unbounded)."""
    x = x_t
    for k_from, k_to in ((k_t, k_mid), (k_mid, k_end)):
        x0, eps = schedule.to_x0_eps(x, k_from, half(x, k_from, cond).float())
        x = schedule.step(x, k_from, k_to, x0, eps)
    x0 = ddim_x0_target(schedule, x_t, k_t, k_end, x)
    if clip is not None:
        x0 = torch.maximum(torch.minimum(x0, torch.as_tensor(clip).to(x0)), -torch.as_tensor(clip).to(x0))
    return schedule.target(x0, k_t, schedule.eps_from_x0(x_t, k_t, x0))


def class_grids(max_steps: int, num_levels: int, device=None) -> torch.Tensor:
    """``(J, S_max + 1)`` long: row j = the raw levels of the S_max/2^j-step grid, padded with its last value."""
    J = int(math.log2(max_steps)) + 1
    grids = torch.empty(J, max_steps + 1, dtype=torch.long)
    for j in range(J):
        g = sampling_levels(max_steps >> j, num_levels)
        grids[j] = torch.cat([g, g[-1:].expand(max_steps + 1 - len(g))])
    return grids.to(device)


def shortcut_loss(
    model,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    cfg: ObjectiveConfig,
    cond: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    *,
    max_steps: int,
    teacher=None,
    target_model=None,
    levels: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    classes: torch.Tensor | None = None,
    entry_weights: torch.Tensor | None = None,
) -> LossOutput:
    """The few-step student's loss (module docstring): DF rows and self-consistency rows in one model call.

    Args:
        model: the student, ``model(x (B,T,*D), index (B,T), cond) -> prediction`` (index = level + j·(K+1)).
        x0: ``(B, T, *D)`` clean sequences; cond ``(B, T, C)``; mask ``(B, T)`` bool (real tokens).
        cfg: the objective (level strategy and weights of class-0 rows; ``shortcut_fraction``).
        max_steps: the student's S_max (``model.shortcut_steps``).
        teacher: frozen model ``teacher(x, levels, cond)`` (distillation): class-0 targets are its predictions and
            the two half steps of class-1 rows are its steps. None: class 0 learns from the data.
        target_model: the model (without DDP) whose no-grad steps make the class-j ≥ 2 targets (default ``model``).
        levels, noise: override class-0 draws (tests); classes: ``(B,)`` long step class per sequence (tests).
    Returns:
        :class:`dforce.objective.LossOutput` (``levels``: the raw levels).
    """
    B, T = x0.shape[:2]
    K, dev = schedule.num_levels, x0.device
    target_model = model if target_model is None else target_model
    if levels is None:
        levels, loss_mask = sample_levels(cfg.level_strategy, B, T, K, dev, generator)
    else:
        loss_mask = levels > 0
    if noise is None:
        noise = torch.randn(x0.shape, device=dev, dtype=x0.dtype, generator=generator)
    J = int(math.log2(max_steps)) + 1
    if classes is None:
        classes = torch.zeros(B, dtype=torch.long, device=dev)
        if cfg.shortcut_fraction > 0:  # draws after the DF ones: with fraction 0 the stream equals the DF loss's
            boot = torch.rand(B, device=dev, generator=generator) < cfg.shortcut_fraction
            classes = torch.where(boot, torch.randint(1, J, (B,), device=dev, generator=generator), classes)
    boot = classes > 0  # (B,)
    k_mid = k_end = None
    if bool(boot.any()):
        grids = class_grids(max_steps, K, dev)  # (J, S_max + 1)
        fine = grids[(classes - 1).clamp(min=0)]  # (B, S_max + 1): the half-step grid
        n = (max_steps >> classes).unsqueeze(1)  # (B, 1) steps of the row's own grid
        u = (torch.rand(B, T, device=dev, generator=generator) * (n + 1)).long().clamp(max=n)  # (B, T) in 0..S_j
        u = torch.where(boot[:, None], u, torch.zeros_like(u))  # class-0 rows keep their own levels
        levels = torch.where(boot[:, None], fine.gather(1, 2 * u), levels)
        k_mid = fine.gather(1, (2 * u - 1).clamp(min=0))
        k_end = fine.gather(1, (2 * u - 2).clamp(min=0))
        loss_mask = torch.where(boot[:, None], u > 0, loss_mask)
    if mask is not None:
        loss_mask = loss_mask & mask.bool()
        levels = torch.where(mask.bool(), levels, torch.full_like(levels, K))
    x_noisy = schedule.add_noise(x0, levels, noise)
    target = schedule.target(x0, levels, noise)
    # targets in fp32 even under bf16 autocast: near level K the x̂0 of ddim_x0_target divides by √ᾱ' − c·√ᾱ_t, which is
    # small, and amplifies bf16's rounding of the two steps into noise the student would learn
    with torch.no_grad(), torch.autocast(x0.device.type, enabled=False):
        if teacher is not None:  # distillation: class 0 regresses onto the teacher
            target = torch.where(_rows(~boot, x0), teacher(x_noisy, levels, cond).to(target), target)
        if k_mid is not None:
            i = boot.nonzero().squeeze(1)
            half_cls = classes[i] - 1  # (B_b,)
            c_b = None if cond is None else cond[i]

            def half(x, k, c):
                out = target_model(x, encode_levels(k, half_cls[:, None], K), c).float()
                if teacher is not None and bool((half_cls == 0).any()):  # class-1 rows: the teacher's steps
                    t = half_cls == 0
                    out[t] = teacher(x[t], k[t], None if c is None else c[t]).float()
                return out

            # a target outside the data's range is never right: its x̂0 is bounded by the batch's largest |x0|
            # (heavy-tailed data, e.g. forecast tokens, otherwise feeds one bad prediction back as the next target)
            real = x0.abs().flatten(2).amax(-1) if mask is None else x0.abs().flatten(2).amax(-1) * mask
            boot_target = two_step_target(half, schedule, x_noisy[i], levels[i], k_mid[i], k_end[i], c_b,
                                          clip=real.max())
            target = target.index_copy(0, i, boot_target.to(target))
    pred = model(x_noisy, encode_levels(levels, classes[:, None], K), cond)
    sq = (pred.float() - target.float()).pow(2).flatten(2)  # (B, T, prod(D))
    if entry_weights is not None:
        sq = sq * entry_weights.to(sq.device, sq.dtype)
    token_loss = sq.mean(-1) * loss_mask  # (B, T)
    weights = loss_weights(levels, schedule, cfg) * loss_mask
    loss = (token_loss * weights).sum() / loss_mask.sum().clamp(min=1)
    return LossOutput(loss, token_loss.detach(), levels, weights)


def _rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``rows: (B,)`` bool broadcast against ``like: (B, T, *D)``."""
    return rows.reshape(-1, *((1,) * (like.ndim - 1)))
