"""Atari videos with actions (``ale-py``, ROMs included in the package): a test bed for your own game videos.

``generate_atari("Freeway", episodes=96, length=128)`` plays each episode with **random persistent actions** (an action
from the game's minimal set, held for U{1..8} agent steps), frame skip 4, no sticky actions, after U{0..max_noops}
random no-op steps so that episodes start in different states; frames are area-downsampled from 210 × 160 to
``resolution`` × ``resolution``. Seeded: the same arguments give the same videos (episode e uses seed ``seed · 1000 +
e``). Alignment as every dforce video source (:mod:`dforce.recipes.video.common`): ``actions[:, t]`` is taken after
``frames[:, t]`` and produces ``frames[:, t + 1]``.

    python -m dforce.recipes.video.atari --game Freeway --episodes 96 --length 128 --out freeway64.npz
    dforce data atari --game Freeway --out freeway64.npz          # the same through the CLI
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dforce.errors import ConfigError
from dforce.recipes.video.common import VideoData, area_downsample, one_hot


@dataclass(frozen=True)
class AtariConfig:
    frame_skip: int = 4  # agent step = 4 emulator frames (DQN / ALE v5 default)
    hold_min: int = 1  # an action is held for U{hold_min..hold_max} agent steps (as the ViZDoom recorder)
    hold_max: int = 8
    max_noops: int = 60  # random no-ops before recording: episodes start in different states
    repeat_action_probability: float = 0.0  # no sticky actions: the recorded action is the executed one


def _make_env(game: str, cfg: AtariConfig):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
    try:
        return gym.make(f"ALE/{game}-v5", frameskip=cfg.frame_skip, full_action_space=False,
                        repeat_action_probability=cfg.repeat_action_probability)
    except Exception as e:  # gymnasium.error.NameNotFound / NamespaceNotFound
        raise ConfigError(f"Atari game {game!r} is not available in ale-py ({type(e).__name__}: {e})") from None


def generate_atari(game: str = "Freeway", episodes: int = 96, length: int = 128, resolution: int = 64, seed: int = 0,
                   config: AtariConfig = AtariConfig(), progress: bool = True) -> VideoData:
    """``episodes`` videos of ``length`` frames: frames ``(N, L, R, R, 3) uint8``, actions ``(N, L, A)`` one-hot over
    the game's minimal action set (names in ``action_names``), ``episode_seeds (N,)``."""
    if episodes < 1 or length < 2 or resolution < 8:
        raise ConfigError(f"generate_atari needs episodes >= 1, length >= 2, resolution >= 8; got {episodes}, "
                          f"{length}, {resolution}")
    env = _make_env(game, config)
    names = tuple(env.unwrapped.get_action_meanings())
    A = len(names)
    frames = np.empty((episodes, length, resolution, resolution, 3), np.uint8)
    actions = np.empty((episodes, length), np.int64)
    seeds = seed * 1000 + np.arange(episodes)
    from tqdm.auto import tqdm

    for e in tqdm(range(episodes), desc=f"atari {game}", disable=not progress):
        ep_seed = int(seeds[e])
        while True:  # a game over before `length` frames: replay the episode from the next seed
            rng = np.random.default_rng(ep_seed)
            obs, _ = env.reset(seed=ep_seed)
            over = False
            for _ in range(int(rng.integers(0, config.max_noops + 1))):
                obs, _, term, trunc, _ = env.step(int(rng.integers(A)))
                over |= term or trunc
            raw, acts, a, left = [], [], 0, 0
            for _ in range(length):
                if left == 0:
                    a, left = int(rng.integers(A)), int(rng.integers(config.hold_min, config.hold_max + 1))
                raw.append(obs)
                acts.append(a)
                obs, _, term, trunc, _ = env.step(a)
                left -= 1
                over |= term or trunc
            if not over:
                break
            ep_seed += 10_000
            seeds[e] = ep_seed
        frames[e] = area_downsample(np.stack(raw), resolution)
        actions[e] = acts
    env.close()
    return VideoData(frames, one_hot(actions, A), names, seeds.astype(np.int64))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dforce.recipes.video.atari", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    from dforce.errors import DforceError

    try:
        return run(args)
    except DforceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def add_arguments(p) -> None:
    p.add_argument("--game", default="Freeway", help="an ALE game name, e.g. Freeway, Pong (default Freeway)")
    p.add_argument("--episodes", type=int, default=96, help="episodes to record (default 96)")
    p.add_argument("--length", type=int, default=128, help="frames per episode (default 128)")
    p.add_argument("--resolution", type=int, default=64, help="frame side in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the .npz file to write (frames, actions, action_names, episode_seeds)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out {out}: the file must end in .npz")
    if out.exists():
        raise ConfigError(f"--out {out} exists; choose another path (dforce never overwrites a file it did not create)")
    data = generate_atari(args.game, args.episodes, args.length, args.resolution, args.seed, progress=not args.quiet)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.npz")
    data.save(tmp)
    tmp.replace(out)
    print(json.dumps({"path": str(out), "game": args.game, "frames": list(data.frames.shape),
                      "actions": list(data.actions.shape), "action_names": list(data.action_names)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
