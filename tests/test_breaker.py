"""The circuit breaker, pure: a hand-stepped clock, no Redis."""

from __future__ import annotations

import pytest

from guard.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, failures: int = 3) -> CircuitBreaker:
    return CircuitBreaker(failures=failures, cooldown=1.0, max_cooldown=5.0, clock=clock)


def trip(b: CircuitBreaker) -> None:
    for _ in range(b.failures):
        assert b.allow()
        b.failure()


def test_opens_after_n_consecutive_failures_only() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(2):
        b.failure()
    b.success()  # not consecutive any more
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and not b.allow() and b.opened == 1
    assert b.retry_in() == pytest.approx(1.0)


def test_half_open_lets_exactly_one_probe_through_after_the_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    trip(b)
    clock.now += 0.99
    assert not b.allow()
    clock.now += 0.01
    assert [b.allow() for _ in range(5)] == [True, False, False, False, False]
    assert b.state == "half_open"
    b.success()
    assert b.state == "closed" and all(b.allow() for _ in range(5))


def test_a_released_probe_gives_its_turn_to_the_next_call() -> None:
    """A probe cancelled early (its client left) proves nothing: the next call probes instead,
    and the breaker never stays half-open with nobody probing."""
    clock = Clock()
    b = breaker(clock)
    trip(b)
    clock.now += 1.0
    assert b.allow() and not b.allow()  # the probe is out
    b.release()
    assert b.state == "open" and b.retry_in() == 0.0
    assert b.allow() and not b.allow()  # the next call is the probe
    b.success()
    assert b.state == "closed"
    b.release()  # in CLOSED: nothing changes
    assert b.state == "closed" and b.allow()


def test_failed_probes_double_the_cooldown_up_to_the_cap() -> None:
    clock = Clock()
    b = breaker(clock)
    trip(b)
    waits = []
    for _ in range(5):
        waits.append(b.retry_in())
        clock.now += b.retry_in()
        assert b.allow()
        b.failure()
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    clock.now += 5.0
    assert b.allow()
    b.success()
    # Closed again: the next trip starts from the base cool-down.
    trip(b)
    assert b.retry_in() == 1.0


def test_late_failure_while_open_does_not_extend_the_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    trip(b)
    clock.now += 0.5
    b.failure()  # a call admitted before the breaker opened, failing late
    assert b.retry_in() == pytest.approx(0.5)


def test_late_success_while_open_closes_it() -> None:
    clock = Clock()
    b = breaker(clock)
    trip(b)
    b.success()
    assert b.state == "closed" and b.allow()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failures": 0}, "failures must be at least 1, got 0"),
        ({"cooldown": 0.0}, "cooldown must be > 0"),
        ({"cooldown": 10.0, "max_cooldown": 5.0}, "<= max_cooldown (5.0), got 10.0"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
