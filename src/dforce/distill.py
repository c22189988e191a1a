"""Distilling a trained Diffusion Forcing model into a few-step student, per token (``train.distill_from``).

The student is a step-size-conditioned copy of the teacher (:mod:`dforce.shortcut`), trained with the shortcut
loss whose base targets come from the frozen teacher instead of the data: class-0 rows regress onto the teacher's
prediction at the same noisy input and per-token levels, class-1 rows onto the result of two of the teacher's
DDIM steps, and class j ≥ 2 onto two steps of the student's own class j − 1 (no gradient). This is progressive
distillation (Salimans & Ho 2022: a student's one DDIM step matches two of its teacher's, halving the steps per
round), with all rounds trained at once in one step-conditioned network as in shortcut models (Frans et al. 2024).

Why progressive and not consistency distillation (Song et al. 2023). A consistency model maps any point of the
probability-flow ODE straight to x0; sampling it in several steps re-noises the x0 estimate with *fresh* noise
before each step. Diffusion Forcing's sampler moves each token between two levels of a scheduling matrix, keeps
partly denoised tokens as its state, and shows generated context at a small stabilization level: a progressively
distilled student is still a DDIM sampler with per-token levels, so every scheduling matrix, the stabilization,
guidance on the x0 prediction and the model's KV-cache / latent state work unchanged, and its S = 2^j step counts
are exactly the grids the teacher's DDIM steps nest into. Consistency distillation would also need an EMA target
network and an ODE-solver step of the teacher per training example (the same two teacher calls, but with targets
that move as the EMA does), and its one-step quality in the original paper came with the LPIPS metric, which has
no counterpart for time series, plans or ViZDoom latents here. Progressive distillation's known cost, one
training round per halving, disappears when the rounds share one step-conditioned network.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from dforce.engine import checkpoint as ckpt
from dforce.errors import ConfigError
from dforce.shortcut import StepLevelEmbedding, step_embedding, student_prefixes


def load_teacher(student: nn.Module, source: str | Path) -> nn.Module:
    """A frozen teacher for ``student``: the student's architecture with the weights of ``source`` (a run directory,
    whose EMA weights are used when it kept them, or a ``.safetensors`` file), the step embedding zero where the
    file has none, so calling it at class 0 (plain levels) is the teacher itself.

    Raises:
        ConfigError: ``student`` is not a few-step student; CheckpointError: the weights do not fit.
    """
    if step_embedding(student) is None:
        raise ConfigError("train.distill_from needs a few-step student to train (set model.shortcut_steps, e.g. 32)")
    teacher = copy.deepcopy(student)
    for m in teacher.modules():
        if isinstance(m, StepLevelEmbedding):
            nn.init.zeros_(m.step_emb.weight)
    ckpt.load_init_weights(teacher, source, allow_missing=student_prefixes(teacher))
    return teacher.eval().requires_grad_(False)


def teacher_fn(teacher: nn.Module):
    """``f(x, levels, cond)`` of a teacher in fp32 without gradient (the student's loss calls it per batch)."""

    @torch.no_grad()
    def f(x, levels, cond=None):
        return teacher(x, levels, cond)

    return f
