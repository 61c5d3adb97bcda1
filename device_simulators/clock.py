"""Simulated time: a simulated clock mapped onto the wall clock, in real time or faster.

Simulated times are seconds since the Unix epoch, like the wire contract's `t`, so that a
simulated reading is indistinguishable from a real one. A run accelerated by a factor
`speed` must never produce a time ahead of the wall clock (ingest rejects a `t` more
than 300 s in the future), so an accelerated run starts in the past: by default it
starts `duration` before now and reaches "now" no sooner than its end.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass
class SimClock:
    """Maps simulated time (s since epoch) to wall time.

    `speed` is simulated seconds per wall second: 1 is real time, 60 is one simulated
    hour per wall minute, and 0 (or inf) is "as fast as possible", where simulated time
    only advances when the caller says so (`advance_to`), as a load generator wants.
    """

    start: float
    """Simulated time at the start of the run, s since epoch."""
    speed: float = 1.0
    wall: callable = field(default=time.monotonic, repr=False)
    _wall_start: float = field(default=0.0, init=False, repr=False)
    _now: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.speed < 0 or math.isnan(self.speed):
            raise ValueError(f"speed must be >= 0, got {self.speed}")
        self._wall_start = self.wall()
        self._now = self.start

    @classmethod
    def for_run(cls, duration_s: float, speed: float, now: float | None = None) -> SimClock:
        """A clock whose run of `duration_s` simulated seconds never gets ahead of the wall clock."""
        now = time.time() if now is None else now
        start = now if speed == 1.0 else now - duration_s
        return cls(start=start, speed=speed)

    @property
    def unthrottled(self) -> bool:
        return self.speed == 0 or math.isinf(self.speed)

    def now(self) -> float:
        """The current simulated time, s since epoch."""
        if self.unthrottled:
            return self._now
        return self.start + (self.wall() - self._wall_start) * self.speed

    def advance_to(self, t: float) -> None:
        """Unthrottled clocks jump to `t`; throttled clocks ignore it (they follow the wall)."""
        if self.unthrottled:
            self._now = max(self._now, t)

    def wall_seconds_until(self, t: float) -> float:
        """Wall seconds to wait until simulated time `t` (0 if it has passed or unthrottled)."""
        if self.unthrottled:
            return 0.0
        return max(0.0, (t - self.now()) / self.speed)
