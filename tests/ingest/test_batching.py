"""How the ingest worker forms a batch: what is waiting, then what arrives within the window."""

from __future__ import annotations

import threading
import time

from ingest.consumer import IngestConsumer
from ingest.pipeline import Incoming


def _consumer(batch_max: int, window_s: float) -> IngestConsumer:
    # No broker is needed to form batches: the store and registry are never touched.
    return IngestConsumer("mqtt://127.0.0.1:1", store=None, registry=None, batch_max=batch_max, batch_window_s=window_s)


def _message(i: int) -> Incoming:
    return Incoming("mipd/v1/devices/d/readings", b"{}", time.time(), mid=i + 1, qos=1)


def test_batch_takes_what_waits_up_to_batch_max_in_arrival_order():
    consumer = _consumer(batch_max=3, window_s=0.0)
    for i in range(5):
        consumer._inbox.put(_message(i))
    assert [m.mid for m in consumer._take_batch()] == [1, 2, 3]
    assert [m.mid for m in consumer._take_batch()] == [4, 5]
    assert consumer._take_batch() == []  # nothing waiting: empty after the idle timeout


def test_messages_arriving_within_the_window_join_the_batch_and_later_ones_do_not():
    consumer = _consumer(batch_max=100, window_s=0.5)
    consumer._inbox.put(_message(0))

    def later():
        time.sleep(0.05)
        consumer._inbox.put(_message(1))  # within the window
        time.sleep(1.0)
        consumer._inbox.put(_message(2))  # after it

    sender = threading.Thread(target=later)
    sender.start()
    started = time.monotonic()
    first = consumer._take_batch()
    waited = time.monotonic() - started
    sender.join()
    assert [m.mid for m in first] == [1, 2]
    assert 0.5 <= waited < 1.0  # the window is waited out, not cut short by the arrival
    assert [m.mid for m in consumer._take_batch()] == [3]


def test_a_full_batch_does_not_wait_for_the_window():
    consumer = _consumer(batch_max=4, window_s=5.0)
    for i in range(4):
        consumer._inbox.put(_message(i))
    started = time.monotonic()
    assert len(consumer._take_batch()) == 4
    assert time.monotonic() - started < 1.0
