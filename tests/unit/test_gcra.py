"""GCRA and LocalLimiter: exact bursts, the rate bound, and bounded memory."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.gcra import GcraResult, LocalLimiter, admit_all, admit_pair, gcra_check


def burst_admitted(lim: LocalLimiter, now: float, key: object = "k") -> int:
    n = 0
    while lim.check(key, now).allowed:
        n += 1
        if n > 10 * lim.burst:
            break
    return n


# Monotonic clocks read anything from 0 to months of uptime; 1000.0 is ManualClock's start,
# where repeated float additions of 0.1 used to refuse the tenth request of a burst of ten.
@pytest.mark.parametrize("now", [0.0, 1000.0, 12345.678, 1e6 + 0.3, 9.99e6])
@pytest.mark.parametrize(
    ("rate", "per"),
    [(10, 1.0), (50, 60.0), (2000, 3600.0), (3, 1.0), (7, 0.7), (20, 1.0), (1, 60.0), (13, 17.0)],
)
def test_burst_is_exact_at_any_clock_reading(now: float, rate: int, per: float) -> None:
    lim = LocalLimiter(per / rate, rate)
    assert burst_admitted(lim, now) == rate


def test_first_request_and_refusal_report_remaining_retry_and_reset() -> None:
    first = gcra_check(None, 100.0, 0.1, 10)
    assert first.allowed
    assert first.remaining == 9
    assert first.reset == pytest.approx(0.1)
    assert first.retry_after == 0.0
    full = gcra_check(101.0, 100.0, 0.1, 10)  # ten already used at t=100
    assert not full.allowed
    assert full.new_tat == 101.0  # a refusal leaves the state as it was
    assert full.remaining == 0
    assert full.retry_after == pytest.approx(0.1)
    assert full.reset == pytest.approx(1.0)


def test_cost_consumes_several_units() -> None:
    lim = LocalLimiter(1.0, 5)
    assert lim.check("k", 0.0, cost=3).remaining == 2
    assert not lim.check("k", 0.0, cost=3).allowed
    assert lim.check("k", 0.0, cost=2).allowed


def test_refused_check_does_not_change_state() -> None:
    lim = LocalLimiter(0.5, 2)
    assert lim.check("k", 0.0).allowed
    assert lim.check("k", 0.0).allowed
    for _ in range(50):
        assert not lim.check("k", 0.0).allowed
    # Had refusals pushed the TAT, this would still be refused.
    assert lim.check("k", 0.5).allowed


def test_window_boundary_admits_no_second_burst() -> None:
    # Bound over [0.99, 1.01]: b + floor(d / T) = 10 + floor(0.02 / 0.1) = 10. A fixed
    # one-second window would admit 20 here (10 before the boundary, 10 after).
    lim = LocalLimiter(0.1, 10)
    at_099 = burst_admitted(lim, 1000.99)
    at_101 = burst_admitted(lim, 1001.01)
    assert at_099 == 10
    assert at_099 + at_101 == 10 + math.floor(0.02 / 0.1)


@settings(max_examples=100, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.3), min_size=1, max_size=120),
    rate=st.integers(min_value=1, max_value=50),
)
def test_admitted_never_exceed_burst_plus_rate_times_elapsed(gaps: list[float], rate: int) -> None:
    interval = 1.0 / rate
    lim = LocalLimiter(interval, rate)
    now = 1000.0
    admitted: list[float] = []
    for gap in gaps:
        now += gap
        if lim.check("k", now).allowed:
            admitted.append(now)
    # GCRA's bound for any interval [t0, t1]: b + floor((t1 - t0) / T), for every sub-range.
    for i in range(len(admitted)):
        for j in range(i, len(admitted)):
            span = admitted[j] - admitted[i]
            assert j - i + 1 <= rate + math.floor(span / interval + 1e-6)


def test_evaluate_and_record_commit_only_allowed_results() -> None:
    lim = LocalLimiter(1.0, 1)
    res = lim.evaluate("k", 0.0)
    assert res.allowed
    assert len(lim) == 0  # evaluation alone stores nothing
    lim.record("k", res)
    refused = lim.evaluate("k", 0.0)
    assert not refused.allowed
    lim.record("k", refused)
    assert lim.evaluate("k", 1.0).allowed


def test_peek_agrees_with_check() -> None:
    lim = LocalLimiter(0.25, 4)
    for step in range(40):
        now = 50.0 + step * 0.05
        expected = lim.peek("k", now)
        assert lim.check("k", now).allowed is expected


def test_prune_drops_only_full_buckets() -> None:
    lim = LocalLimiter(1.0, 10)
    lim.check("old", 0.0)  # TAT 1.0
    lim.check("new", 5.0)  # TAT 6.0
    assert lim.prune(2.0) == 1
    assert len(lim) == 1
    assert lim.check("new", 5.0).remaining == 8  # the live key kept its state


class CountingLimiter(LocalLimiter):
    """Counts full scans."""

    def __init__(self, interval: float, burst: int, max_keys: int) -> None:
        super().__init__(interval, burst, max_keys)
        self.scans = 0

    def prune(self, now: float) -> int:
        self.scans += 1
        return super().prune(now)


def test_full_table_fails_closed_without_rescanning() -> None:
    lim = CountingLimiter(1.0, 10, 3)
    for key in ("a", "b", "c"):
        assert lim.check(key, 0.0).allowed  # TATs 1.0
    for i in range(1000):
        res = lim.check(f"attacker-{i}", 0.5)
        assert not res.allowed
        assert res.retry_after == pytest.approx(0.5)  # until the earliest live key expires
    assert lim.scans == 0  # nothing can have expired before 1.0: no scan at all
    assert lim.check("a", 0.5).allowed  # known keys keep working
    assert lim.check("newcomer", 1.5).allowed  # b and c expired at 1.0: room again
    assert lim.scans == 1


def test_full_table_tracks_expiry_of_keys_added_after_a_prune() -> None:
    lim = LocalLimiter(1.0, 1, 2)
    lim.check("a", 0.0)  # TAT 1.0
    lim.check("b", 0.0)  # TAT 1.0
    assert not lim.check("c", 0.5).allowed  # full; earliest expiry 1.0
    assert lim.check("c", 1.0).allowed  # a and b pruned, c TAT 2.0
    lim.check("d", 1.5)  # TAT 2.5
    assert not lim.check("e", 1.8).allowed
    assert lim.check("e", 2.0).allowed  # c (TAT 2.0) expired: its slot is reused


@pytest.mark.parametrize(("interval", "burst", "max_keys"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_invalid_parameters_are_refused(interval: float, burst: int, max_keys: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        LocalLimiter(interval, burst, max_keys)


def test_result_is_a_frozen_value() -> None:
    res = GcraResult(True, 1.0, 0.0, 1, 1.0)
    with pytest.raises(AttributeError):
        res.allowed = False  # type: ignore[misc]


# --- admit_all: the per-request fast path -----------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    specs=st.lists(
        st.tuples(st.integers(1, 50), st.sampled_from([0.1, 0.7, 1.0, 3.0, 60.0])),
        min_size=1,
        max_size=3,
    ),
    start=st.sampled_from([0.0, 1000.0, 12345.678, 9.99e6]),
    gaps=st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.01, 0.1, 0.5, 2.0]), max_size=80),
)
def test_admit_all_decides_exactly_like_evaluate(
    specs: list[tuple[int, float]], start: float, gaps: list[float]
) -> None:
    fast = [LocalLimiter(per / rate, rate) for rate, per in specs]
    slow = [LocalLimiter(per / rate, rate) for rate, per in specs]
    keys = [("k", i) for i in range(len(specs))]
    now = start
    for gap in [0.0, *gaps]:
        now += gap
        admitted = admit_all(fast, keys, now)
        results = [lim.evaluate(k, now) for lim, k in zip(slow, keys, strict=True)]
        allowed = all(r.allowed for r in results)
        assert (admitted is not None) == allowed
        if admitted is not None:
            for lim, k, r in zip(slow, keys, results, strict=True):
                lim.record(k, r)
            i, remaining, reset = admitted
            worst = min(
                range(len(results)), key=lambda j: (results[j].remaining, -results[j].reset)
            )
            assert (remaining, reset) == (results[worst].remaining, results[worst].reset)
            assert i == worst
        for f, s, k in zip(fast, slow, keys, strict=True):
            assert f._tats.get(k) == s._tats.get(k)


def test_admit_all_records_nothing_when_one_limit_refuses() -> None:
    a, b = LocalLimiter(1.0, 5), LocalLimiter(1.0, 1)
    assert admit_all((a, b), ("x", "y"), 0.0) is not None
    assert admit_all((a, b), ("x", "y"), 0.0) is None  # "y" is out
    assert a.evaluate("x", 0.0).remaining == 3  # the refusal took nothing from "x"


def test_admit_all_fails_closed_on_a_full_table_and_needs_one_key_per_limiter() -> None:
    lim = LocalLimiter(1.0, 1, max_keys=1)
    assert admit_all((lim,), ("a",), 0.0) is not None
    assert admit_all((lim,), ("b",), 0.5) is None  # table full of a live key
    assert admit_all((lim,), ("b",), 1.5) is not None  # "a" expired: room again
    with pytest.raises(ValueError, match="one key per limiter"):
        admit_all((lim,), ("b", "c"), 9.0)


def test_admit_all_keeps_the_burst_exact_despite_float_drift() -> None:
    # 1000.0 + 10 x 0.1 drifts above 1001.0; the slack of gcra_check must apply here too.
    lim = LocalLimiter(0.1, 10)
    assert sum(admit_all((lim,), ("k",), 1000.0) is not None for _ in range(15)) == 10


# --- admit_pair: admit_all unrolled for two limits -----------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    specs=st.lists(
        st.tuples(st.integers(1, 50), st.sampled_from([0.1, 0.7, 1.0, 3.0, 60.0])),
        min_size=2,
        max_size=2,
    ),
    shared=st.booleans(),
    max_keys=st.sampled_from([1, 2, 1_000_000]),
    start=st.sampled_from([0.0, 1000.0, 12345.678, 9.99e6]),
    gaps=st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.01, 0.1, 0.5, 2.0]), max_size=80),
)
def test_admit_pair_decides_records_and_reports_exactly_like_admit_all(
    specs: list[tuple[int, float]], shared: bool, max_keys: int, start: float, gaps: list[float]
) -> None:
    def limiters() -> tuple[LocalLimiter, LocalLimiter]:
        (r0, p0), (r1, p1) = specs
        a = LocalLimiter(p0 / r0, r0, max_keys)
        # shared: both limits have one spec, hence one limiter holding both keys
        return (a, a) if shared else (a, LocalLimiter(p1 / r1, r1, max_keys))

    fast, slow = limiters(), limiters()
    keys = (("k", 0), ("k", 1))
    now = start
    for gap in [0.0, *gaps]:
        now += gap
        assert admit_pair(fast[0], keys[0], fast[1], keys[1], now) == admit_all(slow, keys, now)
        for f, s in zip(fast, slow, strict=True):
            assert f._tats == s._tats
            assert f._next_expiry == s._next_expiry


def test_admit_pair_remembers_remaining_per_reset_without_changing_it() -> None:
    lim = LocalLimiter(0.1, 10)
    other = LocalLimiter(0.1, 10)
    # A refilled bucket: the same reset request after request, remaining computed once.
    for t in (1000.0, 1001.0, 1002.0):
        assert admit_pair(lim, "a", other, "b", t) == admit_all((other, lim), ("c", "d"), t)
    assert lim._memo_reset == pytest.approx(0.1)
    assert lim._memo_remaining == 9
    # A draining bucket: new resets, fresh counts.
    got = [admit_pair(lim, "x", other, "y", 2000.0) for _ in range(12)]
    assert [g[1] if g else None for g in got] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, None, None]
