"""Who goes on after a race round: best val, and the last place by projected val (slow starters)."""

from autotransfer.engine.race import survivors, val_rise
from autotransfer.transfer.strategies import Candidate

FT_1X, FT_01X, SCRATCH = Candidate("finetune_all", 1.0), Candidate("finetune_all", 0.1), Candidate("scratch")


def curve(*vals):
    return [{"epoch": i + 1, "val_accuracy": v} for i, v in enumerate(vals)]


def after_round(val: dict[Candidate, float], rise: dict[Candidate, float], keep: int, ahead: int, rising: bool):
    ranked = sorted(val, key=lambda c: val[c], reverse=True)
    scores, rises = {c.label: v for c, v in val.items()}, {c.label: v for c, v in rise.items()}
    return survivors(ranked, scores, rises, keep, ahead, rising)


def test_val_rise_is_the_gain_per_epoch_over_the_rounds_second_half():
    assert val_rise(curve(0.10, 0.30, 0.50), 3) == (0.50 - 0.10) / 2  # epochs 1 -> 3
    assert val_rise(curve(0.1, 0.2, 0.3, 0.4, 0.6, 0.9), 6) == (0.9 - 0.3) / 3  # epochs 3 -> 6


def test_val_rise_is_zero_without_a_second_half_a_val_or_a_full_round():
    assert val_rise(curve(0.4), 1) == 0.0
    assert val_rise(curve(None, None, None), 3) == 0.0
    assert val_rise(curve(0.1, 0.5), 3) == 0.0  # stopped early (patience): levelled off


def test_a_slow_starter_rising_fast_takes_the_last_place_from_a_flat_runner_up():
    # shifted, all labels: scratch third after round 1 but climbing
    val = {FT_1X: 0.553, FT_01X: 0.447, SCRATCH: 0.391}
    rise = {FT_1X: 0.04, FT_01X: 0.03, SCRATCH: 0.15}
    assert after_round(val, rise, keep=2, ahead=3, rising=True) == [FT_1X, SCRATCH]
    # ranking by val alone cuts it; as many go on either way
    assert after_round(val, rise, keep=2, ahead=3, rising=False) == [FT_1X, FT_01X]


def test_the_leader_always_goes_on_and_a_single_place_goes_to_the_best_val():
    val = {FT_1X: 0.60, FT_01X: 0.50, SCRATCH: 0.20}
    rise = {FT_1X: 0.0, FT_01X: 0.0, SCRATCH: 0.30}  # projects to 1.0, above the leader's 0.60
    assert after_round(val, rise, keep=2, ahead=4, rising=True) == [FT_1X, SCRATCH]
    assert after_round(val, rise, keep=1, ahead=4, rising=True) == [FT_1X]


def test_falling_curves_project_flat_and_a_capped_projection_still_wins_its_place():
    val = {FT_1X: 0.9, FT_01X: 0.8, SCRATCH: 0.5}
    rise = {FT_1X: 0.0, FT_01X: -0.2, SCRATCH: 0.05}  # 0.8 stays 0.8 (not 0.2); 0.5 + 0.15 < 0.8
    assert after_round(val, rise, keep=2, ahead=3, rising=True) == [FT_1X, FT_01X]
    rise[SCRATCH] = 0.2  # 0.5 + 0.6, capped at 1.0
    assert after_round(val, rise, keep=2, ahead=3, rising=True) == [FT_1X, SCRATCH]
