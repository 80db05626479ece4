"""Progress: a bar on a terminal, a log line at most every LOG_EVERY_S seconds everywhere else."""

from __future__ import annotations

import logging

import pytest

from autotransfer.io import progress as module
from autotransfer.io.progress import Progress


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "autotransfer.progress"]


def test_without_a_bar_it_logs_what_how_far_how_fast_and_what_is_left(caplog, monkeypatch):
    caplog.set_level(logging.INFO, "autotransfer.progress")
    monkeypatch.setattr(module, "LOG_EVERY_S", 0.0)  # a line on every update
    monkeypatch.setattr(module, "QUIET_FIRST_S", 0.0)
    with Progress("train finetune_top", 40, "step", progress=False, scale=64, announce=True) as bar:
        bar.update(10)
        bar.set_postfix(loss="0.412", val="0.930")
        bar.update(10)
    first, second, third, done = lines(caplog)
    assert first == "train finetune_top: 0/40 steps (0%)"
    assert second.startswith("train finetune_top: 10/40 steps (25%), ") and " img/s, ETA " in second
    assert third.endswith("loss 0.412, val 0.930") and "20/40 steps (50%)" in third
    assert done.startswith("train finetune_top: done, 20 steps in ") and done.endswith("loss 0.412, val 0.930")


def test_short_jobs_stay_quiet_and_a_shown_bar_or_another_rank_logs_nothing(caplog, monkeypatch):
    caplog.set_level(logging.INFO, "autotransfer.progress")
    module._last_line[0] = module.time.monotonic()  # a line was just written
    with Progress("features", 500, "img", progress=False) as bar:  # done well within 10 s: no line at all
        bar.update(500)
    monkeypatch.setattr(module, "LOG_EVERY_S", 0.0)
    with Progress("train", 5, "step", progress=True, announce=True) as bar:  # the bar says it
        bar.update(5)
    with Progress("train", 5, "step", progress=False, announce=True, silent=True) as bar:  # not the main rank
        bar.update(5)
    assert lines(caplog) == []


@pytest.mark.parametrize("seconds, text", [(9.6, "10s"), (61, "1m01s"), (3600, "60m00s")])
def test_durations_read_as_minutes_and_seconds(seconds, text):
    assert module._duration(seconds) == text


def test_short_jobs_in_a_row_say_something_once_ten_seconds_passed_without_a_line(caplog, monkeypatch):
    caplog.set_level(logging.INFO, "autotransfer.progress")
    module._last_line[0] = module.time.monotonic() - module.LOG_EVERY_S  # the last line is 10 s old
    with Progress("decoding features", 50, "img", progress=False) as bar:
        bar.update(50)  # a job done at once says nothing
    monkeypatch.setattr(module, "QUIET_FIRST_S", 0.0)
    with Progress("decoding target sample", 50, "img", progress=False) as bar:
        bar.update(1)  # the first update of a job that has run a while speaks
        bar.update(1)  # and then not again for 10 s
    first, done = lines(caplog)
    assert first.startswith("decoding target sample: 1/50 imgs (2%)") and done.startswith("decoding target sample: done")
