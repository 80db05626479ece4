"""Every recorded held-out run trained again where a change to the product touches it (no new cells).

``heldout.py --rerun`` reruns the cells its flags name and trains any it does not find; this
walks bench/results/heldout_runs/ and reruns only what is recorded: the given strategies in
every run, and with ``--val-chooses`` more (the product's own run with its floor, ``rules``)
in runs where val has ``train.min_val_per_class`` images per class (100 labels per class and
more), since the floor chooses there (``race``: the race runs only there). Runs named in
``--skip``, of targets not in ``--targets`` (when given), and first measured on or after
``--measured-before`` (already at today's code) are left as they are.

    python bench/heldout_rerun.py --strategies linear_probe pixels --val-chooses rules
    python bench/heldout_rerun.py --strategies --val-chooses race --measured-before 2026-12-05T22:40
"""

from __future__ import annotations

import argparse
import json

import torch

from heldout import RUNS, aggregate, rerun

# From this many labels per class val holds train.min_val_per_class images per class (heldout.py's docstring).
VAL_CHOOSES_FROM = 100


def val_chooses(run: dict) -> bool:
    return run["labels"] is None or run["labels"] >= VAL_CHOOSES_FROM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="*", default=["linear_probe", "pixels"])
    parser.add_argument("--val-chooses", nargs="*", default=["rules"], help="also rerun these where val chooses")
    parser.add_argument("--skip", nargs="*", default=[], help="run names (file stems) left as they are")
    parser.add_argument("--targets", nargs="*", default=[], help="only these targets' runs (default: every target)")
    parser.add_argument("--first", nargs="*", default=[], help="targets rerun before the others")
    parser.add_argument("--measured-before", help="ISO date: runs first measured from then on are left as they are")
    args = parser.parse_args()
    torch.set_num_threads(2)
    paths = sorted(RUNS.glob("*.json"))
    runs = {path: json.loads(path.read_text()) for path in paths}

    def order(path):
        run = runs[path]
        return val_chooses(run), run["target"] not in args.first, run["labels"] or 10**9, path.name

    for path in sorted(paths, key=order):
        run = runs[path]
        if path.stem in args.skip or run.get("extra") or (args.targets and run["target"] not in args.targets):
            continue
        if args.measured_before and run["machine"]["date"] >= args.measured_before:
            continue
        again = [*args.strategies, *(args.val_chooses if val_chooses(run) else [])]
        if again:
            rerun(path, again)
    print(aggregate())


if __name__ == "__main__":
    main()
