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

from autotransfer.analysis.preferences import PREFERENCES
from autotransfer.analysis.signals import PlanInputs, Role, Signal, Threshold, registered
from autotransfer.artifacts import CandidateSpec, Comparison, PlanCell, PlanDecision, PlanSignals
from autotransfer.catalog import KINDS
from autotransfer.config import StrategyConfig
from autotransfer.errors import PlanError

STRATEGIES = tuple(KINDS)  # every strategy, in catalog order (plan.json lists exclusions in it)
FROZEN = tuple(name for name, kind in KINDS.items() if kind.frozen_backbone)

LABELED = "labeled target images per class (smallest class)"
NO_LABELS = Threshold("none_below_per_class", "<", "no usable labels")
LARGE = Threshold("large_from_per_class", ">=", "large")


def decide(inputs: PlanInputs, cfg: StrategyConfig, signals: tuple[Signal, ...] | None = None) -> PlanDecision:
    """The plan: how many labels, similar or not, then the table's order adjusted; each strategy's
    ``needs`` (catalog.py, what the trainer checks too) excludes it or not."""
    signals = signals or registered()
    comparisons: list[Comparison] = []
    amount = _amount(inputs.min_labeled, cfg, comparisons)
    similar, basis = _similarity(inputs, cfg, signals, comparisons)
    weak = any(c.outcome for c in _compare_role(inputs, cfg, signals, "weak_features", comparisons))
    excluded = _excluded(inputs, amount)
    order, adjustments = _adjusted(
        list(PREFERENCES[(amount, "similar" if similar else "different")]), amount, weak, excluded, inputs, cfg
    )
    ranking = [s for s in order if s not in excluded]
    if not ranking:
        raise PlanError("no strategy applies: " + "; ".join(f"{k}: {v}" for k, v in excluded.items()))
    return PlanDecision(
        cell=PlanCell(labeled=amount, similarity="similar" if similar else "different", similarity_basis=basis),
        signals=signals_used(inputs, signals),
        ranking=ranking,
        chosen=ranking[0],
        components=list(KINDS[ranking[0]].components),
        runner_up=ranking[1] if len(ranking) > 1 else None,
        candidates=candidates(ranking, similar),
        excluded=excluded,
        adjustments=adjustments,
        comparisons=comparisons,
    )


def _amount(labeled: int, cfg: StrategyConfig, comparisons: list[Comparison]) -> str:
    """none / small / large, from the smallest class's labeled images."""
    comparisons.append(NO_LABELS.compare(LABELED, labeled, cfg))
    if comparisons[-1].outcome:
        return "none"
    comparisons.append(LARGE.compare(LABELED, labeled, cfg))
    return "large" if comparisons[-1].outcome else "small"


def _compare_role(
    inputs: PlanInputs, cfg: StrategyConfig, signals: tuple[Signal, ...], role: Role, comparisons: list[Comparison]
) -> list[Comparison]:
    """Every measured signal's tests of ``role``, compared and recorded, in ``signals``' order."""
    ran = [
        test.compare(signal.label, value, cfg)
        for signal in signals
        if (value := inputs.value(signal.name)) is not None
        for test in signal.tests
        if test.role == role
    ]
    comparisons.extend(ran)
    return ran


def _similarity(
    inputs: PlanInputs, cfg: StrategyConfig, signals: tuple[Signal, ...], comparisons: list[Comparison]
) -> tuple[bool, str]:
    """Similar or not, and on what: the first measured signal with a "similar" test decides.

    Task-aware signals only (zero-shot accuracy, else the LogME gain), never PAD alone, which
    saturates for every synthetic→real pair (docs/strategies.md).
    """
    for signal in signals:
        value = inputs.value(signal.name)
        test = next((t for t in signal.tests if t.role == "similar"), None)
        if value is not None and test is not None:
            comparisons.append(test.compare(signal.label, value, cfg))
            return comparisons[-1].outcome, signal.basis or signal.label
    return False, "no task-aware signal without target labels: assumed different"


def _excluded(inputs: PlanInputs, amount: str) -> dict[str, str]:
    """What the data cannot give a strategy (the trainer refuses the same), then the rules' own exclusions."""
    excluded = {name: why for name in STRATEGIES if (why := KINDS[name].needs.unmet(inputs.facts())) is not None}
    for name, kind in KINDS.items():
        if amount == "none" and kind.needs.target_labels:
            excluded.setdefault(name, f"needs labeled target images ({inputs.min_labeled} per class)")
        if kind.adaptation and inputs.unlabeled_target == 0:
            excluded.setdefault(name, "no unlabeled target images to adapt on")
    return excluded


