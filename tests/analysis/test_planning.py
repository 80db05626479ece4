import json

import pytest

from autotransfer.config import StrategyConfig
from autotransfer.errors import StageInputError
from autotransfer.analysis.planning import decide, explain
from autotransfer.analysis.preferences import PREFERENCES
from autotransfer.catalog import KINDS
from autotransfer.analysis.signals import PlanInputs, Reading
from autotransfer.errors import PlanError
from autotransfer.stages.pipeline import PLAN, PRETRAIN, SIMILARITY, VALIDATE
from stage_helpers import tiny_params

CFG = StrategyConfig()


def readings(**values) -> dict:
    return {name: Reading(value) for name, value in values.items()}


def inputs(per_class=30, zero_shot=0.8, logme_gain=0.3, unlabeled=500, shared=True, head=True, probe_gain=0.1):
    return PlanInputs(labeled_per_class={str(c): per_class for c in range(10)}, unlabeled_target=unlabeled,
                      target_classes_in_source=shared, source_head=head,
                      readings=readings(zero_shot=zero_shot, probe_gain=probe_gain, logme_gain=logme_gain, pad=1.9,
                                        mmd2=0.1))


# Every cell of the strategy table (docs/strategies.md).
@pytest.mark.parametrize("case, expected, cell", [
    # (each row's own first choice: no labeled source sharing the classes, so no dann_mcc_pl first)
    (inputs(per_class=30, zero_shot=None, shared=False), "finetune_top", ("small", "similar")),
    (inputs(per_class=30, zero_shot=None, logme_gain=0.1, shared=False), "finetune_top", ("small", "different")),
    (inputs(per_class=500, zero_shot=0.8, shared=False), "finetune_all", ("large", "similar")),
    (inputs(per_class=500, zero_shot=0.2, shared=False), "finetune_all", ("large", "different")),
    (inputs(per_class=500, zero_shot=0.2, logme_gain=0.0, shared=False), "scratch", ("large", "different")),
    # the same weak features from an ImageNet backbone (no source head): fine-tuning it still beats random weights
    (inputs(per_class=500, zero_shot=None, logme_gain=0.0, head=False, shared=False), "finetune_all", ("large", "different")),
    (inputs(per_class=0, zero_shot=None, logme_gain=None, probe_gain=None), "dann_mcc_pl", ("none", "different")),
    (inputs(per_class=1, zero_shot=0.8), "dann_mcc_pl", ("none", "similar")),
])
def test_every_cell_of_the_strategy_table(case, expected, cell):
    plan = decide(case, CFG)
    assert plan.chosen == expected
    assert (plan.cell.labeled, plan.cell.similarity) == cell
    assert plan.runner_up is not None and plan.runner_up != expected


def test_each_cell_of_the_table_ranks_every_strategy_that_can_train_there():
    # given the catalog (the one list of strategies) and the table's cells
    for (amount, _), order in PREFERENCES.items():
        # then a cell ranks each strategy once, and exactly those the catalog lets train with that many labels:
        # a strategy added to the catalog but not to the table would never be chosen
        can_train = {name for name, kind in KINDS.items() if amount != "none" or not kind.needs.target_labels}
        assert len(order) == len(set(order)) and set(order) == can_train, (amount, order)


def test_thresholds_come_from_params():
    case = inputs(per_class=30, zero_shot=0.8, shared=False)
    assert decide(case, CFG.model_copy(update={"large_from_per_class": 10})).chosen == "finetune_all"
    assert decide(case, CFG.model_copy(update={"similar_zero_shot": 0.9})).cell.similarity == "different"


def test_every_comparison_is_recorded_with_its_threshold():
    plan = decide(inputs(per_class=30, zero_shot=0.8), CFG)
    keys = {c.threshold_key for c in plan.comparisons}
    assert {"strategy.none_below_per_class", "strategy.large_from_per_class", "strategy.similar_zero_shot",
            "strategy.min_transfer_gain"} <= keys
    zero = next(c for c in plan.comparisons if c.threshold_key == "strategy.similar_zero_shot")
    assert zero.value == 0.8 and zero.threshold == 0.5 and zero.outcome is True


