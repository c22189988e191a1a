"""Which videos a run trains on and which it is evaluated on: a split **by episode**, recorded in the run.

Your own file (``data.source`` = a ``.npy``/``.npz`` path) holds N episodes. The held-out ones are

* the episodes you name (``data.heldout=[3,17,42]``, 0-based indices into the file), or
* ``data.eval_episodes`` episodes drawn by a seeded permutation of the N (``data.split_seed``), the same every time.

Training never sees a held-out episode, and ``dforce video sample`` rolls out held-out episodes only (its
``--episodes n`` takes the first n of them; asking for more than the run holds out is an error, not a silent reuse
of training videos). The split is written to ``<run>/split.json`` by training and read back by evaluation, which
also checks that the file still has the episodes it names.

Generated sources (``digits``, ``vizdoom``) draw their held-out videos with another seed (``data.seed + 10000``):
they cannot overlap the training ones, and any number can be generated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dforce.errors import CheckpointError, DataError

SPLIT_FILE = "split.json"
EVAL_SEED_OFFSET = 10_000  # generated sources: held-out videos come from seed data.seed + 10000 (never a training seed)


def episode_split(num_episodes: int, eval_episodes: int, seed: int = 0,
                  heldout: list[int] | tuple[int, ...] | None = None, where: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """``(train, heldout)`` sorted episode indices of a file of ``num_episodes`` episodes; disjoint, together all.

    ``heldout`` names the held-out episodes; otherwise ``min(eval_episodes, N − 1)`` of them are drawn by a
    permutation seeded with ``seed``. Raises :class:`DataError` when fewer than 2 episodes exist (nothing could be
    held out without evaluating on training data) or a named index is out of range, repeated or leaves nothing to
    train on."""
    N = int(num_episodes)
    if N < 2:
        raise DataError(f"{where}: {N} episode(s); holding videos out needs at least 2 episodes (cut a long video "
                        "into several episodes: frames (N, T, H, W, C))")
    if heldout is not None:
        ids = [int(i) for i in heldout]
        bad = [i for i in ids if not 0 <= i < N]
        if bad:
            raise DataError(f"{where}: held-out episode {bad[0]} is not in 0..{N - 1}")
        if len(set(ids)) != len(ids):
            raise DataError(f"{where}: held-out episodes {ids} name an episode twice")
        if not ids or len(ids) >= N:
            raise DataError(f"{where}: data.heldout must name between 1 and {N - 1} of the {N} episodes, got {len(ids)}")
        held = np.array(sorted(ids), dtype=np.int64)
    else:
        k = min(int(eval_episodes), N - 1)
        held = np.sort(np.random.default_rng(seed).permutation(N)[:k]).astype(np.int64)
    train = np.setdiff1d(np.arange(N), held).astype(np.int64)
    return train, held


def split_record(source: str, num_episodes: int | None, train, heldout, seed: int | None = None) -> dict:
    """What ``split.json`` holds: the source, and the episode indices (files) or the seeds (generated sources)."""
    rec = {"source": source}
    if num_episodes is None:  # generated: seeds
        rec.update(kind="generated", train_seed=seed, heldout_seed=seed + EVAL_SEED_OFFSET)
    else:
        rec.update(kind="file", episodes=int(num_episodes), train=[int(i) for i in train],
                   heldout=[int(i) for i in heldout])
    return rec


def save_split(run_dir: str | Path, record: dict) -> Path:
    """Write ``<run>/split.json`` atomically."""
    from dforce.engine.checkpoint import atomic_write_bytes

    path = Path(run_dir) / SPLIT_FILE
    atomic_write_bytes(path, json.dumps(record, indent=1).encode())
    return path


def load_split(run_dir: str | Path) -> dict | None:
    """The run's recorded split, or None (a run made before splits were recorded)."""
    path = Path(run_dir) / SPLIT_FILE
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if rec.get("kind") == "file" and set(rec.get("train", [])) & set(rec.get("heldout", [])):
        raise CheckpointError(f"{path}: the recorded held-out episodes overlap the training episodes")
    return rec
