"""MCG against plain DF, paired by episode and pooled over runs (seeds) of ``benchmarks/maze2d.py``.

Each FOLDER is a ``maze2d.py --out`` folder (or a ``--merge`` of two) whose cells hold both ``df_mcg`` and ``df``
with per-episode scores from one seed: within a folder, episode i of both methods had the same start and goal.
For every cell this prints and writes the paired difference df_mcg − df per folder and pooled over the folders
(the episodes of different seeds are independent, so they are concatenated), and the pool over every cell:

    python benchmarks/studies/maze2d_mcg_pool.py runs/bench15/medium_multi_n8_s1 runs/bench15/medium_multi_n8_s2 \
        --out benchmarks/results/maze2d_mcg_pooled

``--exclude-first`` leaves the first folder of each cell out of the pool (a confirmatory pool: the first run is
the one that suggested the test) and reports it separately.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def stats(d: np.ndarray) -> dict:
    """Mean, standard error and sign counts of paired differences ``d: (n,)``."""
    return {"mean": round(float(d.mean()), 2), "se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 2),
            "ahead": int((d > 0).sum()), "behind": int((d < 0).sum()), "n": int(len(d))}


def read_folder(folder: str) -> dict:
    """cell -> {"diffs": (n,), "seed": int | None, "mcg": int | None} for the cells with both methods."""
    path = Path(folder) / "maze2d.json"
    if not path.exists():
        raise SystemExit(f"maze2d_mcg_pool: {path} does not exist")
    part = json.loads(path.read_text())
    commands = part.get("command", "")
    seed = int(commands.split("--seed ")[1].split()[0]) if "--seed " in commands else 0
    # a --merge keeps the df_mcg row of the last folder that had one: its command gives N
    mcg = [int(c.split("--mcg ")[1].split()[0]) for c in commands.split(" ; ") if "--mcg " in c and "df_mcg" in c][-1:]
    out = {}
    for cell, row in part["summary"].items():
        a, b = row.get("df_mcg", {}).get("episode_scores"), row.get("df", {}).get("episode_scores")
        if a and b:
            if len(a) != len(b):
                raise SystemExit(f"maze2d_mcg_pool: {path} cell {cell}: {len(a)} df_mcg episodes against {len(b)} df")
            out[cell] = {"diffs": np.asarray(a, float) - np.asarray(b, float), "seed": seed, "mcg": mcg,
                         "df_mcg": row["df_mcg"]["score_mean"], "df": row["df"]["score_mean"]}
    if not out:
        raise SystemExit(f"maze2d_mcg_pool: {path} has no cell with both df_mcg and df episode scores")
    return out


def pool(folders: list[str], exclude_first: bool = False) -> dict:
    per_cell: dict[str, list] = {}
    for f in folders:
        for cell, r in read_folder(f).items():
            per_cell.setdefault(cell, []).append((f, r))
    result = {"cells": {}, "folders": folders, "exclude_first": exclude_first}
    everything = []
    for cell in sorted(per_cell):
        runs = per_cell[cell]
        rows = [{"folder": f, "seed": r["seed"], "mcg": r["mcg"], "df_mcg": r["df_mcg"], "df": r["df"],
                 **stats(r["diffs"]), "differences": [round(float(v), 2) for v in r["diffs"]]} for f, r in runs]
        kept = runs[1:] if exclude_first else runs
        entry = {"runs": rows}
        if kept:
            d = np.concatenate([r["diffs"] for _, r in kept])
            entry["pooled"] = stats(d)
            everything.append(d)
        result["cells"][cell] = entry
    if everything:
        result["all_cells"] = stats(np.concatenate(everything))
    return result


def table(result: dict) -> str:
    lines = ["# MCG against plain DF, paired by episode, pooled over seeds", "",
             f"Command: `python benchmarks/studies/maze2d_mcg_pool.py {' '.join(result['folders'])}"
             f"{' --exclude-first' if result['exclude_first'] else ''}`", "",
             "df_mcg − df per episode (same seed: same start and goal), mean ± standard error; "
             + ("the first run of each cell is left out of the pool (it suggested the test)." if result["exclude_first"]
                else "every run pooled."), "",
             "| cell | run | seed | MCG N | df_mcg | df | df_mcg − df | MCG ahead / behind | n |",
             "|---|---|---|---|---|---|---|---|---|"]
    for cell, e in result["cells"].items():
        for r in e["runs"]:
            lines.append(f"| {cell} | {r['folder']} | {r['seed']} | {','.join(map(str, r['mcg']))} | {r['df_mcg']:.1f} | "
                         f"{r['df']:.1f} | {r['mean']:+.1f} ± {r['se']:.1f} | {r['ahead']} / {r['behind']} | {r['n']} |")
        if "pooled" in e:
            p = e["pooled"]
            lines.append(f"| **{cell} pooled** | | | | | | **{p['mean']:+.1f} ± {p['se']:.1f}** | {p['ahead']} / {p['behind']} | {p['n']} |")
    if "all_cells" in result:
        p = result["all_cells"]
        lines.append(f"| **all cells pooled** | | | | | | **{p['mean']:+.1f} ± {p['se']:.1f}** | {p['ahead']} / {p['behind']} | {p['n']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", help="maze2d.py --out folders, each with df_mcg and df in a cell")
    p.add_argument("--exclude-first", action="store_true", help="leave each cell's first folder out of the pool")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    result = pool(args.folders, args.exclude_first)
    text = table(result)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2))
        out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