def test_a_backbone_no_better_than_random_is_not_frozen():
    plan = decide(inputs(per_class=30, zero_shot=0.8, logme_gain=0.01), CFG)
    assert plan.chosen not in ("linear_probe", "finetune_top")
    assert plan.ranking.index("linear_probe") > plan.ranking.index("progressive")


def test_without_zero_shot_the_logme_gain_decides_similarity():
    similar = decide(inputs(per_class=30, zero_shot=None, logme_gain=0.3, shared=False), CFG)
    different = decide(inputs(per_class=30, zero_shot=None, logme_gain=0.1, shared=False), CFG)
    assert similar.cell.similarity_basis == "LogME transfer gain"
    assert (similar.cell.similarity, different.cell.similarity) == ("similar", "different")
    assert (similar.ranking[1], different.ranking[1]) == ("linear_probe", "finetune_all")


def test_dann_needs_unlabeled_target_images_and_shared_classes():
    no_unlabeled = decide(inputs(per_class=0, zero_shot=None, logme_gain=None, unlabeled=0), CFG)
    assert no_unlabeled.chosen == "source_only"
    assert {"dann", "dann_mcc_pl"} <= set(no_unlabeled.excluded)
    with pytest.raises(PlanError, match="no strategy applies"):
        decide(inputs(per_class=0, zero_shot=None, logme_gain=None, shared=False), CFG)


def test_scarce_labels_with_many_unlabeled_images_rank_dann_mcc_pl_first():
    # given 3 labels per class, on a target the source head does not know and on one it does
    scarce = decide(inputs(per_class=3, zero_shot=0.2, unlabeled=1000), CFG)
    similar = decide(inputs(per_class=3, zero_shot=0.8, unlabeled=1000), CFG)
    # then dann_mcc_pl leads, the table's cell comes second, and the adjustment says why, naming its threshold
    assert (scarce.chosen, scarce.runner_up) == ("dann_mcc_pl", "finetune_top")
    assert (similar.chosen, similar.runner_up) == ("dann_mcc_pl", "finetune_top")
    assert any("strategy.dann_min_unlabeled" in a for a in scarce.adjustments)
    # but not with too few unlabeled images or without shared classes
    assert decide(inputs(per_class=3, zero_shot=0.2, unlabeled=50), CFG).chosen == "finetune_top"
    assert decide(inputs(per_class=3, zero_shot=None, shared=False, unlabeled=1000), CFG).chosen == "finetune_top"
    # with many labels too by default (strategy.dann_below_per_class: null), the large row's cell second
    large = decide(inputs(per_class=150, zero_shot=0.2, unlabeled=1000), CFG)
    assert (large.chosen, large.runner_up) == ("dann_mcc_pl", "finetune_all")
    assert "strategy.dann_below_per_class" not in " ".join(large.adjustments)
    # and a limit, when set, holds below it and names itself
    capped = CFG.model_copy(update={"dann_below_per_class": 100})
    assert decide(inputs(per_class=100, zero_shot=0.2, unlabeled=1000), capped).chosen == "finetune_all"
    below = decide(inputs(per_class=99, zero_shot=0.2, unlabeled=1000), capped)
    assert below.chosen == "dann_mcc_pl"
    assert any("strategy.dann_below_per_class" in a for a in below.adjustments)
    assert decide(inputs(per_class=3, zero_shot=0.2, unlabeled=1000),
                  CFG.model_copy(update={"dann_below_per_class": 0})).chosen == "finetune_top"


