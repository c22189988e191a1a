"""Fruit swap: a 2-D imitation task that needs memory (simulated stand-in for the paper's robot task).

The paper's real-robot task (arXiv 2407.01392, Sec. 4.4; 150 demos, 32 px): swap an apple and an orange
using a third, empty slot. Here: a top-down unit square, a point gripper, fruit A (red) and B (green), and
three slots on a row (1 left, 2 middle, 3 right). The gripper starts near ``HOME`` above the row.

**Start layouts** (drawn from the reset seed, or ``options={'layout': i}``), slot 3 always empty:

    layout 0: A in slot 1, B in slot 2          layout 1: A in slot 2, B in slot 1

**Goal**: swap the two fruits (layout 0 ends A@2 B@1, layout 1 ends A@1 B@2) with the gripper open.
The expert always parks A in slot 3 first, moves B into A's old slot, then A into B's old slot, and
returns the gripper to ``HOME`` (open, still) between moves::

    layout 0: (A1,B2) -> (A3,B2) -> (A3,B1) -> (A2,B1)
    layout 1: (A2,B1) -> (A3,B1) -> (A3,B2) -> (A1,B2)

**Why a Markovian policy cannot solve it reliably.** With the gripper open at ``HOME`` the observation is
a function of the fruit configuration (plus per-episode jitter, which is independent of the layout).
Both intermediate configurations occur in *both* layouts, with a different correct next move:

    (A3, B2), gripper home, open:  layout 0 -> fetch B from slot 2 (it goes to slot 1)
                                   layout 1 -> fetch A from slot 3 (it goes to slot 1)
    (A3, B1), gripper home, open:  layout 0 -> fetch A from slot 3 (it goes to slot 2)
                                   layout 1 -> fetch B from slot 1 (it goes to slot 2)

Only the history (the start layout) disambiguates. A policy that maps the current observation to an
action must guess there; a wrong guess drives the fruits through the other layout's sequence and ends
un-swapped (or looping), so its success is about 50% at best. Carrying states are ambiguous as well
(A carried with B@2 is move 1 of layout 0 going right and move 3 of layout 1 going left). With a single
fixed start (``layouts=(0,)``) no observation repeats with a different action and the task is Markovian,
which is why both layouts are on by default.

Observation: ``{'image': (32, 32, 3) uint8, 'state': (13,) float32}`` with state =
``[gripper x, y, closed(0/1), A x, y, B x, y, slot1 x, y, slot2 x, y, slot3 x, y]``.
Action: ``(3,)`` in [-1, 1]: 2-D velocity (times ``max_speed`` per step) and grasp (> 0 closes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Callable

import gymnasium as gym
import numpy as np

from dforce._utils import cache_dir
from dforce.errors import DataError

# ---------------------------------------------------------------- constants

HOME = (0.5, 0.8)  # nominal gripper home, above the middle slot
SLOTS = ((0.2, 0.35), (0.5, 0.35), (0.8, 0.35))  # nominal slot centres 1, 2, 3
LAYOUTS = ((0, 1), (1, 0))  # layout -> (slot index of A, slot index of B), 0-based
STATE_DIM = 13
ACTION_DIM = 3

_BG, _SLOT = (40, 40, 40), (110, 110, 110)
_RED, _GREEN = (220, 40, 40), (40, 200, 60)
_GRIP_OPEN, _GRIP_CLOSED = (90, 140, 255), (255, 255, 255)


@dataclass(frozen=True)
class FruitSwapConfig:
    max_speed: float = 0.06  # world units per step at |v| = 1 (~10 steps home -> slot)
    max_episode_steps: int = 200  # the expert needs ~80-110 steps
    grasp_radius: float = 0.05  # closing the gripper within this of a fruit picks it up
    slot_radius: float = 0.06  # a fruit counts as "in" a slot within this of its centre
    slot_jitter: float = 0.03  # uniform +- jitter of slot centres per episode (randomized start)
    fruit_jitter: float = 0.015  # uniform +- jitter of fruit start position around its slot
    gripper_jitter: float = 0.05  # uniform +- jitter of the gripper start around HOME
    image_size: int = 32  # paper: 32 px observations
    layouts: tuple[int, ...] = (0, 1)  # start layouts drawn uniformly; (0,) makes the task Markovian

    def __post_init__(self):
        if not self.layouts or any(lay not in (0, 1) for lay in self.layouts):
            raise DataError(f"FruitSwapConfig.layouts={self.layouts!r} must be a non-empty subset of (0, 1)")


# ---------------------------------------------------------------- rendering


def _disc(img: np.ndarray, cx: float, cy: float, r: float, color, ring: float = 0.0) -> None:
    """Draw a filled disc (or a ring of width ``ring`` px) at world (cx, cy) with pixel radius r."""
    n = img.shape[0]
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    d = np.hypot(xx - cx * n, yy - (1.0 - cy) * n)
    m = d <= r if ring <= 0 else (d <= r) & (d >= r - ring)
    img[m] = color


def render(state: np.ndarray, size: int = 32) -> np.ndarray:
    """Top-down picture of a ``(13,)`` state: slots (grey rings), fruits (red A, green B), gripper (blue
    ring when open, white dot when closed; drawn on top). Returns ``(size, size, 3)`` uint8."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = _BG
    s = size / 32.0
    for i in range(3):
        _disc(img, state[7 + 2 * i], state[8 + 2 * i], 3.5 * s, _SLOT, ring=1.0 * s)
    _disc(img, state[3], state[4], 2.5 * s, _RED)
    _disc(img, state[5], state[6], 2.5 * s, _GREEN)
    if state[2] > 0.5:
        _disc(img, state[0], state[1], 1.5 * s, _GRIP_CLOSED)
    else:
        _disc(img, state[0], state[1], 2.0 * s, _GRIP_OPEN, ring=1.0 * s)
    return img


