"""Retry pacing: full-jitter backoff bounds, the ±20 % period, one log line per window."""

from __future__ import annotations

import logging

import pytest

from pal.daemon.backoff import Backoff, RetryLog, jittered


def test_backoff_ceiling_doubles_from_half_a_second_and_caps_at_30() -> None:
    backoff = Backoff(rng=lambda: 1.0)
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_backoff_is_full_jitter_between_zero_and_the_ceiling() -> None:
    backoff = Backoff()
    for _ in range(200):
        ceiling = backoff.ceiling()
        assert 0 <= backoff.next_delay() <= ceiling <= 30
    assert Backoff(rng=lambda: 0.0).next_delay() == 0


def test_backoff_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(rng=lambda: 1.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_never_overflows_after_many_attempts() -> None:
    backoff = Backoff(rng=lambda: 1.0, cap=2.0)
    for _ in range(5000):
        assert backoff.next_delay() <= 2.0


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 1.0])
def test_jittered_period_is_at_most_the_period_and_at_least_80_percent(draw: float) -> None:
    assert 4.0 <= jittered(5.0, rng=lambda: draw) <= 5.0
    assert jittered(5.0, rng=lambda: 0.0) == pytest.approx(5.0)
    assert jittered(5.0, rng=lambda: 1.0) == pytest.approx(4.0)


def test_retry_log_says_one_line_per_window_then_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = RetryLog(logging.getLogger("test.retry"), "server unreachable", clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.retry"):
        for _ in range(10):  # ten failures within 9 s: one line
            log.failed("connection refused")
            now[0] += 1
        now[0] = 31.0
        log.failed("connection refused")  # a new window: a second line
        log.recovered()
        log.recovered()  # nothing to say twice
    assert [r.getMessage() for r in caplog.records] == [
        "server unreachable (1 attempt): connection refused",
        "server unreachable (11 attempts): connection refused",
        "server unreachable: recovered after 11 failed attempts",
    ]
    assert [getattr(r, "action", None) for r in caplog.records] == [
        "retrying",
        "retrying",
        "recovered",
    ]
