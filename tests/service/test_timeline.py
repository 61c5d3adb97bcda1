"""The timeline keeps "posterior = f(events sorted by time)" however events arrive.

The filter here is a stand-in that records the sequence of event keys it was given: the
invariant under test is about order, and a sequence shows every ordering mistake.
"""

import random

import pytest

from mipdstream.service.timeline import Snapshot, Timeline, TimelineEvent


def reading(t: float, name: str | None = None) -> TimelineEvent:
    return TimelineEvent(t, f"r:dev:{name or t}", None)


def dose(t: float) -> TimelineEvent:
    return TimelineEvent(t, f"d:pump:{t}", None)


def run(timeline: Timeline, now: float, store: list[TimelineEvent]) -> None:
    """Do whatever is due, with a 'filter' that appends event keys to the posterior."""
    while (work := timeline.due(now)) is not None:
        if work.kind == "full":
            events = sorted(store, key=lambda e: e.order)
            timeline.complete(work, tuple(e.key for e in events), events)
        else:
            timeline.complete(work, work.start.posterior + tuple(e.key for e in work.events))


def new_timeline(**kwargs) -> Timeline:
    return Timeline("p1", Snapshot(float("-inf"), 0, ()), reorder_window_s=1.0, **kwargs)


def test_events_wait_for_the_reorder_window_then_go_in_time_order():
    timeline = new_timeline()
    timeline.admit(reading(2.0), arrived_at=0.0)
    timeline.admit(reading(1.0), arrived_at=0.5)
    assert timeline.due(now=0.9) is None
    work = timeline.due(now=1.2)
    assert work.kind == "append" and [e.time for e in work.events] == [1.0, 2.0]


def test_reading_at_the_time_of_a_dose_comes_first():
    timeline = new_timeline()
    timeline.admit(dose(3.0), 0.0)
    timeline.admit(reading(3.0), 0.0)
    assert [e.key[0] for e in timeline.due(5.0).events] == ["r", "d"]


def test_duplicates_are_dropped_while_pending_and_after_assimilation():
    timeline, store = new_timeline(), []
    assert timeline.admit(reading(1.0), 0.0)
    assert not timeline.admit(reading(1.0), 0.1)
    run(timeline, 5.0, store)
    assert not timeline.admit(reading(1.0), 6.0)
    assert timeline.current.n_events == 1


def test_a_late_event_rewinds_to_the_snapshot_before_it():
    timeline, store = new_timeline(snapshot_every_h=1.0), []
    for t in (1.0, 2.5, 4.0, 5.5):
        timeline.admit(reading(t), 0.0)
        run(timeline, 10.0 + t, store)
    timeline.admit(reading(3.0, "late"), 20.0)
    work = timeline.due(25.0)
    assert work.kind == "rewind"
    assert work.start.time < 3.0 and [e.time for e in work.events][0] > work.start.time
    timeline.complete(work, work.start.posterior + tuple(e.key for e in work.events))
    assert timeline.current.posterior == ("r:dev:1.0", "r:dev:2.5", "r:dev:late", "r:dev:4.0", "r:dev:5.5")
    assert timeline.current.n_events == 5


def test_an_event_older_than_every_snapshot_asks_for_the_whole_history():
    timeline, store = new_timeline(snapshot_every_h=1.0, keep_snapshots=2), []
    for t in (1.0, 3.0, 5.0, 7.0, 9.0):
        store.append(reading(t))
        timeline.admit(reading(t), 0.0)
        run(timeline, 10.0 + t, store)
    old = reading(0.5)
    store.append(old)
    timeline.admit(old, 30.0)
    work = timeline.due(35.0)
    assert work.kind == "full" and work.start is None
    events = sorted(store, key=lambda e: e.order)
    timeline.complete(work, tuple(e.key for e in events), events)
    assert timeline.current.posterior[0] == "r:dev:0.5" and timeline.current.n_events == 6


@pytest.mark.parametrize("seed", range(20))
def test_any_arrival_order_gives_the_posterior_of_the_sorted_events(seed):
    rng = random.Random(seed)
    events = [reading(round(rng.uniform(0, 48), 3), f"{i}") for i in range(40)] + [dose(float(t)) for t in range(0, 48, 12)]
    timeline, store, clock = new_timeline(snapshot_every_h=rng.choice([1.0, 4.0, 12.0]), keep_snapshots=3), [], 0.0
    for event in rng.sample(events, len(events)):
        clock += rng.expovariate(2.0)
        store.append(event)
        timeline.admit(event, clock)
        if rng.random() < 0.3:  # a redelivered duplicate now and then
            timeline.admit(rng.choice(store), clock)
        run(timeline, clock, store)
    run(timeline, clock + 10.0, store)
    expected = tuple(e.key for e in sorted(events, key=lambda e: e.order))
    assert timeline.current.posterior == expected
    assert timeline.current.n_events == len(events)
    assert not timeline.pending
