"""ViZDoom maze videos for the action-conditioned video world-model recipe.

An exploring agent walks the ``my_way_home`` maze (shipped inside the ``vizdoom`` wheel, nothing is
downloaded) with random-but-persistent discrete actions: it draws one of ``none / turn_left /
turn_right / forward`` and holds it for a random number of steps; a forward move that does not change
the player's position (a wall) is cut short and replaced by a turn, so the agent keeps exploring.
The game renders headless (no window, no sound) at 256x192 and frames are area-downsampled to
``resolution`` (64 or 32; exact 4x3 / 8x6 block means, full field of view, aspect squashed).

Array and alignment conventions are those of :mod:`dforce.recipes.video.common`: ``frames (N, T, H, W, 3)
uint8``, ``actions (N, T, A) float32`` one-hot, ``actions[:, t]`` is applied after observing
``frames[:, t]`` and produces ``frames[:, t + 1]``.

The game is deterministic given its seed (``DoomGame.set_seed`` before ``new_episode``) and the action
sequence, so a model's rollout under the recorded actions can be scored against the true future
(:func:`replay_episode` re-renders an episode from its seed and actions).

    python -m dforce.recipes.video.vizdoom --episodes 1000 --length 300 --resolution 64
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from dforce._utils import cache_dir
from dforce.recipes.video.common import VideoData, area_downsample, one_hot
from dforce.errors import ConfigError, DataError

ACTION_NAMES = ("none", "turn_left", "turn_right", "forward")
# Button vectors over (TURN_LEFT, TURN_RIGHT, MOVE_FORWARD), indexed like ACTION_NAMES.
_BUTTONS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1))
_FORWARD = 3


@dataclass(frozen=True)
class VizdoomConfig:
    scenario: str = "my_way_home.cfg"  # maze scenario bundled with the vizdoom wheel
    frame_skip: int = 4  # game tics per recorded step (the usual ViZDoom/Atari choice; ~14 deg turn/step)
    min_hold: int = 1  # an action is held for U{min_hold..max_hold} steps ("persistent" exploration)
    max_hold: int = 8
    action_probs: tuple[float, ...] = (0.1, 0.2, 0.2, 0.5)  # none/left/right/forward; forward-biased to explore
    stuck_distance: float = 1.0  # map units; a forward step moving less than this counts as hitting a wall
    max_attempts: int = 20  # re-draw an episode (next sub-seed) if the game ends early, e.g. goal reached

    def __post_init__(self):
        if not (1 <= self.min_hold <= self.max_hold):
            raise ConfigError(f"VizdoomConfig needs 1 <= min_hold <= max_hold, got {self.min_hold}, {self.max_hold}")
        if len(self.action_probs) != len(ACTION_NAMES) or abs(sum(self.action_probs) - 1) > 1e-6:
            raise ConfigError(f"VizdoomConfig.action_probs must be {len(ACTION_NAMES)} probabilities summing to 1")


def _require_vizdoom():
    try:
        import vizdoom
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("ViZDoom data needs the `vizdoom` package: pip install 'dforce[video]'") from e
    return vizdoom


def make_game(config: VizdoomConfig = VizdoomConfig()):
    """An initialized headless ``vizdoom.DoomGame`` (RGB 256x192, buttons TURN_LEFT/TURN_RIGHT/MOVE_FORWARD)."""
    vzd = _require_vizdoom()
    path = config.scenario if os.path.isabs(config.scenario) else os.path.join(vzd.scenarios_path, config.scenario)
    if not os.path.exists(path):
        raise DataError(f"ViZDoom scenario {path} does not exist")
    game = vzd.DoomGame()
    game.load_config(path)
    game.set_doom_config_path(str(cache_dir("vizdoom") / "_vizdoom.ini"))  # not in the current directory
    game.set_window_visible(False)
    game.set_sound_enabled(False)
    game.set_screen_format(vzd.ScreenFormat.RGB24)
    game.set_screen_resolution(vzd.ScreenResolution.RES_256X192)
    game.set_render_hud(False)
    game.set_available_buttons([vzd.Button.TURN_LEFT, vzd.Button.TURN_RIGHT, vzd.Button.MOVE_FORWARD])
    game.set_available_game_variables([vzd.GameVariable.POSITION_X, vzd.GameVariable.POSITION_Y])
    game.set_episode_timeout(10**9)  # the recorder decides the length
    game.set_mode(vzd.Mode.PLAYER)
    game.init()
    return game


def episode_seed(seed: int, episode: int, attempt: int = 0) -> int:
    """Deterministic 31-bit seed of one episode attempt (used for the game and the agent's RNG)."""
    return int(np.random.SeedSequence([seed, episode, attempt]).generate_state(1)[0] & 0x7FFFFFFF)


def record_episode(game, game_seed: int, length: int, resolution: int, config: VizdoomConfig = VizdoomConfig(),
                   actions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Play one episode and record it.

    Args:
        game: from :func:`make_game`.
        game_seed: seeds the game and (when ``actions`` is None) the exploring agent.
        length: number of frames ``T``.
        resolution: output side ``S``.
        actions: ``(T,) int`` action indices to replay instead of exploring.
    Returns:
        ``frames (T, S, S, 3) uint8`` and ``action indices (T,) int64`` (``[t]`` follows frame ``t``),
        or None when the game ended before ``T`` frames.
    """
    rng = np.random.default_rng(game_seed)
    game.set_seed(game_seed)
    game.new_episode()
    frames = np.empty((length, 192, 256, 3), np.uint8)
    taken = np.empty(length, np.int64)
    current, hold, last_pos = 0, 0, None
    for t in range(length):
        if game.is_episode_finished():
            return None
        state = game.get_state()
        frames[t] = state.screen_buffer
        pos = np.asarray(state.game_variables[:2], dtype=np.float64)
        if actions is not None:
            current = int(actions[t])
        else:
            stuck = (current == _FORWARD and last_pos is not None
                     and np.linalg.norm(pos - last_pos) < config.stuck_distance)
            if hold <= 0 or stuck:
                current = int(rng.choice(len(ACTION_NAMES), p=config.action_probs))
                if stuck and current == _FORWARD:
                    current = int(rng.integers(1, 3))  # turn away from the wall
                hold = int(rng.integers(config.min_hold, config.max_hold + 1))
            hold -= 1
        taken[t] = current
        last_pos = pos
        game.make_action(list(_BUTTONS[current]), config.frame_skip)
    return area_downsample(frames, resolution), taken


def replay_episode(game_seed: int, actions: np.ndarray, resolution: int,
                   config: VizdoomConfig = VizdoomConfig()) -> np.ndarray:
    """Re-render an episode from its seed and ``actions: (T, A)`` one-hot (or ``(T,)`` indices) -> ``(T, S, S, 3)``."""
    idx = actions.argmax(-1) if actions.ndim == 2 else actions
    game = make_game(config)
    try:
        out = record_episode(game, game_seed, len(idx), resolution, config, actions=idx)
    finally:
        game.close()
    if out is None:
        raise DataError(f"ViZDoom episode with seed {game_seed} ended before {len(idx)} frames during replay")
    return out[0]


def _cache_path(episodes: int, length: int, resolution: int, seed: int, config: VizdoomConfig):
    key = json.dumps([episodes, length, resolution, seed, asdict(config)], sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    stem = os.path.splitext(os.path.basename(config.scenario))[0]
    return cache_dir("vizdoom") / f"{stem}_n{episodes}_t{length}_r{resolution}_s{seed}_{digest}.npz"


def generate_vizdoom(episodes: int, length: int, resolution: int = 64, seed: int = 0,
                     config: VizdoomConfig = VizdoomConfig(), use_cache: bool = True,
                     progress: bool = True) -> VideoData:
    """Record (or load from the cache) ``episodes`` ViZDoom episodes of ``length`` frames.

    Returns:
        :class:`VideoData` with ``frames (N, T, S, S, 3) uint8``, ``actions (N, T, 4) float32``
        and ``episode_seeds (N,)`` (pass one with its actions to :func:`replay_episode`).
        The result depends only on the arguments (cached under ``cache_dir('vizdoom')``).
    """
    if episodes < 1 or length < 2:
        raise ConfigError(f"generate_vizdoom needs episodes >= 1 and length >= 2, got {episodes}, {length}")
    if resolution not in (16, 32, 64):
        raise ConfigError(f"generate_vizdoom resolution={resolution} is not one of 16, 32, 64")
    path = _cache_path(episodes, length, resolution, seed, config)
    if use_cache and path.exists():
        return VideoData.load(path)
    frames = np.empty((episodes, length, resolution, resolution, 3), np.uint8)
    idx = np.empty((episodes, length), np.int64)
    seeds = np.empty(episodes, np.int64)
    game = make_game(config)
    try:
        for i in tqdm(range(episodes), desc="vizdoom episodes", disable=not progress):
            for attempt in range(config.max_attempts):
                seeds[i] = episode_seed(seed, i, attempt)
                out = record_episode(game, int(seeds[i]), length, resolution, config)
                if out is not None:
                    frames[i], idx[i] = out
                    break
            else:
                raise DataError(f"ViZDoom episode {i} ended early {config.max_attempts} times; use a shorter length")
    finally:
        game.close()
    data = VideoData(frames, one_hot(idx, len(ACTION_NAMES)), ACTION_NAMES, seeds)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")  # write then rename: an interrupted run leaves no bad cache
        data.save(tmp)
        os.replace(tmp, path)
    return data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Record ViZDoom maze episodes into the dforce cache.")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--length", type=int, default=300, help="frames per episode")
    p.add_argument("--resolution", type=int, default=64, choices=(16, 32, 64))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    data = generate_vizdoom(args.episodes, args.length, args.resolution, args.seed, use_cache=False)
    dt = time.perf_counter() - t0
    path = _cache_path(args.episodes, args.length, args.resolution, args.seed, VizdoomConfig())
    data.save(path)
    n = args.episodes * args.length
    print(f"{n} frames in {dt:.1f}s ({n / dt:.0f} frames/s) -> {path}")


if __name__ == "__main__":
    main()