def test_the_plan_lists_what_the_chosen_adaptation_recipe_trains_with():
    # given no target labels: the adaptation recipe leads, plain DANN right behind it
    plan = decide(inputs(per_class=0, zero_shot=None, logme_gain=None, probe_gain=None), CFG)
    assert plan.ranking[:2] == ["dann_mcc_pl", "dann"]
    # then plan.json names its components (the adversarial term and the three self-training terms)
    joined = " | ".join(plan.components)
    for part in ("gradient reversal", "entropy", "Minimum Class Confusion", "pseudo-labels"):
        assert part in joined
    assert "trains with: gradient reversal" in explain(plan, inputs(per_class=0, zero_shot=None), "digits")
    # and a strategy without extra terms lists none
    assert decide(inputs(per_class=500, zero_shot=0.8, shared=False), CFG).components == []


def test_race_candidates_carry_the_backbone_lr_multiplier():
    plan = decide(inputs(per_class=500, zero_shot=0.2, shared=False), CFG)
    assert [c.model_dump() for c in plan.candidates[:2]] == [{"strategy": "finetune_all", "backbone_lr_mult": 1.0},
                                                             {"strategy": "finetune_all", "backbone_lr_mult": 0.1}]


@pytest.fixture
def measured(data_root, tmp_path):
    params = tiny_params(data_root, tmp_path)
    VALIDATE.run(params, progress=False)
    PRETRAIN.run(params, progress=False)
    SIMILARITY.run(params, progress=False)
    return params


def test_each_measured_signal_says_how_many_images_it_was_measured_on(measured, tmp_path):
    from autotransfer.analysis.signals import read_signals
    from autotransfer.artifacts import SimilarityReport, ValidationReport, read_report

    reports = tmp_path / "reports"
    validation = read_report(reports / "validation.json", ValidationReport, "validate")
    similarity = read_report(reports / "similarity.json", SimilarityReport, "similarity")
    found = read_signals(validation, similarity)
    # every signal of the library was measured on this pair (the source model has a head for the target's classes)
    assert all(reading.value is not None for reading in found.values()), found
    # the domain measures on the equal samples of both domains, the task-aware ones on the labeled target
    samples = similarity.samples
    assert samples.source == samples.target == 12 and samples.labeled_target == 16
    assert {name: reading.n for name, reading in found.items()} == {
        "zero_shot": 16, "probe_gain": 16, "logme_gain": 16, "pad": 12, "mmd2": 12, "pretraining_shift": 12}


def test_make_plan_writes_a_reasoned_plan(measured, tmp_path):
    plan = PLAN.run(measured).to_json()
    assert json.loads((tmp_path / "reports/plan.json").read_text()) == plan
    assert plan["chosen"] == plan["ranking"][0] and not plan["forced"]
    assert "docs/strategies.md" in plan["reason"] and "DESIGN" not in plan["reason"] and plan["chosen"] in plan["reason"]
    assert plan["inputs"]["labeled_per_class"] == {"a": 8, "b": 8}


def test_the_plan_says_the_budget_train_will_give_its_choice(measured, tmp_path):
    from autotransfer.stages.pipeline import TRAIN

    # given the forced finetune_top, 2 val images per class (tiny_params lets val choose: 6 train per class train)
    forced = measured.model_copy(update={"strategy": measured.strategy.model_copy(update={"force": "finetune_top"}),
                                         "train": measured.train.model_copy(update={"min_steps": 30, "batch_size": 4})})
    plan = PLAN.run(forced)
    assert (plan.budget.pool, plan.budget.steps_per_epoch, plan.budget.epochs) == (12, 3, 10)
    assert plan.budget.rule.startswith("finetune_top: step rule") and "budget:" in plan.summary()
    # and train gives it that budget
    assert TRAIN.run(forced, progress=False).budget.model_dump() == {**plan.budget.model_dump(),
                                                                       "rule": plan.budget.rule[len("finetune_top: "):]}
    # given val too small to choose on, its images train too: 16 images, 4 steps per epoch
    small_val = forced.model_copy(update={"train": forced.train.model_copy(update={"min_val_per_class": 10})})
    assert (PLAN.run(small_val).budget.pool, PLAN.run(small_val).budget.steps_per_epoch) == (16, 4)
    # and the converged probe takes no steps
    probe = forced.model_copy(update={"strategy": forced.strategy.model_copy(update={"force": "linear_probe"})})
    assert PLAN.run(probe).budget.steps == 0


