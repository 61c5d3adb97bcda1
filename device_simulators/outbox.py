"""The device's outbox: messages wait here until the broker has acknowledged them.

paho-mqtt keeps unacknowledged messages in memory only, so a device that is switched
off, or whose process dies, while offline would lose them. A message therefore enters
the outbox before it is published and leaves it only when its PUBACK arrives. After a
reconnect everything still in the outbox is sent again, from the oldest: a message whose
PUBACK was lost arrives twice, which the contract allows (ingest deduplicates on `id`).

`FileOutbox` is the durable one: two append-only files in a directory, as a small device
would keep on flash (no database engine):

    messages.log   records  <row id: u64><topic length: u32><payload length: u32><topic><payload>
    acked.log      records  <row id: u64>, one per acknowledged message

A message is durable once `put_many` returns (written and fsynced). An acknowledgement is
only flushed: losing one in a power cut means a resend, which the contract tolerates.
On opening, a torn last record (a crash mid-write) is cut off. A row id is never reused
while an acknowledgement of it can still be read, so a stale one cannot hide a message. When
everything is acknowledged both files are emptied (acks first: a crash in between means
resends, not loss); when acknowledged records pile up, the log is rewritten with only the
unacknowledged ones, then the acks are dropped.

`MemoryOutbox` has the same interface, in memory: for load generation, where durability is
not the point.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict, deque
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, Protocol

_HEADER = struct.Struct("<QII")
_ACK = struct.Struct("<Q")


class Outbox(Protocol):
    def put_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        """Append (topic, payload) messages, in order; durable when this returns."""

    def next_unsent(self, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to `limit` (row id, topic, payload) not yet handed out since the last rewind."""

    def rewind(self) -> None:
        """Hand out every unacknowledged message again (after a reconnect)."""

    def ack_many(self, row_ids: Iterable[int]) -> None:
        """Remove acknowledged messages."""

    def __len__(self) -> int:
        """Messages not yet acknowledged."""

    def close(self) -> None: ...


class MemoryOutbox:
    """Unacknowledged messages in memory, oldest first; lost with the process."""

    def __init__(self) -> None:
        self._rows: OrderedDict[int, tuple[str, bytes]] = OrderedDict()
        self._unsent: deque[int] = deque()
        self._next_id = 1

    def put_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        for topic, payload in messages:
            self._add(self._next_id, topic, payload)

    def _add(self, row_id: int, topic: str, payload: bytes) -> None:
        self._rows[row_id] = (topic, payload)
        self._unsent.append(row_id)
        self._next_id = max(self._next_id, row_id + 1)

    def next_unsent(self, limit: int) -> list[tuple[int, str, bytes]]:
        out = []
        while self._unsent and len(out) < limit:
            row_id = self._unsent.popleft()
            row = self._rows.get(row_id)
            if row is not None:
                out.append((row_id, *row))
        return out

    def rewind(self) -> None:
        self._unsent = deque(self._rows.keys())

    def ack_many(self, row_ids: Iterable[int]) -> list[int]:
        """Remove them; returns the ids that were present."""
        return [row_id for row_id in row_ids if self._rows.pop(row_id, None) is not None]

    def __len__(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        pass


class FileOutbox(MemoryOutbox):
    """The same outbox, backed by an append-only message log and acknowledgement log in `directory`."""

    COMPACT_AFTER_ACKS = 100_000

    def __init__(self, directory: Path | str, *, fsync: bool = True):
        super().__init__()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._log_path = self.directory / "messages.log"
        self._ack_path = self.directory / "acked.log"
        acked, max_acked = _read_acks(self._ack_path)
        max_logged = 0
        for row_id, topic, payload in _read_log(self._log_path):
            max_logged = max(max_logged, row_id)
            if row_id not in acked:
                self._add(row_id, topic, payload)
        self._next_id = max(max_logged, max_acked) + 1
        self._acks_logged = len(acked)
        self._log: BinaryIO = open(self._log_path, "ab")
        self._acks: BinaryIO = open(self._ack_path, "ab")

    def put_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        chunks = []
        for topic, payload in messages:
            row_id = self._next_id
            encoded = topic.encode()
            chunks.append(_HEADER.pack(row_id, len(encoded), len(payload)) + encoded + payload)
            self._add(row_id, topic, payload)
        if chunks:
            self._log.write(b"".join(chunks))
            _sync(self._log, self.fsync)

    def ack_many(self, row_ids: Iterable[int]) -> list[int]:
        removed = super().ack_many(row_ids)
        if not removed:
            return removed
        if not self._rows:
            self._empty_files()
            return removed
        self._acks.write(b"".join(_ACK.pack(i) for i in removed))
        self._acks.flush()
        self._acks_logged += len(removed)
        if self._acks_logged > self.COMPACT_AFTER_ACKS and self._acks_logged > 2 * len(self._rows):
            self._rewrite_log()
        return removed

    def _empty_files(self) -> None:
        # acks first: a crash between the two leaves acknowledged messages to resend, never a
        # stale ack that hides a message; the next id is kept in a one-record ack log
        self._acks.truncate(0)
        self._acks.write(_ACK.pack(self._next_id - 1))
        _sync(self._acks, self.fsync)
        self._log.truncate(0)
        _sync(self._log, self.fsync)
        self._acks_logged = 1

    def _rewrite_log(self) -> None:
        temporary = self._log_path.with_suffix(".tmp")
        with open(temporary, "wb") as f:
            for row_id, (topic, payload) in self._rows.items():
                encoded = topic.encode()
                f.write(_HEADER.pack(row_id, len(encoded), len(payload)) + encoded + payload)
            _sync(f, True)
        self._log.close()
        os.replace(temporary, self._log_path)
        self._log = open(self._log_path, "ab")
        # ids above the rewritten log's largest may be reused after a restart: they were all
        # acknowledged and their acks go now, so nothing can match them
        self._acks.truncate(0)
        _sync(self._acks, self.fsync)
        self._acks_logged = 0

    def close(self) -> None:
        for f in (self._log, self._acks):
            if not f.closed:
                _sync(f, self.fsync)
                f.close()


def _sync(f: BinaryIO, fsync: bool) -> None:
    f.flush()
    if fsync:
        os.fsync(f.fileno())


def _read_log(path: Path) -> Iterable[tuple[int, str, bytes]]:
    """The complete records of a message log; a torn last record is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records, offset = [], 0
    while offset + _HEADER.size <= len(data):
        row_id, topic_len, payload_len = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + topic_len + payload_len
        if end > len(data):
            break
        start = offset + _HEADER.size
        records.append((row_id, data[start:start + topic_len].decode(), data[start + topic_len:end]))
        offset = end
    if offset < len(data):
        with open(path, "r+b") as f:
            f.truncate(offset)
    return records


def _read_acks(path: Path) -> tuple[set[int], int]:
    """(acknowledged row ids, the largest id mentioned); a torn last record is cut off the file."""
    if not path.exists():
        return set(), 0
    data = path.read_bytes()
    whole = len(data) - len(data) % _ACK.size
    if whole < len(data):
        with open(path, "r+b") as f:
            f.truncate(whole)
    ids = {i for (i,) in _ACK.iter_unpack(data[:whole])}
    return ids, max(ids, default=0)
