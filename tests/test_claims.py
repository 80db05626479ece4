"""Figures the docs quote from a benchmark, recomputed from its result file (bench/results/)."""

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _points(value: float) -> str:
    return f"{100 * value:.1f}"


def test_the_dann_mcc_pl_margins_quoted_in_readme_and_strategies_are_section_5s():
    result = json.loads((REPO / "bench/results/strategy_selection.json").read_text())
    quoted = {}
    for target, prefix in (("digits", "similar"), ("digits-m", "shifted")):
        ahead, ahead_of_plain = [], []
        for name, scenario in result["scenarios"].items():
            if not name.startswith(prefix) or not ("3/class" in name or "10/class" in name):
                continue
            for run in scenario["runs"]:
                scores = {k: v["accuracy"] for k, v in run["oracle"].items()}
                best = max(scores, key=scores.get)
                assert best == "dann_mcc_pl", (name, run["seed"], best)  # "the best strategy ... in every seed"
                others = [v for k, v in scores.items() if k != best]
                plain = [v for k, v in scores.items() if not k.startswith("dann")]
                ahead.append(scores[best] - max(others))
                ahead_of_plain.append(scores[best] - max(plain))
        quoted[target] = (f"{_points(min(ahead))}–{_points(max(ahead))}",
                          f"{_points(min(ahead_of_plain))}–{_points(max(ahead_of_plain))}")
    for doc in ("README.md", "docs/strategies.md"):
        text = " ".join((REPO / doc).read_text().split())
        assert f"{quoted['digits'][0]} points ahead of the next candidate on digits" in text, doc
        assert f"{quoted['digits-m'][0]} on digits-m" in text, doc
        assert f"{quoted['digits'][1]} and {quoted['digits-m'][1]} points behind" in text, doc
