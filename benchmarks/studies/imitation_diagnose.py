"""Where does a fruit-swap policy fail? Per-episode event traces and a summary.

    PYTHONPATH=src python benchmarks/studies/imitation_diagnose.py RUN [--episodes 50] [--set policy.horizon=4 ...]

Runs a trained imitation run (``dforce imitation train``) on the evaluation episodes of
:func:`dforce.recipes.imitation.fruit_swap.evaluate` (same seeds) and logs, per episode: grasps (``grabA0.012`` = fruit A
picked up with the gripper 0.012 from it), failed grasps (the gripper closes with no fruit within the
grasp radius: ``failgrasp0.088`` = nearest fruit 0.088 away), drops (``dropA@3`` = released in slot 3,
``@0`` = outside every slot). Prints the success rate, failed grasps per episode, the median grasp
distance and the number of drops outside a slot. ``--set`` overrides the run's ``policy.*`` settings.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
import torch
import yaml

from dforce.recipes.imitation.fruit_swap import FruitSwapEnv
from dforce.engine.config import from_dict
from dforce.recipes.imitation import recipe as imi


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="policy.KEY=VALUE")
    p.add_argument("--quiet", action="store_true", help="summary only")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg, model, schedule = imi.load_run(args.run)
    pol = dict(vars(cfg.policy))
    for kv in args.set:
        k, v = kv.split("=", 1)
        pol[k.removeprefix("policy.")] = yaml.safe_load(v)
    cfg = replace(cfg, policy=from_dict(imi.PolicyConfig, pol))
    policy = imi.make_policy(model, schedule, cfg, seed=args.seed)
    N = args.episodes
    envs = [FruitSwapEnv() for _ in range(N)]
    states = np.stack([e.reset(seed=args.seed * 100003 + 50_000 + i)[0]["state"] for i, e in enumerate(envs)])
    active, success = np.ones(N, bool), np.zeros(N, bool)
    events: list[list[str]] = [[] for _ in range(N)]
    fails, grab_d, outside = np.zeros(N, int), [], 0
    policy.reset(N)
    t0 = time.time()
    for t in range(envs[0].cfg.max_episode_steps):
        acts = policy(None, states.copy(), active.copy())
        for i in np.flatnonzero(active):
            e = envs[i]
            was_closed, held = e._state[2] > 0.5, e.holding
            fruits = e._state[3:7].reshape(2, 2).copy()
            o, _, term, trunc, _ = e.step(acts[i])
            states[i] = o["state"]
            d = np.linalg.norm(fruits - e._state[0:2], axis=1)
            if acts[i][2] > 0 and not was_closed and e.holding < 0:
                fails[i] += 1
                events[i].append(f"t{t}:failgrasp{d.min():.3f}")
            if held < 0 and e.holding >= 0:
                grab_d.append(d[e.holding])
                events[i].append(f"t{t}:grab{'AB'[e.holding]}{d[e.holding]:.3f}")
            if held >= 0 and e.holding < 0:
                slot = e.fruit_slot(held) + 1
                outside += slot == 0
                events[i].append(f"t{t}:drop{'AB'[held]}@{slot}")
            if term or trunc:
                active[i], success[i] = False, term
        if not active.any():
            break
    if not args.quiet:
        for i in range(N):
            print(i, f"layout {envs[i].layout}", "ok  " if success[i] else "FAIL", " ".join(events[i]))
    print(f"success {success.mean():.2f} over {N} episodes ({time.time() - t0:.0f} s); failed grasps per episode "
          f"{fails.mean():.2f} (episodes with one: {(fails > 0).mean():.2f}); median grasp distance "
          f"{np.median(grab_d) if grab_d else float('nan'):.3f}; drops outside a slot {outside}")
    return 0


if __name__ == "__main__":
    from dforce.errors import exit_on_user_error

    raise SystemExit(exit_on_user_error(main, "benchmarks/studies/imitation_diagnose.py"))  # user errors: one line, exit code 2
