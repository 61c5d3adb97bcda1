"""Failed-login throttling: a user name, or a client address, that fails to log in
``max_failures`` times within ``window_s`` is refused (429, ``Retry-After``) until the oldest
failure leaves the moving window. Counting per address too stops one client from guessing
across many user names; counting per name stops many clients from guessing one password.

The window is counted by the ``limits`` library (moving window, in-process memory): one API
process per deployment, as the service runs; several API replicas would need its Redis storage.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class LoginGuard:
    def __init__(self, max_failures: int, window_s: float):
        self._limit = RateLimitItemPerSecond(max_failures, max(1, math.ceil(window_s)))
        self._window = MovingWindowRateLimiter(MemoryStorage())

    def _keys(self, username: str, client: str) -> tuple[tuple[str, str], ...]:
        return ("user", username.lower()), ("client", client)

    def retry_after_s(self, username: str, client: str) -> int:
        """0 if a login attempt may proceed, else seconds until it may."""
        waits = [
            self._window.get_window_stats(self._limit, *key).reset_time - time.time()
            for key in self._keys(username, client) if not self._window.test(self._limit, *key)
        ]
        return max(1, math.ceil(max(waits))) if waits else 0

    def failed(self, username: str, client: str) -> None:
        for key in self._keys(username, client):
            self._window.hit(self._limit, *key)

    def succeeded(self, username: str) -> None:
        self._window.clear(self._limit, "user", username.lower())
