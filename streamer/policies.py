"""Threshold policies: when the student answers and when it asks the teacher.

Every policy sees each teacher label together with the student's guess made when
the event was routed (``observe``) and exposes the current ``threshold``.

* :class:`FixedPolicy` keeps a constant threshold.
* :class:`PaperPolicy` is the reference method (Khalili et al. 2022): escalate a
  labelled prefix, keep the threshold (0..1 in steps of 0.005) whose cascade
  agreement with the teacher on the last 30 % of the prefix is nearest the target.
* :class:`OnlinePolicy` audits a random share of the events the student would
  answer, estimates the cascade's agreement with the teacher for every candidate
  threshold, and keeps the lowest threshold whose estimate holds the target.

>>> p = OnlinePolicy(target=0.9, audit_rate=0.1, initial_threshold=0.9, update_every=1)
>>> for conf, agree in [(0.95, True)] * 90 + [(0.6, False)] * 10:
...     p.observe(conf, agree, weight=1.0, reason="low_confidence")
>>> p.threshold
0.95
>>> round(p.estimated_agreement(0.6), 2)
0.9
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

REASON_WARMUP = "warmup"
REASON_LOW_CONFIDENCE = "low_confidence"
REASON_AUDIT = "audit"
#: Escalations whose student guess says nothing about the current student.
UNINFORMATIVE_REASONS = frozenset({REASON_WARMUP})


class ThresholdPolicy(Protocol):
    name: str

    @property
    def threshold(self) -> float: ...

    @property
    def audit_rate(self) -> float: ...

    def observe(self, confidence: float, agree: bool, weight: float, reason: str) -> None:
        """One teacher label: the student's confidence at routing time and whether it agreed."""


class FixedPolicy:
    """A constant threshold, no audit."""

    name = "fixed"

    def __init__(self, threshold: float) -> None:
        self._threshold = threshold

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def audit_rate(self) -> float:
        return 0.0

    def observe(self, confidence: float, agree: bool, weight: float, reason: str) -> None:
        return None


class PaperPolicy:
    """The reference method on a labelled prefix of ``calibration_events`` labels.

    While calibrating every event is escalated (threshold above 1). The student's
    guesses on the last ``holdout`` share of the prefix pick the threshold.
    """

    name = "paper"
    GRID = tuple(round(i * 0.005, 3) for i in range(201))

    def __init__(self, target: float, calibration_events: int = 1000, holdout: float = 0.3) -> None:
        self.target = target
        self.calibration_events = calibration_events
        self.holdout_start = int(calibration_events * (1 - holdout))
        self.seen = 0
        self.holdout: list[tuple[float, bool]] = []
        self._threshold = 1.01

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def audit_rate(self) -> float:
        return 0.0

    @property
    def calibrated(self) -> bool:
        return self.seen >= self.calibration_events

    def observe(self, confidence: float, agree: bool, weight: float, reason: str) -> None:
        if self.calibrated:
            return
        if self.seen >= self.holdout_start and reason not in UNINFORMATIVE_REASONS:
            self.holdout.append((confidence, agree))
        self.seen += 1
        if self.calibrated:
            self._threshold = self.pick_threshold(self.holdout, self.target)

    @classmethod
    def pick_threshold(cls, holdout: list[tuple[float, bool]], target: float) -> float:
        """The grid threshold whose cascade agreement on ``holdout`` is nearest ``target``.

        >>> PaperPolicy.pick_threshold([(0.99, True), (0.7, False), (0.8, True), (0.95, True)], 0.9)
        0.705
        """
        if not holdout:
            return 1.01
        best, best_gap = 1.0, float("inf")
        n = len(holdout)
        for t in cls.GRID:  # ascending: ties keep the lowest threshold (most savings)
            wrong = sum(1 for conf, agree in holdout if conf >= t and not agree)
            gap = abs((1 - wrong / n) - target)
            if gap < best_gap - 1e-12:
                best, best_gap = t, gap
        return best


class OnlinePolicy:
    """Holds the cascade's estimated agreement with the teacher at ``target``.

    Each observation carries an inverse-probability ``weight``: 1 for an event that
    was escalated for low confidence (all of those are labelled), ``1 / audit_rate``
    for an audited event (it stands for all the unaudited answers like it). With
    those weights, for a candidate threshold ``t`` the share of events the student
    would answer wrongly is ``sum(w, conf >= t, disagree) / sum(w)``, so the policy
    can pick the lowest threshold whose estimated agreement stays at the target.
    """

    name = "online"

    def __init__(self, target: float, audit_rate: float = 0.05, initial_threshold: float = 0.9,
                 window: int = 2000, update_every: int = 20, margin: float = 0.0) -> None:
        if not 0.0 < audit_rate <= 1.0:
            raise ValueError("the online policy needs an audit rate in (0, 1]")
        self.target = target
        self.margin = margin
        self._audit_rate = audit_rate
        self._threshold = initial_threshold
        self.window: deque[tuple[float, bool, float]] = deque(maxlen=window)
        self.update_every = update_every
        self._since_update = 0

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def audit_rate(self) -> float:
        return self._audit_rate

    def observe(self, confidence: float, agree: bool, weight: float, reason: str) -> None:
        if reason in UNINFORMATIVE_REASONS:
            return
        self.window.append((confidence, agree, weight))
        self._since_update += 1
        if self._since_update >= self.update_every:
            self._since_update = 0
            self._threshold = self.pick_threshold()

    def estimated_agreement(self, threshold: float | None = None) -> float | None:
        """Estimated cascade agreement with the teacher at ``threshold`` (current by default)."""
        t = self._threshold if threshold is None else threshold
        total = sum(w for _, _, w in self.window)
        if total == 0:
            return None
        wrong = sum(w for conf, agree, w in self.window if conf >= t and not agree)
        return 1.0 - wrong / total

    def pick_threshold(self) -> float:
        """The lowest observed confidence at which the estimated agreement holds the target."""
        if not self.window:
            return self._threshold
        goal = self.target + self.margin
        ordered = sorted(self.window, key=lambda r: r[0], reverse=True)
        total = sum(w for _, _, w in ordered)
        allowed_wrong = (1.0 - goal) * total
        wrong = 0.0
        best = 1.0 + 1e-9  # answer nothing if even the most confident guesses are too often wrong
        i = 0
        while i < len(ordered):
            conf = ordered[i][0]
            # take every record with this same confidence together
            j = i
            while j < len(ordered) and ordered[j][0] == conf:
                if not ordered[j][1]:
                    wrong += ordered[j][2]
                j += 1
            if wrong > allowed_wrong:
                break
            best = conf
            i = j
        return best


def build_policy(name: str, *, threshold: float, target: float, audit_rate: float,
                 calibration_events: int) -> ThresholdPolicy:
    """The policy named ``name`` (``fixed``, ``paper`` or ``online``)."""
    if name == "fixed":
        return FixedPolicy(threshold)
    if name == "paper":
        return PaperPolicy(target, calibration_events)
    if name == "online":
        return OnlinePolicy(target, audit_rate, initial_threshold=threshold)
    raise ValueError(f"unknown policy {name!r}")


__all__ = ["FixedPolicy", "PaperPolicy", "OnlinePolicy", "ThresholdPolicy", "build_policy"]
