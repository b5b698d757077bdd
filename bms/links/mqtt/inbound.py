"""What a session takes from the broker, bounded before anything reads it: a size cap on
every message, a rate per topic, and a check of the subscriber's own (one frame a
message on `proto/in`). What is refused is dropped where it arrives, in the session's
thread, counted by subscription and reason, and logged once an episode.

Why and how: docs/internals.md, bms/links/mqtt/inbound.py.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 32768  # a `config` set of every parameter is about 11 kB
TOPICS_PER_FILTER = 16  # buckets a wildcard subscription keeps; more topics share one
LOG_EVERY_S = 60.0  # an episode of refusals: its first one logged, then a count this often
TOO_LARGE, OVER_RATE = "too_large", "over_rate"
BACKLOG_FULL = "backlog_full"  # taken, but too many wait for the control loop already


@dataclass(frozen=True)
class Intake:
    """One subscription's bounds: `rate_per_s` messages a second on each of its topics
    (as a burst too; None: no limit), at most `max_bytes` a message (None: the session's
    cap), and `check(payload)`: why a message is refused, or None to take it."""

    rate_per_s: float | None = None
    max_bytes: int | None = None
    check: Callable[[bytes], str | None] | None = None


NO_BOUNDS = Intake()  # a subscription's without its own: the session's size cap only


def filter_pattern(topic_filter: str) -> re.Pattern[str]:
    """MQTT's matching as a regular expression: `+` one level, a last `#` the parent and
    everything below it; a wildcard first takes no topic starting with `$`."""
    levels = topic_filter.split("/")
    parts = ["[^/]*" if level == "+" else re.escape(level) for level in levels]
    if levels[-1] == "#":
        parts[-1] = ".*"
        text = "/".join(parts[:-1]) + ("(?:/.*)?" if len(parts) > 1 else ".*")
    else:
        text = "/".join(parts)
    return re.compile(("(?!\\$)" if levels[0] in ("+", "#") else "") + text)


class _Bucket:
    """A token bucket: `rate_per_s` tokens a second, holding at most that many (1 at least)."""

    def __init__(self, rate_per_s: float, now_s: float):
        self.rate_per_s = rate_per_s
        self.size = max(1.0, rate_per_s)
        self.tokens = self.size
        self.at_s = now_s

    def take(self, now_s: float) -> bool:
        self.tokens = min(self.size, self.tokens + (now_s - self.at_s) * self.rate_per_s)
        self.at_s = now_s
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class EpisodeLog:
    """Logs something that repeats, a refusal say, without a line each time: the first of
    an episode, then at most every LOG_EVERY_S a line with the count (in one thread)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._logged: dict[Hashable, tuple[float, int]] = {}  # logged at, count then

    def note(self, key: Hashable, total: int, counted: str, what: str, *args: object) -> None:
        """The `total`-th time of `key` ("N `counted` so far"); `what % args` says what
        happened this time (formatted only when logged: a flood calls this every message)."""
        now_s = self.clock()
        logged = self._logged.get(key)
        if logged is None or now_s - logged[0] >= LOG_EVERY_S:
            since = "" if logged is None else f" ({total - logged[1]} since the last report)"
            log.warning("MQTT: " + what + "; %d %s so far%s", *args, total, counted, since)
            self._logged[key] = (now_s, total)


class InboundGate:
    """Admits or refuses each message a session receives (called in its thread only)."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 clock: Callable[[], float] = time.monotonic):
        self.max_message_bytes = max_message_bytes
        self.clock = clock
        self._intakes: dict[str, Intake] = {}
        self._patterns: dict[str, re.Pattern[str]] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()  # `refused` is read from other threads (stats)
        self._refused: Counter[tuple[str, str]] = Counter()
        self._episodes = EpisodeLog(clock)

    def add(self, topic_filter: str, intake: Intake) -> None:
        self._intakes[topic_filter] = intake

    def matches(self, topic_filter: str, topic: str) -> bool:
        """Whether `topic` matches the filter: a regular expression compiled once per filter
        (aiomqtt's `Topic.matches` parses the filter every time, some 20 µs a message)."""
        pattern = self._patterns.get(topic_filter)
        if pattern is None:
            pattern = self._patterns[topic_filter] = filter_pattern(topic_filter)
        return pattern.fullmatch(topic) is not None

    def admit(self, topic_filter: str, topic: str, payload: bytes) -> bool:
        """Whether the subscription `topic_filter` takes this message; a refusal is counted.
        Checked cheapest first: the size, then the rate, then the subscriber's check."""
        intake = self._intakes.get(topic_filter, NO_BOUNDS)
        limit = min(self.max_message_bytes, intake.max_bytes or self.max_message_bytes)
        if len(payload) > limit:
            self.refuse(topic_filter, TOO_LARGE, f"{len(payload)} bytes; at most {limit}")
            return False
        if intake.rate_per_s is not None and not self._bucket(topic_filter, topic,
                                                              intake.rate_per_s).take(
                                                                  self.clock()):
            self.refuse(topic_filter, OVER_RATE,
                        f"over {intake.rate_per_s:g} a second on {topic}")
            return False
        why = intake.check(payload) if intake.check is not None else None
        if why is not None:
            self.refuse(topic_filter, why, why)
            return False
        return True

    def refuse(self, topic_filter: str, reason: str, detail: str) -> None:
        """Counts a refusal; logs the first of an episode, then a count every LOG_EVERY_S."""
        key = (topic_filter, reason)
        with self._lock:
            self._refused[key] += 1
            total = self._refused[key]
        self._episodes.note(key, total, "refused", "refused a message on %s: %s",
                            topic_filter, detail)

    def counts(self) -> dict[str, dict[str, int]]:
        """Refusals so far: {subscription: {reason: count}}."""
        with self._lock:
            items = list(self._refused.items())
        out: dict[str, dict[str, int]] = {}
        for (topic_filter, reason), n in sorted(items):
            out.setdefault(topic_filter, {})[reason] = n
        return out

    def _bucket(self, topic_filter: str, topic: str, rate_per_s: float) -> _Bucket:
        """The topic's own bucket; once a wildcard subscription has TOPICS_PER_FILTER, any
        further topic shares one (so made-up topics cannot multiply the rate or the memory)."""
        key = (topic_filter, topic)
        bucket = self._buckets.get(key)
        if bucket is None:
            mine = sum(1 for f, _ in self._buckets if f == topic_filter)
            if mine >= TOPICS_PER_FILTER:
                key = (topic_filter, "")
                bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(rate_per_s, self.clock())
        return bucket