# ---------------------------------------------------------------- environment


class FruitSwapEnv(gym.Env):
    """Gymnasium env; see the module docstring. ``info`` carries ``layout``, ``success``, ``holding``."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, config: FruitSwapConfig | None = None):
        self.cfg = config or FruitSwapConfig()
        n = self.cfg.image_size
        self.observation_space = gym.spaces.Dict(
            image=gym.spaces.Box(0, 255, (n, n, 3), np.uint8),
            state=gym.spaces.Box(0.0, 1.0, (STATE_DIM,), np.float32),
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self._state = np.zeros(STATE_DIM, np.float64)
        self.holding = -1  # -1 none, 0 A, 1 B
        self.layout, self.t = 0, 0

    # slots / fruits as (3, 2) and (2, 2) views of the state
    @property
    def slots(self) -> np.ndarray:
        return self._state[7:13].reshape(3, 2)

    def fruit_slot(self, fruit: int) -> int:
        """0-based slot index fruit ``fruit`` (0 A, 1 B) rests in, or -1 (held, or outside every slot)."""
        if self.holding == fruit:
            return -1
        d = np.linalg.norm(self.slots - self._state[3 + 2 * fruit : 5 + 2 * fruit], axis=1)
        return int(d.argmin()) if d.min() <= self.cfg.slot_radius else -1

    def is_success(self) -> bool:
        a, b = LAYOUTS[self.layout]
        return self.holding < 0 and self.fruit_slot(0) == b and self.fruit_slot(1) == a

    def _obs(self) -> dict:
        s = self._state.astype(np.float32)
        return {"image": render(s, self.cfg.image_size), "state": s}

    def _info(self) -> dict:
        return {"layout": self.layout, "success": self.is_success(), "holding": self.holding, "t": self.t}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        c, r = self.cfg, self.np_random
        self.layout = int((options or {}).get("layout", r.choice(c.layouts)))
        if self.layout not in (0, 1):
            raise DataError(f"FruitSwapEnv.reset options['layout']={self.layout} must be 0 or 1")
        slots = np.asarray(SLOTS) + r.uniform(-c.slot_jitter, c.slot_jitter, (3, 2))
        sa, sb = LAYOUTS[self.layout]
        fruits = slots[[sa, sb]] + r.uniform(-c.fruit_jitter, c.fruit_jitter, (2, 2))
        grip = np.asarray(HOME) + r.uniform(-c.gripper_jitter, c.gripper_jitter, 2)
        self._state = np.concatenate([grip, [0.0], fruits.ravel(), slots.ravel()])
        self.holding, self.t = -1, 0
        return self._obs(), self._info()

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (ACTION_DIM,):
            raise DataError(f"FruitSwapEnv.step: action has shape {a.shape}, expected ({ACTION_DIM},)")
        if not np.isfinite(a).all():
            raise DataError(f"FruitSwapEnv.step: action {a.tolist()} contains NaN or inf")
        a = np.clip(a, -1.0, 1.0)
        s, c = self._state, self.cfg
        s[0:2] = np.clip(s[0:2] + a[:2] * c.max_speed, 0.0, 1.0)
        close = a[2] > 0.0
        if close and s[2] < 0.5 and self.holding < 0:  # closing: pick the nearest fruit in reach
            d = [np.linalg.norm(s[3 + 2 * f : 5 + 2 * f] - s[0:2]) for f in (0, 1)]
            f = int(np.argmin(d))
            if d[f] <= c.grasp_radius:
                self.holding = f
        if not close:
            self.holding = -1  # opening drops the fruit where it is
        s[2] = float(close)
        if self.holding >= 0:
            s[3 + 2 * self.holding : 5 + 2 * self.holding] = s[0:2]
        self.t += 1
        success = self.is_success()
        truncated = self.t >= c.max_episode_steps and not success
        return self._obs(), float(success), success, truncated, self._info()


# ---------------------------------------------------------------- scripted expert


@dataclass
class FruitSwapExpert:
    """Scripted expert with memory: it reads the start layout from the first observation and then runs
    reach -> grasp -> carry -> release -> home -> wait for each of its three moves. Randomized: a
    per-episode speed factor, Gaussian velocity noise, jittered targets, random grasp/release/wait
    durations. ``act(state)`` takes the ``(13,)`` state vector of the current step.

    Recovery: if the fruit is not in the gripper when the carry starts (a failed grasp, e.g. the gripper
    was already closed when it arrived), the expert re-opens and reaches for it again. Its own clean
    rollouts never fail a grasp; :func:`expert_episode` with ``early_close > 0`` makes it happen."""

    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    vel_noise: float = 0.1  # std of Gaussian noise on the velocity command
    target_noise: float = 0.008  # std of the place/home target jitter (world units)
    wait_steps: tuple[int, int] = (1, 4)  # uniform [lo, hi) pause at home between moves
    hold_steps: tuple[int, int] = (1, 3)  # uniform [lo, hi) steps spent closing / opening
    max_speed: float = FruitSwapConfig.max_speed  # must match the env's config
    speed_range: tuple[float, float] = (0.7, 1.0)  # per-episode speed factor, uniform (randomized timing)
    arrive_tol: float = 0.012  # a target counts as reached within this distance (world units)

    def reset(self, state: np.ndarray) -> None:
        s = np.asarray(state, np.float64)
        slots = s[7:13].reshape(3, 2)
        sa = int(np.linalg.norm(slots - s[3:5], axis=1).argmin())
        sb = int(np.linalg.norm(slots - s[5:7], axis=1).argmin())
        self.plan = [(0, 2), (1, sa), (0, sb)]  # (fruit, destination slot): A->3, B->A's, A->B's
        self.move, self.phase, self.count = 0, "reach", 0
        self.speed = self.rng.uniform(*self.speed_range)
        self.home = np.asarray(HOME) + self.rng.normal(0, self.target_noise, 2)
        self.wait = self._draw(self.wait_steps)

    def _draw(self, lohi) -> int:
        return int(self.rng.integers(*lohi))

    def _goto(self, pos, target, grip: float) -> tuple[np.ndarray, bool]:
        delta = (target - pos) / self.max_speed  # in action units (one step covers 1.0)
        v = np.clip(delta, -self.speed, self.speed) + self.rng.normal(0, self.vel_noise, 2)
        return np.array([*np.clip(v, -1, 1), grip]), bool(np.linalg.norm(target - pos) < self.arrive_tol)

    def act(self, state: np.ndarray) -> np.ndarray:
        s = np.asarray(state, np.float64)
        pos = s[0:2]
        if self.move >= len(self.plan):
            return np.array([0.0, 0.0, -1.0])
        fruit, dest = self.plan[self.move]
        fpos = s[3 + 2 * fruit : 5 + 2 * fruit]
        if self.phase == "reach":
            a, arrived = self._goto(pos, fpos, -1.0)
            if arrived:
                self.phase, self.count = "grasp", self._draw(self.hold_steps)
            return a
        if self.phase == "grasp":  # close in place; the env picks the fruit up on the first closed step
            self.count -= 1
            if self.count <= 0:
                self.phase = "carry"
                self.target = s[7 + 2 * dest : 9 + 2 * dest] + self.rng.normal(0, self.target_noise, 2)
            return np.array([0.0, 0.0, 1.0])
        if self.phase == "carry":
            if np.linalg.norm(fpos - pos) > 1e-6:  # failed grasp (the fruit is not in the gripper): re-open, retry
                self.phase = "reach"
                return self.act(s)
            a, arrived = self._goto(pos, self.target, 1.0)
            if arrived:
                self.phase, self.count = "release", self._draw(self.hold_steps)
            return a
        if self.phase == "release":
            self.count -= 1
            if self.count <= 0:
                self.move += 1
                self.phase = "home"
            return np.array([0.0, 0.0, -1.0])
        if self.phase == "home":
            a, arrived = self._goto(pos, self.home, -1.0)
            if arrived:
                self.phase = "wait"
            return a
        # wait at home, open and still, then start the next move
        self.wait -= 1
        if self.wait <= 0:
            self.phase, self.wait = "reach", self._draw(self.wait_steps)
        return np.array([0.0, 0.0, -1.0])


# ---------------------------------------------------------------- demos and evaluation


@dataclass
class Demos:
    """Expert episodes; episode i has ``images[i]: (T_i, 32, 32, 3) uint8``, ``states[i]: (T_i, 13)``
    float32 and ``actions[i]: (T_i, 3)`` float32 (observation t, then the expert's action at t), ``finals[i]:
    (13,)`` the state after the last action."""

    images: list[np.ndarray]
    states: list[np.ndarray]
    actions: list[np.ndarray]
    layouts: list[int]
    seeds: list[int]
    finals: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.actions)


@dataclass(frozen=True)
class DemoNoise:
    """Perturbations of the *executed* actions while recording demos (DART, Laskey et al. 2017): the env
    runs the perturbed action, the demo records the expert's clean action, so the demos visit states just
    off the expert's path and show how the expert gets back. Zeros (the default) record plain expert
    rollouts, identical to those without this option."""

    action_noise: float = 0.0  # std of Gaussian noise on the executed velocity (action units; 1 = one full step)
    early_close: float = 0.0  # per grasp: probability the gripper closes early (executed only), a failed grasp
    early_close_dist: tuple[float, float] = (0.06, 0.11)  # uniform distance to the fruit when it closes early
    # (beyond the env's 0.05 grasp radius; the trained policy's failed grasps closed 0.05-0.1 away)
    early_close_steps: tuple[int, int] = (1, 3)  # uniform [lo, hi) steps the gripper stays closed

    def __post_init__(self):
        if not (self.action_noise >= 0 and 0 <= self.early_close <= 1):
            raise DataError(f"DemoNoise: action_noise={self.action_noise} must be >= 0 and "
                            f"early_close={self.early_close} in [0, 1]")

    @property
    def active(self) -> bool:
        return self.action_noise > 0 or self.early_close > 0


def expert_episode(seed: int, config: FruitSwapConfig | None = None, layout: int | None = None,
                   noise: DemoNoise | None = None):
    """Roll out the expert once. Returns ``(images, states, actions, success, layout, final_state)``
    (``actions``: the expert's clean actions; with ``noise`` the env executed perturbed ones, see
    :class:`DemoNoise`; ``final_state``: the ``(13,)`` state after the last action)."""
    env = FruitSwapEnv(config)
    obs, info = env.reset(seed=seed, options=None if layout is None else {"layout": layout})
    expert = FruitSwapExpert(np.random.default_rng([seed, 1]), max_speed=env.cfg.max_speed)
    expert.reset(obs["state"])
    noise = noise or DemoNoise()
    rng = np.random.default_rng([seed, 2])  # perturbations only: the expert's own draws are unchanged
    imgs, sts, acts = [], [], []
    done, move, closed_for, trigger = False, -1, 0, None
    while not done:
        a = expert.act(obs["state"]).astype(np.float32)
        imgs.append(obs["image"]), sts.append(obs["state"]), acts.append(a)
        run = a.astype(np.float64)
        if noise.active:
            if expert.move != move:  # a new move: does its grasp fail (close early), and where?
                move = expert.move
                trigger = rng.uniform(*noise.early_close_dist) if rng.random() < noise.early_close else None
            if noise.action_noise > 0 and a[2] < 0:  # moving with the gripper open (reach / home)
                run[:2] = np.clip(run[:2] + rng.normal(0, noise.action_noise, 2), -1, 1)
            if expert.move < 3 and expert.phase == "reach" and trigger is not None:
                # the env grasps after moving: test the distance the gripper will close at
                fruit = expert.plan[expert.move][0]
                after = np.clip(obs["state"][0:2] + np.clip(run[:2], -1, 1) * env.cfg.max_speed, 0, 1)
                d = np.linalg.norm(obs["state"][3 + 2 * fruit : 5 + 2 * fruit] - after)
                if d <= trigger:  # one chance per move; closer than the grasp radius it would not fail
                    trigger = None
                    closed_for = int(rng.integers(*noise.early_close_steps)) if d > env.cfg.grasp_radius else 0
            if closed_for > 0:
                run[2], closed_for = 1.0, closed_for - 1
        obs, _, term, trunc, info = env.step(run)
        done = term or trunc
    return np.stack(imgs), np.stack(sts), np.stack(acts), bool(info["success"]), info["layout"], obs["state"]


def make_demos(n: int = 150, seed: int = 0, config: FruitSwapConfig | None = None, cache: bool = True,
               progress: bool = False, noise: DemoNoise | None = None) -> Demos:
    """``n`` successful expert demos (paper: 150), seeds ``seed*100003 + i`` (failures are skipped),
    cached as ``.npz`` under ``cache_dir('fruit_swap')`` keyed by ``(n, seed, config, noise)``.
    ``noise``: DART-style perturbations of the executed actions (:class:`DemoNoise`; default none)."""
    cfg, noise = config or FruitSwapConfig(), noise or DemoNoise()
    key = hashlib.sha1(json.dumps([n, seed, asdict(cfg), asdict(noise), 2], sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir("fruit_swap") / f"demos_n{n}_s{seed}_{key}.npz"
    if cache and path.exists():
        z = np.load(path)
        cut = np.cumsum(z["lengths"])[:-1]
        return Demos(*(list(np.split(z[k], cut)) for k in ("images", "states", "actions")),
                     z["layouts"].tolist(), z["seeds"].tolist(), list(z["finals"]))
    out = Demos([], [], [], [], [], [])
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional here
        tqdm = None
    bar = tqdm(total=n, desc="fruit_swap demos", disable=not progress) if tqdm else None
    tries = 2 * n + 10  # the expert succeeds ~100%; this only guards against a broken config
    for i in range(tries):
        s = seed * 100003 + i
        imgs, sts, acts, ok, lay, fin = expert_episode(s, cfg, noise=noise)
        if ok:
            for lst, v in zip((out.images, out.states, out.actions, out.layouts, out.seeds, out.finals),
                              (imgs, sts, acts, lay, s, fin)):
                lst.append(v)
            if bar is not None:
                bar.update(1)
        if len(out) == n:
            break
    if bar is not None:
        bar.close()
    if len(out) < n:
        raise DataError(f"make_demos: the expert succeeded in only {len(out)} of {tries} episodes; check the config")
    if cache:
        np.savez_compressed(path, images=np.concatenate(out.images), states=np.concatenate(out.states),
                            actions=np.concatenate(out.actions), lengths=[len(a) for a in out.actions],
                            layouts=out.layouts, seeds=out.seeds, finals=np.stack(out.finals))
    return out


@dataclass
class EvalResult:
    success: np.ndarray  # (N,) bool
    lengths: np.ndarray  # (N,) int, steps until success or truncation
    layouts: np.ndarray  # (N,) int

    @property
    def success_rate(self) -> float:
        return float(self.success.mean())


def evaluate(policy: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], n_episodes: int = 50,
             seed: int = 0, config: FruitSwapConfig | None = None,
             obs_hook: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None
             ) -> EvalResult:
    """Run ``n_episodes`` envs (seeds ``seed*100003 + 50_000 + i``, disjoint from ``make_demos``) in lock step.

    ``policy(images (N, H, W, 3) uint8, states (N, 13) float32, active (N,) bool) -> actions (N, 3)`` is
    called once per step for all envs (finished envs are still passed, marked inactive; their actions are
    ignored); if it has ``reset(n)`` that is called first. ``obs_hook(images, states, t)`` may return
    corrupted copies (see :mod:`dforce.recipes.imitation.corruption`) before the policy sees them.
    """
    envs = [FruitSwapEnv(config) for _ in range(n_episodes)]
    obs = [e.reset(seed=seed * 100003 + 50_000 + i)[0] for i, e in enumerate(envs)]
    images, states = np.stack([o["image"] for o in obs]), np.stack([o["state"] for o in obs])
    active = np.ones(n_episodes, bool)
    success, lengths = np.zeros(n_episodes, bool), np.zeros(n_episodes, int)
    if hasattr(policy, "reset"):
        policy.reset(n_episodes)
    for t in range(envs[0].cfg.max_episode_steps):
        im, st = (images, states) if obs_hook is None else obs_hook(images.copy(), states.copy(), t)
        actions = np.asarray(policy(im, st, active.copy()), np.float64)
        if actions.shape != (n_episodes, ACTION_DIM):
            raise DataError(f"evaluate: policy returned shape {actions.shape}, expected ({n_episodes}, {ACTION_DIM})")
        for i in np.flatnonzero(active):
            o, _, term, trunc, _ = envs[i].step(actions[i])
            images[i], states[i] = o["image"], o["state"]
            lengths[i] = t + 1
            if term or trunc:
                active[i], success[i] = False, term
        if not active.any():
            break
    return EvalResult(success, lengths, np.array([e.layout for e in envs]))


class BatchedExpert:
    """The scripted expert as an :func:`evaluate` policy (one expert with memory per env)."""

    def __init__(self, seed: int = 0, max_speed: float = FruitSwapConfig.max_speed):
        self.seed, self.max_speed = seed, max_speed

    def reset(self, n: int) -> None:
        self.experts = [FruitSwapExpert(np.random.default_rng([self.seed, i]), max_speed=self.max_speed)
                        for i in range(n)]
        self.started = False

    def __call__(self, images, states, active):
        if not self.started:
            for e, s in zip(self.experts, states):
                e.reset(s)
            self.started = True
        return np.stack([e.act(s) if a else np.zeros(ACTION_DIM) for e, s, a in zip(self.experts, states, active)])
