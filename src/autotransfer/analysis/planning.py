"""The plan's rules: rank the transfer strategies and choose one, saying why (docs/strategies.md).

The table is the prior::

                      similar to source      different from source
    small labeled     finetune_top           finetune_top
    large labeled     finetune_all           finetune_all or scratch
    none, source lab. dann_mcc_pl            dann_mcc_pl

"Small", "large" and "none" compare the labeled target images per class (the smallest
class) with thresholds; "similar" rests on task-aware signals (zero-shot source-head
accuracy, else the probe-accuracy gain over random features), never on PAD alone, which
saturates for every synthetic→real pair. A backbone whose features barely beat random
ones is not frozen. ``decide`` is a pure function of the measured inputs and the
``strategy`` params; ``stages.plan`` reads the reports and writes ``reports/plan.json``.
The evidence behind each cell and adjustment is in docs/strategies.md and BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autotransfer.catalog import KINDS
from autotransfer.config import StrategyConfig
from autotransfer.errors import PlanError
from autotransfer.requirements import DataFacts

STRATEGIES = tuple(KINDS)  # every strategy, in catalog order (plan.json lists exclusions in it)
ADAPTATION = tuple(name for name, kind in KINDS.items() if kind.adaptation)
FROZEN = tuple(name for name, kind in KINDS.items() if kind.frozen_backbone)

# The table's cells, each a full preference order; inapplicable strategies are dropped later.
PREFERENCES: dict[tuple[str, str], tuple[str, ...]] = {
    # Small labeled targets: finetune_top first, similar or not. On the held-out sets
    # (BENCHMARKS.md §11: letters, scenes, textures at 3, 10 and 30 labels per class, step-rule
    # budgets, design data) it was the best strategy or within 1.5 points of it in every cell,
    # where the converged probe lost up to 14 points; measured after on data built afresh (§11).
    # The table's old linear_probe / progressive cells came with the first commit, before any benchmark.
    ("small", "similar"): (
        "finetune_top",
        "linear_probe",
        "finetune_all",
        "progressive",
        "dann_mcc_pl",
        "dann",
        "scratch",
        "source_only",
    ),
    ("small", "different"): (
        "finetune_top",
        "finetune_all",
        "linear_probe",
        "progressive",
        "dann_mcc_pl",
        "dann",
        "scratch",
        "source_only",
    ),
    ("large", "similar"): (
        "finetune_all",
        "progressive",
        "finetune_top",
        "linear_probe",
        "scratch",
        "dann_mcc_pl",
        "dann",
        "source_only",
    ),
    ("large", "different"): (
        "finetune_all",
        "scratch",
        "progressive",
        "finetune_top",
        "dann_mcc_pl",
        "dann",
        "linear_probe",
        "source_only",
    ),
    # No usable target labels: dann_mcc_pl first, similar or not. The similar side said source_only
    # from the first commit and was never measured; in every unlabeled run since, dann_mcc_pl led
    # source_only: by 36-43 points (letters -> letters-m, 5 seeds) and 18-30 (digits -> digits-m,
    # 4 seeds) from ImageNet (BENCHMARKS.md §14), 22-30 on §5's digits -> digits-m (in-sample).
    # And a similarity verdict needs target labels (zero-shot accuracy, LogME), which this row
    # lacks but for 1 per class.
    ("none", "similar"): ("dann_mcc_pl", "dann", "source_only"),
    ("none", "different"): ("dann_mcc_pl", "dann", "source_only"),
}


@dataclass(frozen=True)
class PlanInputs:
    labeled_per_class: dict[str, int]  # target classes -> labeled images (train + val, after the cap)
    unlabeled_target: int
    target_classes_in_source: bool
    source_head: bool  # the backbone comes with a head trained on the source's classes
    zero_shot: float | None
    probe_gain: float | None
    logme_gain: float | None
    pad: float | None
    mmd2: float | None
    labeled_source: bool = True  # False: data.source is null (source-free: the pretraining data is the source)
    pretraining_shift: float | None = None  # BatchNorm statistics of the target vs the pretrained ones

    @property
    def min_labeled(self) -> int:
        return min(self.labeled_per_class.values(), default=0)

    def facts(self) -> DataFacts:
        """The facts each strategy's ``Needs`` is checked against (train checks the same on its data)."""
        return DataFacts(
            labeled_min_per_class=self.min_labeled,
            labeled_target=sum(self.labeled_per_class.values()),
            unlabeled_target=self.unlabeled_target,
            labeled_source=self.labeled_source,
            target_classes_in_source=self.labeled_source and self.target_classes_in_source,
        )


