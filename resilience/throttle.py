"""Client-side adaptive throttling, as in the Google SRE book ("Handling Overload").

Over the last ``RETRY.BUDGET_WINDOW`` seconds a policy knows, in this process, the calls it
was asked to make (the retry budget counts them) and how many of those the dependency refused
for overload (``OverloadedError``) or this throttle held back. The rest were accepted. A new
call is held back here, without touching the network, with probability

    max(0, (requests - K * accepts) / (requests + 1))

So nothing is held back while the dependency accepts at least one call in K; past that, the
calls that reach it stay close to K times what it accepts, however many callers want to make,
and as it recovers traffic comes back at the pace it accepts it. A held-back call fails at once
with ``OverloadedError`` (its fallback answers, if it has one): the refusal the dependency would
have had to send is made here, for free.

A call that sees no refusal in the window pays nothing for this: the counts are the retry
budget's, under the lock the policy already holds.
"""

import math
import random

from resilience.retry import RetryBudget


class AdaptiveThrottle:
    def __init__(self, k: float, budget: RetryBudget, rng: random.Random | None = None) -> None:
        self.k = k
        self._budget = budget  # its buckets count the calls; its lock guards both
        self._n = budget._n  # seconds a refusal keeps the throttle looking: the budget's window
        self._seconds = [-1] * self._n
        self._refusals = [0] * self._n
        self.last_refusal = -math.inf  # the second of the latest refusal (the budget's clock)
        self._rng = rng or random.Random()

    @property
    def window_seconds(self) -> int:
        return self._n

    def _refusals_in_window(self, second: int) -> int:
        oldest = second - self._n
        return sum(self._refusals[i] for i in range(self._n) if self._seconds[i] > oldest)

    def probability_locked(self, second: int) -> float:
        """The chance that a call now is held back; under the budget's lock."""
        if second - self.last_refusal >= self._n:
            return 0.0
        requests, _ = self._budget._in_window(second)
        accepts = max(0, requests - self._refusals_in_window(second))
        return max(0.0, (requests - self.k * accepts) / (requests + 1))

    def hold_back_locked(self, second: int) -> bool:
        """Whether to hold this call back (counted as a refusal if so); under the lock. The
        call itself is already counted as a request."""
        if second - self.last_refusal >= self._n:
            return False  # the common case: no refusal in the window
        if self._rng.random() < self.probability_locked(second):
            self.refused_locked(second)
            return True
        return False

    def refused_locked(self, second: int) -> None:
        i = second % self._n
        if self._seconds[i] != second:
            self._seconds[i] = second
            self._refusals[i] = 0
        self._refusals[i] += 1
        self.last_refusal = second

    def reset(self) -> None:
        self._seconds = [-1] * self._n
        self._refusals = [0] * self._n
        self.last_refusal = -math.inf