def _adjusted(
    order: list[str], amount: str, weak: bool, excluded: dict[str, str], inputs: PlanInputs, cfg: StrategyConfig
) -> tuple[list[str], list[str]]:
    """The table's order with the rules' adjustments, and what each changed."""
    adjustments = []
    if weak:
        # Frozen features that barely beat random ones cap accuracy: train the backbone instead.
        order = [s for s in order if s not in FROZEN] + [s for s in order if s in FROZEN]
        adjustments.append("frozen strategies moved last: the backbone barely beats random features")
        # Only for a source model (a backbone trained on the source here, with its head): there scratch won
        # BENCHMARKS.md §5 by 18 points. With ImageNet weights that score as weak, finetune_all still beat
        # scratch (§11: digits-m at all labels, 3 seeds; docs/strategies.md), so it stays first.
        if amount == "large" and "scratch" in order and inputs.source_head:
            order.remove("scratch")
            order.insert(0, "scratch")
            adjustments.append(
                "scratch first: with many labels and no transfer gain, pretraining on the source adds nothing"
            )
    below = cfg.dann_below_per_class
    if (
        amount != "none"
        and "dann_mcc_pl" not in excluded
        and (below is None or inputs.min_labeled < below)
        and inputs.unlabeled_target >= cfg.dann_min_unlabeled
    ):
        # A labeled source that shares the classes plus many unlabeled target images teach the model
        # more than the target's labels alone: on the held-out letters -> letters-m it led every other
        # strategy from 3 to 100 labels per class (docs/strategies.md gives the evidence).
        order.remove("dann_mcc_pl")
        order.insert(0, "dann_mcc_pl")
        limit = "" if below is None else f"fewer than {below} labels per class (strategy.dann_below_per_class), "
        adjustments.append(
            f"dann_mcc_pl first: {limit}a labeled source that shares the target's classes and "
            f"{inputs.unlabeled_target} unlabeled target images (strategy.dann_min_unlabeled: {cfg.dann_min_unlabeled})"
        )
    return order, adjustments


def signals_used(inputs: PlanInputs, signals: tuple[Signal, ...]) -> PlanSignals:
    """Which measured signals the rules compared, which were only reported, which could not be measured."""
    used = ["labeled_per_class", "unlabeled_target", "labeled_source", "target_classes_in_source"]
    reported: list[str] = []
    unavailable: dict[str, str] = {}
    for signal in signals:
        if inputs.value(signal.name) is not None:
            (used if signal.tests else reported).append(signal.name)
        elif (why := signal.unavailable(inputs)) is not None:
            unavailable[signal.name] = why
    after = (
        "no target labels: the trained model's label-free health (train.json `health`: entropy and class "
        "balance of its target predictions, domain-classifier and source val accuracy) is all that checks it, "
        "and a collapsed model is registered but never promoted"
        if not sum(inputs.labeled_per_class.values())
        else None
    )
    return PlanSignals(used=used, reported_only=reported, unavailable=unavailable, after_training=after)


def candidates(ranking: list[str], similar: bool) -> list[CandidateSpec]:
    """Strategies with their key hyperparameter, in rank order (race mode tries the top few).

    The backbone LR multiplier moves finetune_all as much as the strategy does (docs/strategies.md), so both
    values are candidates, the one the prior favours first.
    """
    out: list[CandidateSpec] = []
    for strategy in ranking:
        if strategy == "finetune_all":
            mults = (0.1, 1.0) if similar else (1.0, 0.1)
            out += [CandidateSpec(strategy=strategy, backbone_lr_mult=m) for m in mults]
        else:
            out.append(CandidateSpec(strategy=strategy))
    return out


def explain(plan: PlanDecision, inputs: PlanInputs, target: str) -> str:
    amount, similarity = plan.cell.labeled, plan.cell.similarity
    zero_shot, logme_gain, probe_gain = (inputs.value(k) for k in ("zero_shot", "logme_gain", "probe_gain"))
    pad, shift = inputs.value("pad"), inputs.value("pretraining_shift")
    parts = [f"The target {target!r} has {inputs.min_labeled} labeled images in its smallest class ({amount})"]
    if zero_shot is not None:
        parts.append(f"the source head scores {zero_shot:.2f} on it zero-shot")
    if logme_gain is not None:
        parts.append(
            f"pretrained features beat random ones by {logme_gain:+.2f} LogME"
            + (f" and {probe_gain:+.2f} probe accuracy" if probe_gain is not None else "")
        )
    relation = "similar to" if similarity == "similar" else "different from"
    source = "the source" if inputs.labeled_source else "the backbone's pretraining data (no source domain)"
    text = "; ".join(parts) + f", so it counts as {relation} {source} ({plan.cell.similarity_basis})."
    if pad is not None:
        text += (
            f" PAD is {pad:.2f}: the domains are "
            f"{'easily' if pad > 1.5 else 'hardly' if pad < 0.5 else 'partly'} told apart, "
            "which alone does not decide (docs/strategies.md, 'Similarity')."
        )
    if shift is not None:
        text += (
            f" Its activations sit {shift:.2f} (symmetric KL, BatchNorm statistics) from those "
            "the backbone was trained with: reported, not compared with a threshold."
        )
    first = PREFERENCES[(amount, similarity)][0]
    text += (
        f" The strategy table (docs/strategies.md) gives {first} for {amount} labeled data and a {similarity} target"
    )
    if plan.adjustments:
        text += "; " + "; ".join(plan.adjustments)
    text += f". Chosen: {plan.chosen}"
    if plan.runner_up:
        text += f", runner-up: {plan.runner_up}"
    if plan.components:
        text += f". {plan.chosen} trains with: " + "; ".join(plan.components)
    return text + "."