def test_force_overrides_and_says_so(measured, tmp_path):
    forced = measured.model_copy(update={"strategy": measured.strategy.model_copy(update={"force": "scratch"})})
    plan = PLAN.run(forced).to_json()
    assert plan["chosen"] == "scratch" and plan["forced"]
    assert plan["reason"].startswith("Forced by strategy.force='scratch'") and plan["rules_choice"] in plan["reason"]


def test_stale_reports_are_refused(measured):
    other = measured.model_copy(update={"data": measured.data.model_copy(update={"target": "src"})})
    with pytest.raises(StageInputError, match="rerun `autotransfer validate`"):
        PLAN.run(other)


def test_the_plan_lists_the_signals_it_used_and_why_others_are_missing():
    # given a backbone with a source head: zero-shot decides similarity
    with_head = decide(inputs(zero_shot=0.8), CFG).signals
    assert "zero_shot" in with_head.used and with_head.unavailable == {}
    assert set(with_head.reported_only) == {"probe_gain", "pad", "mmd2"}
    # given an ImageNet backbone (no head for the source's classes): LogME decides, zero-shot is explained
    imagenet = decide(inputs(zero_shot=None, head=False, logme_gain=0.3), CFG)
    assert imagenet.cell.similarity_basis == "LogME transfer gain"
    assert "logme_gain" in imagenet.signals.used and "zero_shot" not in imagenet.signals.used
    assert "pretraining images" in imagenet.signals.unavailable["zero_shot"]
    # given no labels at all: neither task-aware signal exists, and the plan says so
    blind = decide(inputs(per_class=0, zero_shot=None, logme_gain=None, probe_gain=None), CFG)
    assert set(blind.signals.unavailable) == {"zero_shot", "logme_gain"}
    assert blind.chosen == "dann_mcc_pl"
    # and what will check the trained model instead (with labels, val accuracy does)
    assert "label-free health" in blind.signals.after_training
    assert with_head.after_training is None


def test_a_time_budget_is_fitted_by_timing_the_strategys_own_steps(measured, tmp_path):
    from autotransfer.stages.pipeline import TRAIN

    def with_train(params, **train):
        return params.model_copy(update={"train": params.train.model_copy(update=train)})

    forced = measured.model_copy(update={"strategy": measured.strategy.model_copy(update={"force": "finetune_all"})})
    unlimited = PLAN.run(forced).budget
    # given time to spare: the step rule's budget at the configured size, with what the warm-up measured
    roomy = PLAN.run(with_train(forced, time_budget=1e6)).budget
    assert (roomy.epochs, roomy.steps, roomy.input_size) == (unlimited.epochs, unlimited.steps, 32)
    assert list(roomy.time_fit.seconds_per_epoch) == [32] and roomy.time_fit.seconds_per_epoch[32] > 0
    assert roomy.time_fit.estimated_seconds <= 1e6 and roomy.time_fit.rule.endswith("fits")
    # given far too little (the source model's one size): epochs cut to one, and train trains one
    tight = with_train(forced, time_budget=1e-6)
    plan = PLAN.run(tight)
    assert plan.budget.epochs == 1 and "epochs cut 10 -> 1" in plan.budget.time_fit.rule
    assert "time budget:" in plan.summary() and "trains 1 epochs" in plan.summary()
    report = TRAIN.run(tight, progress=False)
    assert (report.epochs_run, report.budget.epochs, report.budget.input_size) == (1, 1, 32)
    assert report.budget.time_fit == plan.budget.time_fit
    # given race mode: refused by name (successive halving sets its own schedule)
    racing = tight.model_copy(update={"strategy": tight.strategy.model_copy(update={"mode": "race", "force": None})})
    with pytest.raises(StageInputError, match="train.time_budget: not supported with strategy.mode=race"):
        PLAN.run(racing)


