"""``python -m dforce.recipes.planning.maze2d --maze large [--steps N] [--seed S] [--eval]``.

Generates (or loads) the cached dataset and prints its statistics as JSON; ``--eval`` instead prints the
random and oracle reference scores (single-task and Multi2D, ``--episodes`` episodes each).
"""

from __future__ import annotations

import argparse
import json
import sys

from dforce.errors import DforceError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dforce.recipes.planning.maze2d", description=__doc__.splitlines()[0])
    p.add_argument("--maze", default="umaze", help="umaze | medium | large")
    p.add_argument("--steps", type=int, default=None, help="dataset size (default 1M/2M/4M as D4RL)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval", action="store_true", help="print random/oracle normalized scores instead")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    from dforce.recipes.planning.maze2d import OraclePolicy, RandomPolicy, dataset_stats, evaluate_policy, load_or_generate_maze2d

    try:
        if a.eval:
            for multi in (False, True):
                for name, pol in (("random", RandomPolicy(a.seed)), ("oracle", OraclePolicy(seed=a.seed))):
                    r = evaluate_policy(a.maze, pol, a.episodes, seed=a.seed, multi_goal=multi)
                    print(f"{a.maze:6s} {'multi2d' if multi else 'single ':7s} {name:6s} {r}")
        else:
            data = load_or_generate_maze2d(a.maze, a.steps, a.seed, progress=not a.quiet)
            print(json.dumps(dataset_stats(data), indent=1))
    except DforceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
