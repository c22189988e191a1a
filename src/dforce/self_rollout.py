"""Self-rollout fine-tuning: train on a past the model generated itself (``train.self_rollout``).

The idea of Self Forcing (Huang et al. 2025): at test time a streaming model conditions on its *own* outputs, at
training time on real data, and the mismatch is what makes long rollouts drift. Self Forcing closes it by rolling
the model out during training with its KV cache and training the rollout as a whole (a distribution-matching
loss). dforce keeps its ordinary per-token loss and only changes what the model conditions on:

For a share ``train.self_rollout`` of each batch, the model (no gradient) rolls the sequence out from its first
``context`` real tokens with the recipe's own sampler settings (``sampler.steps``, schedule, window,
stabilization: what it will do at test time) up to a random split p in (context, T), following the real
conditioning (actions). The sampler's final *state* (RNN latent / ConvGRU map / KV cache, with the generated
tokens committed at the stabilization level exactly as in a rollout) is where the training loss on the real tokens
p..T−1 starts: the model learns to continue the real sequence from a past of its own making, i.e. to correct its
drift. With a few-step student the rollout is cheap (S = 1-2) and the sub-batch trains either the DF rows or, with
probability ``objective.shortcut_fraction``, self-consistency rows (whole sub-batch: the state is shared).

What it leaves out from Self Forcing: gradients through the rollout (the state is detached) and the video-level
distribution-matching loss; the targets are the real next frames, which under real actions in a deterministic
environment are the right continuation of a past that stays close to the real one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dforce.errors import ConfigError
from dforce.objective import LossOutput
from dforce.sampler import SamplerConfig, sample


@dataclass(frozen=True)
class RolloutSpec:
    """What a recipe tells the trainer for self-rollout fine-tuning."""

    sampler: SamplerConfig  # the recipe's test-time sampler (steps, schedule, window, stabilization)
    context: int  # real tokens before a rollout (video: cfg.context / frame_stack)


class WithState:
    """``f(x (B,T,*D), levels (B,T), cond) -> prediction`` of ``model`` continuing from a fixed ``state``."""

    def __init__(self, model, state):
        self.model, self.state = model, state

    def __call__(self, x, levels, cond=None):
        return self.model(x, levels, cond, self.state)


def split_point(tokens: int, context: int, generator: torch.Generator | None) -> int:
    """The first real target token p, uniform in [context + 1, T − 1] (at least one generated, one target)."""
    if tokens < context + 2:
        raise ConfigError(f"train.self_rollout needs windows of at least context + 2 = {context + 2} tokens, "
                          f"got {tokens}")
    dev = generator.device if generator is not None else "cpu"
    return int(torch.randint(context + 1, tokens, (1,), device=dev, generator=generator))


def self_rollout_loss(loss_fn, net, raw_model, schedule, batch: dict, spec: RolloutSpec, fraction: float,
                      generator: torch.Generator | None = None, classes_fn=None) -> LossOutput:
    """One training loss with the first ⌈fraction·B⌉ sequences of ``batch`` continued from a self-made past.

    Args:
        loss_fn: ``loss_fn(model, x0, cond, mask, generator, target_model=None, classes=None) -> LossOutput``.
        net: the model the gradient flows through (DDP wrapper or the model); raw_model: the model itself.
        batch: ``x (B, T, *D)``, optional ``cond (B, T, C)``, ``mask (B, T)``.
        classes_fn: ``n -> (n,) long`` step classes of the self-rollout rows (students) or None.
    Returns:
        :class:`LossOutput` of the whole batch (losses of the two parts averaged by their rows); ``token_loss`` and
        ``weights`` cover the rows as trained (the self-rollout rows' generated tokens carry none).
    """
    x0, cond, mask = batch["x"], batch.get("cond"), batch.get("mask")
    B, T = x0.shape[:2]
    n = min(B, max(1, math.ceil(fraction * B)))
    c = spec.context
    p = split_point(T, c, generator)
    take = lambda t, rows, cols=slice(None): None if t is None else t[rows, cols]  # noqa: E731
    with torch.no_grad():
        out = sample(raw_model, schedule, spec.sampler, context=x0[:n, :c], cond=take(cond, slice(0, n), slice(0, p)),
                     length=p - c, generator=generator)
    part = loss_fn(WithState(net, out.state), x0[:n, p:], take(cond, slice(0, n), slice(p, T)),
                   take(mask, slice(0, n), slice(p, T)), generator, target_model=WithState(raw_model, out.state),
                   classes=None if classes_fn is None else classes_fn(n))
    if n == B:
        pad = lambda t: torch.nn.functional.pad(t, (p, 0))  # noqa: E731  (B, T - p) -> (B, T), zeros before p
        return LossOutput(part.loss, pad(part.token_loss), pad(part.levels), pad(part.weights))
    rest = loss_fn(net, x0[n:], take(cond, slice(n, B)), take(mask, slice(n, B)), generator)
    pad = lambda t: torch.nn.functional.pad(t, (p, 0))  # noqa: E731
    loss = (n * part.loss + (B - n) * rest.loss) / B
    return LossOutput(loss, torch.cat([pad(part.token_loss), rest.token_loss]),
                      torch.cat([pad(part.levels), rest.levels]), torch.cat([pad(part.weights), rest.weights]))