def test_an_imagenet_backbone_with_a_labeled_source_plans_adaptation_without_a_source_head():
    # given an ImageNet backbone (no head over the source's classes), a labeled source and no target labels
    plan = decide(inputs(per_class=0, zero_shot=None, head=False, logme_gain=None, probe_gain=None), CFG)
    # then adaptation is planned: the trainer learns the source's classes itself (transfer/strategies.py SourceHead)
    assert plan.ranking == ["dann_mcc_pl", "dann", "source_only"]
    # and what needs target labels is excluded, saying so
    assert plan.excluded["finetune_top"].startswith("needs labeled target images")
    # with a few labels and many unlabeled images, the same rule as from a source model puts dann_mcc_pl first
    few = decide(inputs(per_class=5, zero_shot=None, head=False, logme_gain=0.3, unlabeled=1000), CFG)
    assert few.chosen == "dann_mcc_pl" and not few.excluded


def test_a_source_free_plan_excludes_what_needs_a_source_and_says_which_signals_it_rests_on():
    free = PlanInputs(labeled_per_class={"a": 12, "b": 15}, unlabeled_target=0, target_classes_in_source=False,
                      source_head=False, labeled_source=False,
                      readings=readings(zero_shot=None, probe_gain=0.05, logme_gain=0.4, pad=None, mmd2=None,
                                        pretraining_shift=0.7))
    plan = decide(free, CFG)
    assert plan.chosen == "finetune_top" and plan.cell.similarity_basis == "LogME transfer gain"
    assert {name: reason.split(" (")[0] for name, reason in plan.excluded.items()} == {
        name: "no labeled source domain" for name in ("source_only", "dann_mcc_pl", "dann")}
    signals = plan.signals
    assert "logme_gain" in signals.used and set(signals.reported_only) == {"probe_gain", "pretraining_shift"}
    assert "data.source is null" in signals.unavailable["pad"]
    text = explain(plan, free, "photos")
    assert "the backbone's pretraining data (no source domain)" in text and "0.70 (symmetric KL" in text


def test_a_new_signal_is_one_class_and_its_threshold(measured, tmp_path, monkeypatch):
    from autotransfer.analysis import signals
    from autotransfer.analysis.signals import Signal, Threshold

    # given a signal the library does not have: the Fréchet distance of the domains' features (similarity.json
    # measures it; no rule read it), counting the target as similar below a threshold it brings as its default
    class CloseFeatures(Signal):
        name = "frechet"
        label = "Fréchet distance between source and target features"
        basis = "Fréchet distance"
        tests = (Threshold("similar_frechet", "<", "similar", "similar", default=1e9),)

        def read(self, validation, similarity):
            return Reading(similarity.domain.frechet.get("value"), similarity.domain.frechet.get("n_per_domain"))

    before = PLAN.run(measured)
    # when it is added ahead of the others
    monkeypatch.setattr(signals, "SIGNALS", (CloseFeatures(), *signals.SIGNALS))
    plan = PLAN.run(measured)
    # then it decides the similarity verdict, with its comparison, its value and its threshold in plan.json
    assert plan.cell.similarity == "similar" and plan.cell.similarity_basis == "Fréchet distance"
    frechet = next(c for c in plan.comparisons if c.threshold_key == "strategy.similar_frechet")
    assert frechet.outcome and frechet.value == plan.inputs["frechet"] and frechet.threshold == 1e9
    assert "frechet" in plan.signals.used and json.loads((tmp_path / "reports/plan.json").read_text()) == plan.to_json()
    # and nothing else about the plan changed but what the verdict moves
    assert plan.inputs == {**before.inputs, "frechet": plan.inputs["frechet"]}
    assert [c for c in plan.comparisons if c is not frechet and "similar_" not in c.threshold_key] == [
        c for c in before.comparisons if "similar_" not in c.threshold_key]
