"""The localizer's memory: per target, a bounded window of recent outcomes, and what that window says.

Two horizons, on purpose. Whether a target is *failing now* looks at the last few probes only, so a verdict
clears within three probe intervals of a fix. How *often* it fails (the ratio that separates intermittent
loss from a steady blackhole, and one lost probe from a pattern) looks at the whole window.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from enum import StrEnum

from ..model import AnyTarget, ProbeResult, Reason

WINDOW_PROBES = 12  # outcomes kept per target: long enough to see a ratio, short enough to forget a fault
WINDOW_MIN_SECONDS = 60.0  # and never fewer seconds than this (targets with short intervals)
RECENT_PROBES = 3  # "failing now": one of the last three probes failed; three clean probes clear it
DOWN_STREAK = 2  # "down": at least the last two probes failed, so one lost probe is never a diagnosis
FLAKY_MIN_FAILURES = 2  # "flaky": this many failures in the window, one of them recent
STALE_INTERVALS = 3  # a target not probed for this many intervals (plus its timeout) says nothing any more

# Reasons that mean "no answer came back": what a blackhole, a dropped packet or a dead overlay looks like,
# as opposed to an answer we did not like (refused, an HTTP or DNS error code).
NO_ANSWER = frozenset(
    {Reason.TIMEOUT, Reason.CONNECT_TIMEOUT, Reason.UNREACHABLE, Reason.RESPONSE_TIMEOUT, Reason.BODY_TIMEOUT}
)
# Reasons that are an answer from the far end: a packet got there and something came back. A verdict about a
# dropped path may not rest on these; a verdict about a dead or wrong server needs them (docs/diagnosis.md,
# principle 1). HTTP statuses are answers from the HTTP server; what they say about *its* upstream is read
# from the code (504: the upstream was silent or slow; 502/503: the upstream refused or has no endpoint).
ANSWERS = frozenset(
    {
        Reason.REFUSED,
        Reason.RESET,
        Reason.BAD_STATUS,
        Reason.NXDOMAIN,
        Reason.SERVFAIL,
        Reason.DNS_REFUSED,
        Reason.DNS_ERROR,
        Reason.NO_ANSWER,
        Reason.WRONG_ANSWER,
    }
)


class Health(StrEnum):
    OK = "ok"  # no failure among the recent probes
    FLAKY = "flaky"  # failing now and then: a recent failure and more than one in the window
    DOWN = "down"  # the last probes all failed
    PENDING = "pending"  # too few (or too old) probes to say


@dataclass(frozen=True)
class Sample:
    """One probe outcome, reduced to what the rules look at."""

    at: float  # Unix time the result arrived
    ok: bool
    reason: Reason
    duration: float
    detail: str = ""
    syn_retransmits: int | None = None
    http_status: int | None = None
    body_bytes: int | None = None

    @staticmethod
    def of(result: ProbeResult, at: float) -> Sample:
        return Sample(
            at=at,
            ok=result.ok,
            reason=result.reason,
            duration=result.duration,
            detail=result.detail,
            syn_retransmits=result.tcp_info.syn_retransmits if result.tcp_info is not None else None,
            http_status=result.http_status,
            body_bytes=result.body_bytes,
        )


@dataclass(frozen=True)
class TargetStatus:
    """A target and what its window says now."""

    target: AnyTarget
    health: Health
    samples: tuple[Sample, ...]  # oldest first, only the ones still inside the window

    @property
    def failing(self) -> bool:
        return self.health in (Health.DOWN, Health.FLAKY)

    @property
    def ok(self) -> bool:
        return self.health is Health.OK

    @property
    def failures(self) -> int:
        return sum(not s.ok for s in self.samples)

    @property
    def clean(self) -> bool:
        """Probed, and not a single failure in the whole window: the strict contrast for intermittent rules."""
        return bool(self.samples) and self.health is not Health.PENDING and self.failures == 0

    @property
    def last(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    @property
    def failure_reasons(self) -> Counter[Reason]:
        return Counter(s.reason for s in self.samples if not s.ok)

    @property
    def bout_failure_reasons(self) -> Counter[Reason]:
        """Why the probes of the current bout failed (since `failing_since`): an earlier, healed fault's failures
        still in the window say nothing about this one (found in the lab: dns-down's `refused` kept in CoreDNS's
        window made the next fault, overlay-down, look like a dead CoreDNS for a moment)."""
        since = self.failing_since
        if since is None:
            return Counter()
        return Counter(s.reason for s in self.samples if not s.ok and s.at >= since)

    @property
    def no_answer(self) -> bool:
        """Every failure of the current bout was silence (timeouts, unreachable), not an answer — or the target
        is down now with nothing but silence since its last success: an answer earlier in the bout, then a
        success, then silence is a second fault, and what the target says now is silence (found in the lab: a
        peer exporter refusing while it started, then clusterip-nat, left the exporter Service's ClusterIP
        `unknown` next to clusterip_nat_broken)."""
        if all(r in NO_ANSWER for r in self.bout_failure_reasons):
            return True
        return self.health is Health.DOWN and all(r in NO_ANSWER for r in self.streak_reasons)

    @property
    def streak_reasons(self) -> list[Reason]:
        """Why the probes since the last success failed (newest first)."""
        reasons = []
        for sample in reversed(self.samples):
            if sample.ok:
                break
            reasons.append(sample.reason)
        return reasons

    @property
    def recent_failure_reasons(self) -> Counter[Reason]:
        """Why the last RECENT_PROBES probes failed: what the target says *now* (a probe in flight when an app
        was stopped, or a server restarted, may have ended otherwise)."""
        return Counter(s.reason for s in self.samples[-RECENT_PROBES:] if not s.ok)

    @property
    def answered(self) -> bool:
        """Every failure of the current bout was an answer (refused, an HTTP or DNS error, a wrong record)."""
        return all(r in ANSWERS for r in self.bout_failure_reasons)

    def failed_since(self, since: float) -> bool:
        return any(not s.ok and s.at >= since for s in self.samples)

    def works_since(self, since: float) -> bool:
        """Healthy, probed successfully since ``since``, and no failure since: the strict contrast "this path
        works". A contrast not yet probed since the failures began proves nothing (found in the lab: while a fault
        set in, a Service target had failed twice before its pods' next probe, and their clean past was read as
        "the pods answer")."""
        return (
            self.health is Health.OK
            and any(s.ok and s.at >= since for s in self.samples)
            and not self.failed_since(since)
        )

    @property
    def syn_retransmits(self) -> int:
        return sum(s.syn_retransmits or 0 for s in self.samples)

    @property
    def failing_since(self) -> float | None:
        """When the current bout of failures began: the first failure after the last clean run of
        RECENT_PROBES successes (the run that clears a verdict). Failures before that run belong to an
        earlier, healed fault and must not be read as part of this one."""
        since = None
        clean_run = RECENT_PROBES  # the window's start counts as clean
        for sample in self.samples:
            if sample.ok:
                clean_run += 1
                continue
            if since is None or clean_run >= RECENT_PROBES:
                since = sample.at
            clean_run = 0
        return since

    @property
    def typical_ok_seconds(self) -> float | None:
        durations = sorted(s.duration for s in self.samples if s.ok)
        return durations[len(durations) // 2] if durations else None


def classify(samples: tuple[Sample, ...]) -> Health:
    if not samples:
        return Health.PENDING
    streak = 0
    for sample in reversed(samples):
        if sample.ok:
            break
        streak += 1
    if streak >= DOWN_STREAK:
        return Health.DOWN
    recent = samples[-RECENT_PROBES:]
    if any(not s.ok for s in recent) and _bout_failures(samples) >= FLAKY_MIN_FAILURES:
        return Health.FLAKY
    if streak == 0:
        return Health.OK
    # one failure after a clean run: not a diagnosis yet, not healthy either
    return Health.PENDING if len(samples) < DOWN_STREAK else Health.OK


def _bout_failures(samples: tuple[Sample, ...]) -> int:
    """Failures in the current bout: since the last clean run of RECENT_PROBES successes. Failures of an earlier,
    healed fault still in the window must not make one new failure look like a pattern (found in the lab: one
    lost probe right after a healed fault was called flaky at once, before its contrasts had been probed)."""
    count = 0
    clean_run = 0
    for sample in samples:
        if sample.ok:
            clean_run += 1
            continue
        count = 1 if clean_run >= RECENT_PROBES else count + 1
        clean_run = 0
    return count


class TargetWindow:
    """The bounded history of one target. Not thread-safe: the localizer holds the lock."""

    def __init__(self, target: AnyTarget) -> None:
        self.target = target
        self._samples: deque[Sample] = deque(maxlen=WINDOW_PROBES)

    def add(self, sample: Sample) -> None:
        self._samples.append(sample)

    def status(self, now: float) -> TargetStatus:
        span = max(WINDOW_MIN_SECONDS, WINDOW_PROBES * self.target.interval)
        samples = tuple(s for s in self._samples if now - s.at <= span)
        stale_after = STALE_INTERVALS * self.target.interval + self.target.timeout
        if samples and now - samples[-1].at > stale_after:
            return TargetStatus(self.target, Health.PENDING, samples)
        return TargetStatus(self.target, classify(samples), samples)