def decide(inputs: PlanInputs, cfg: StrategyConfig) -> dict[str, Any]:
    """The plan: each strategy's ``needs`` (catalog.py, what the trainer checks too) excludes it or not."""
    comparisons: list[dict[str, Any]] = []

    def compare(signal: str, value: float | None, key: str, threshold: float, op: str, meaning: str) -> bool:
        outcome = value is not None and (value >= threshold if op == ">=" else value < threshold)
        comparisons.append(
            {
                "signal": signal,
                "value": value,
                "threshold_key": f"strategy.{key}",
                "threshold": threshold,
                "test": f"{op} {threshold}",
                "outcome": outcome,
                "meaning": meaning if outcome else f"not {meaning}",
            }
        )
        return outcome

    labeled = inputs.min_labeled
    if compare(
        "labeled target images per class (smallest class)",
        labeled,
        "none_below_per_class",
        cfg.none_below_per_class,
        "<",
        "no usable labels",
    ):
        amount = "none"
    elif compare(
        "labeled target images per class (smallest class)",
        labeled,
        "large_from_per_class",
        cfg.large_from_per_class,
        ">=",
        "large",
    ):
        amount = "large"
    else:
        amount = "small"

    if inputs.zero_shot is not None:
        similar = compare(
            "zero-shot source-head accuracy on the labeled target",
            inputs.zero_shot,
            "similar_zero_shot",
            cfg.similar_zero_shot,
            ">=",
            "similar",
        )
        basis = "zero-shot source-head accuracy"
    elif inputs.logme_gain is not None:
        similar = compare(
            "LogME gain of pretrained over random features",
            inputs.logme_gain,
            "similar_logme_gain",
            cfg.similar_logme_gain,
            ">=",
            "similar",
        )
        basis = "LogME transfer gain"
    else:
        similar, basis = False, "no task-aware signal without target labels: assumed different"
    # LogME, not probe accuracy: with many labels a probe on random conv features is already
    # strong (docs/strategies.md), so the probe gain vanishes while LogME's does not.
    weak_backbone = inputs.logme_gain is not None and compare(
        "LogME gain of pretrained over random features",
        inputs.logme_gain,
        "min_transfer_gain",
        cfg.min_transfer_gain,
        "<",
        "barely better than random features",
    )
    cell = (amount, "similar" if similar else "different")

    # What the data cannot give a strategy (the trainer refuses the same), then the rules' own exclusions.
    facts = inputs.facts()
    excluded = {name: reason for name in STRATEGIES if (reason := KINDS[name].needs.unmet(facts)) is not None}
    for name in STRATEGIES:
        if amount == "none" and KINDS[name].needs.target_labels:
            excluded.setdefault(name, f"needs labeled target images ({labeled} per class)")
        if name in ADAPTATION and inputs.unlabeled_target == 0:
            excluded.setdefault(name, "no unlabeled target images to adapt on")

    order = list(PREFERENCES[cell])
    adjustments = []
    if weak_backbone:
        # Frozen features that barely beat random ones cap accuracy: train the backbone instead.
        order = [s for s in order if s not in FROZEN] + [s for s in order if s in FROZEN]
        adjustments.append("frozen strategies moved last: the backbone barely beats random features")
        if amount == "large" and "scratch" in order:
            order.remove("scratch")
            order.insert(0, "scratch")
            adjustments.append("scratch first: with many labels and no transfer gain, pretraining adds nothing")
    if (
        amount == "small"
        and "dann_mcc_pl" not in excluded
        and labeled < cfg.dann_below_per_class
        and inputs.unlabeled_target >= cfg.dann_min_unlabeled
    ):
        # A few labels teach the model little; labeled source plus many unlabeled target images
        # teach it more (docs/strategies.md gives the evidence).
        order.remove("dann_mcc_pl")
        order.insert(0, "dann_mcc_pl")
        adjustments.append(
            f"dann_mcc_pl first: fewer than {cfg.dann_below_per_class} labels per class "
            f"(strategy.dann_below_per_class) and {inputs.unlabeled_target} unlabeled target images"
        )
    ranking = [s for s in order if s not in excluded]
    if not ranking:
        raise PlanError("no strategy applies: " + "; ".join(f"{k}: {v}" for k, v in excluded.items()))

    return {
        "cell": {"labeled": amount, "similarity": cell[1], "similarity_basis": basis},
        "signals": signals_used(inputs),
        "ranking": ranking,
        "chosen": ranking[0],
        "components": list(KINDS[ranking[0]].components),
        "runner_up": ranking[1] if len(ranking) > 1 else None,
        "candidates": candidates(ranking, similar),
        "excluded": excluded,
        "adjustments": adjustments,
        "comparisons": comparisons,
    }


