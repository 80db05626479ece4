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


def _signal_ranges() -> dict[str, dict[str, str]]:
    """§5's plan inputs per scenario, as the README prints them: min–max over the recorded seeds."""
    import re

    result = json.loads((REPO / "bench/results/strategy_selection.json").read_text())
    patterns = {"pad": r"PAD is ([\d.]+)", "zero_shot": r"scores ([\d.]+) on it zero-shot",
                "logme": r"by ([+-][\d.]+) LogME", "probe": r"LogME and ([+-][\d.]+) probe accuracy",
                "plan": r"Chosen: (\w+)"}

    def signed(value: float) -> str:
        return f"{value + 0.0:+.2f}".replace("-", "−")  # + 0.0: -0.00 prints as +0.00

    ranges = {}
    for name, scenario in result["scenarios"].items():
        found = {k: [m.group(1) for run in scenario["runs"] if (m := re.search(p, run["plan_reason"]))]
                 for k, p in patterns.items()}
        row = {"plan": " / ".join(sorted(set(found["plan"])))}
        pad = [float(v) for v in found["pad"]]
        row["pad"] = f"{min(pad):.2f}–{max(pad):.2f}"
        if found["zero_shot"]:
            zero = [float(v) for v in found["zero_shot"]]
            row["zero_shot"] = f"{min(zero):.2f}–{max(zero):.2f}"
            for key in ("logme", "probe"):
                values = [float(v) for v in found[key]]
                row[key] = f"{signed(min(values))} to {signed(max(values))}"
        else:
            row.update(zero_shot="n/a", logme="n/a", probe="n/a")
        ranges[name] = row
    return ranges


def test_the_demo_signal_table_in_the_readme_is_section_5s():
    ranges = _signal_ranges()
    rows = {"`data.target=digits`": "similar, all labels",
            "`data.target=digits data.labeled_per_class=10`": "similar, 10/class",
            "`data.target=digits data.labeled_per_class=3`": "similar, 3/class",
            "`data.target=digits-m`": "shifted, all labels",
            "`data.target=digits-m data.labeled_per_class=10`": "shifted, 10/class",
            "`data.target=digits-m data.labeled_per_class=3`": "shifted, 3/class (label-scarce)",
            "`data.target=digits-m data.labeled_per_class=0`": "shifted, no labels"}
    lines = (REPO / "README.md").read_text().splitlines()
    for scenario, name in rows.items():
        r = ranges[name]
        expected = f"| {scenario} | {r['pad']} | {r['zero_shot']} | {r['logme']} | {r['probe']} | {r['plan']} |"
        assert expected in lines, expected
    # and the prose that quotes it (strategies.md and the README)
    text = " ".join((REPO / "docs/strategies.md").read_text().split())
    similar, shifted = ranges["similar, all labels"], ranges["shifted, all labels"]
    assert f"zero-shot accuracy ({similar['zero_shot']} vs {shifted['zero_shot']} with all labels)" in text
    assert f"LogME gain ({similar['logme']} vs {shifted['logme']})" in text


def test_progressives_phase_figures_in_strategies_md_are_the_heldout_runs():
    runs = [json.loads(p.read_text()) for p in sorted((REPO / "bench/results/heldout_runs").glob("*.json"))]
    pairs = [r for r in runs if {"progressive", "progressive_spread_phases"} <= set(r["strategies"])]
    assert len(pairs) == 9 and {r["seed"] for r in pairs} == {3}

    def mean(key, rows=pairs):
        return sum(r["strategies"][key]["accuracy"] for r in rows) / len(rows)

    letters = [r for r in pairs if r["target"] == "letters"]
    text = " ".join((REPO / "docs/strategies.md").read_text().split())
    assert f"{_points(mean('progressive_spread_phases'))} against {_points(mean('progressive'))} points" in text
    assert f"down {round(100 * (mean('progressive', letters) - mean('progressive_spread_phases', letters)))} on letters" in text
    assert f"finetune_top in those runs ({_points(mean('finetune_top'))})" in text
