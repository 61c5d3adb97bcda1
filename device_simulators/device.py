"""What every virtual device has: an id, a sequence counter, message ids, and its own clock.

A real device stamps `t` with its own clock, which can be offset (never synchronised)
and drift (a cheap crystal is off by tens of ppm). The simulator keeps the true time
and lets the device's clock error show only in the payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from device_simulators.message import Message, encode
from wire.topics import TopicKind, device_topic, valid_device_id


@dataclass(frozen=True)
class DeviceClockError:
    """How wrong a device's clock is."""

    offset_s: float = 0.0
    """Constant offset of the device clock from true time, s (positive: device is ahead)."""
    drift_ppm: float = 0.0
    """Rate error, parts per million of elapsed time since `reference_t`."""
    reference_t: float = 0.0
    """True time at which the offset is `offset_s`, s since epoch."""

    def device_time(self, true_t: float) -> float:
        return true_t + self.offset_s + (true_t - self.reference_t) * self.drift_ppm * 1e-6


@dataclass
class DeviceIdentity:
    """Id, per-device sequence numbers and unique message ids of one device."""

    device_id: str
    clock: DeviceClockError = field(default_factory=DeviceClockError)
    boot_id: str = "0"
    """Distinguishes ids across reboots (a reboot restarts nothing here, but real devices do)."""
    next_seq: int = 0

    def __post_init__(self) -> None:
        if not valid_device_id(self.device_id):
            raise ValueError(f"invalid device id {self.device_id!r}")

    @classmethod
    def new(cls, device_id: str, rng: np.random.Generator, clock: DeviceClockError | None = None) -> DeviceIdentity:
        return cls(device_id, clock or DeviceClockError(), boot_id=f"{int(rng.integers(0, 2**32)):08x}")

    def take_seq(self) -> tuple[int, str]:
        """The next (seq, message id); ids are unique per device because seq never repeats."""
        seq = self.next_seq
        self.next_seq += 1
        return seq, f"{self.boot_id}-{seq}"

    def topic(self, kind: TopicKind | str) -> str:
        return device_topic(self.device_id, kind)

    def stamp(self, true_t: float) -> float:
        """The `t` this device writes for an event at true time `true_t`, ms resolution."""
        return round(self.clock.device_time(true_t), 3)


def status_message(identity: DeviceIdentity, true_t: float, model: str, rng: np.random.Generator) -> Message:
    """The retained `online` status a device publishes when it starts (battery drawn uniformly
    from 50-100 %, an assumption). A real device also sets the Last Will `{"state":"offline"}`;
    the simulator's devices share one connection, so they cannot."""
    document = {"state": "online", "t": identity.stamp(true_t), "battery": round(float(rng.uniform(0.5, 1.0)), 2),
                "firmware": "mipd-sim-1", "model": model}
    return Message(true_t, identity.topic(TopicKind.STATUS), encode(document))