def signals_used(inputs: PlanInputs) -> dict[str, Any]:
    """Which measured signals the rules compared, which were only reported, which could not be measured."""
    used = ["labeled_per_class", "unlabeled_target", "labeled_source", "target_classes_in_source"]
    unavailable: dict[str, str] = {}
    if inputs.zero_shot is not None:
        used.append("zero_shot")
    else:
        unavailable["zero_shot"] = (
            "no head for the source's classes: the backbone's own pretraining images (e.g. ImageNet) are not at "
            "hand, so similarity rests on how well its features transfer to the target (LogME gain over random)"
            if not inputs.source_head
            else "the target has classes the source head does not predict"
        )
    for name in ("logme_gain",):
        if getattr(inputs, name) is not None:
            used.append(name)
        else:
            unavailable[name] = "no labeled target images to score features on"
    reported = [
        name for name in ("probe_gain", "pad", "mmd2", "pretraining_shift") if getattr(inputs, name) is not None
    ]
    if not inputs.labeled_source:
        for name in ("pad", "mmd2"):
            unavailable[name] = "no source domain to compare the target with (data.source is null)"
    after = (
        "no target labels: the trained model's label-free health (train.json `health`: entropy and class "
        "balance of its target predictions, domain-classifier and source val accuracy) is all that checks it, "
        "and a collapsed model is registered but never promoted"
        if not sum(inputs.labeled_per_class.values())
        else None
    )
    return {"used": used, "reported_only": reported, "unavailable": unavailable, "after_training": after}


def candidates(ranking: list[str], similar: bool) -> list[dict[str, Any]]:
    """Strategies with their key hyperparameter, in rank order (race mode tries the top few).

    The backbone LR multiplier moves finetune_all as much as the strategy does (docs/strategies.md), so both
    values are candidates, the one the prior favours first.
    """
    out: list[dict[str, Any]] = []
    for strategy in ranking:
        if strategy == "finetune_all":
            mults = (0.1, 1.0) if similar else (1.0, 0.1)
            out += [{"strategy": strategy, "backbone_lr_mult": m} for m in mults]
        else:
            out.append({"strategy": strategy})
    return out


def explain(plan: dict[str, Any], inputs: PlanInputs, target: str) -> str:
    amount, similarity = plan["cell"]["labeled"], plan["cell"]["similarity"]
    parts = [f"The target {target!r} has {inputs.min_labeled} labeled images in its smallest class ({amount})"]
    if inputs.zero_shot is not None:
        parts.append(f"the source head scores {inputs.zero_shot:.2f} on it zero-shot")
    if inputs.logme_gain is not None:
        parts.append(
            f"pretrained features beat random ones by {inputs.logme_gain:+.2f} LogME"
            + (f" and {inputs.probe_gain:+.2f} probe accuracy" if inputs.probe_gain is not None else "")
        )
    relation = "similar to" if similarity == "similar" else "different from"
    source = "the source" if inputs.labeled_source else "the backbone's pretraining data (no source domain)"
    text = "; ".join(parts) + f", so it counts as {relation} {source} ({plan['cell']['similarity_basis']})."
    if inputs.pad is not None:
        text += (
            f" PAD is {inputs.pad:.2f}: the domains are "
            f"{'easily' if inputs.pad > 1.5 else 'hardly' if inputs.pad < 0.5 else 'partly'} told apart, "
            "which alone does not decide (docs/strategies.md, 'Similarity')."
        )
    if inputs.pretraining_shift is not None:
        text += (
            f" Its activations sit {inputs.pretraining_shift:.2f} (symmetric KL, BatchNorm statistics) from those "
            "the backbone was trained with: reported, not compared with a threshold."
        )
    first = PREFERENCES[(amount, similarity)][0]
    text += (
        f" The strategy table (docs/strategies.md) gives {first} for {amount} labeled data and a {similarity} target"
    )
    if plan["adjustments"]:
        text += "; " + "; ".join(plan["adjustments"])
    text += f". Chosen: {plan['chosen']}"
    if plan["runner_up"]:
        text += f", runner-up: {plan['runner_up']}"
    if plan.get("components"):
        text += f". {plan['chosen']} trains with: " + "; ".join(plan["components"])
    return text + "."
