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
>>> for conf, agree in [(0.95, True)] * 85 + [(0.6, False)] * 15:
...     p.record(conf)
...     p.observe(conf, agree, weight=1.0, reason="low_confidence")
>>> p.threshold, p.estimated_agreement()
(0.95, 1.0)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Protocol

import numpy as np

REASON_WARMUP = "warmup"
#: warm-up escalations of a warm-started student: every event goes to the teacher, and its guesses count
REASON_CALIBRATION = "calibration"
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

    def record(self, confidence: float) -> None:
        """The student's confidence for one routed event (after warm-up)."""

    def observe(self, confidence: float, agree: bool, weight: float, reason: str) -> None:
        """One teacher label: the student's confidence at routing time and whether it agreed."""

    def observe_many(self, observations: Iterable[tuple[float, bool, float, str]]) -> None:
        """:meth:`observe` for a batch of labels, in order (a policy may refit once, at its end)."""


class BasePolicy:
    """The shared plumbing: a current threshold, no audit, nothing learned by default."""

    name = "base"
    _threshold: float

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def audit_rate(self) -> float:
        return 0.0

    def record(self, confidence: float) -> None:
        return None

    def observe(self, confidence: float, agree: bool, weight: float, reason: str) -> None:
        return None

    def observe_many(self, observations: Iterable[tuple[float, bool, float, str]]) -> None:
        for confidence, agree, weight, reason in observations:
            self.observe(confidence, agree, weight, reason)


class FixedPolicy(BasePolicy):
    """A constant threshold, no audit."""

    name = "fixed"

    def __init__(self, threshold: float) -> None:
        self._threshold = threshold


class PaperPolicy(BasePolicy):
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


class OnlinePolicy(BasePolicy):
    """Holds the cascade's estimated agreement with the teacher at ``target``.

    The student reports the confidence of every event it routes (``record``), and
    each teacher label comes back with the student's routed guess (``observe``).
    Labels of low-confidence escalations cover confidences below the threshold;
    a random audit of ``audit_rate`` of the would-be answers covers those above.
    Every label carries an inverse-probability ``weight`` (1, or ``1/audit_rate``
    for an audit), so a weighted, monotone (isotonic) fit over confidence bins
    estimates the student's agreement at each confidence level. The expected
    agreement at a candidate threshold is then the mean over recent events of
    "escalated, or answered and right", and the policy keeps the lowest threshold
    whose expected agreement holds the target.
    """

    name = "online"
    z = 0.0  # policies checkpointed before the bound existed

    def __init__(self, target: float, audit_rate: float = 0.05, initial_threshold: float = 0.9,
                 window: int = 5000, label_window: int = 1500, bins: int = 50, update_every: int = 50,
                 margin: float = 0.0, z: float = 0.75) -> None:
        if not 0.0 < audit_rate <= 1.0:
            raise ValueError("the online policy needs an audit rate in (0, 1]")
        self.target = target
        self.margin = margin
        self.z = z
        self.bins = bins
        self._audit_rate = audit_rate
        self._threshold = initial_threshold
        self.confidences: deque[float] = deque(maxlen=window)
        self.labelled: deque[tuple[float, bool, float]] = deque(maxlen=label_window)
        self.update_every = update_every
        self._since_update = 0
        self._estimate: float | None = None

    @property
    def audit_rate(self) -> float:
        return self._audit_rate

    def record(self, confidence: float) -> None:
        """The student's confidence for one routed event (after warm-up)."""
        self.confidences.append(confidence)

    def observe(self, confidence: float, agree: bool, weight: float, reason: str) -> None:
        self.observe_many(((confidence, agree, weight, reason),))

    def observe_many(self, observations: Iterable[tuple[float, bool, float, str]]) -> None:
        """The labels kept; the threshold refitted once ``update_every`` labels have come since the last fit (for a
        batch, once at its end: a learner's batch of 256 refits once instead of five times, on the same window)."""
        for confidence, agree, weight, reason in observations:
            if reason not in UNINFORMATIVE_REASONS:
                self.labelled.append((confidence, agree, weight))
                self._since_update += 1
        if self._since_update >= self.update_every:
            self._since_update = 0
            self._threshold, self._estimate = self.pick_threshold()

    def estimated_agreement(self) -> float | None:
        """The expected cascade agreement with the teacher at the current threshold."""
        return self._estimate

    def calibration(self) -> tuple[list[float], list[float], list[int]]:
        """Bin lower edges, the fitted agreement of each bin, and the recent events in each bin."""
        edges, fitted, counts, _, _ = self._bins()
        return edges, fitted, counts

    def _bins(self) -> tuple[list[float], list[float], list[int], list[float], list[float]]:
        """:meth:`calibration` plus each bin's sum of label weights and of their squares."""
        confs = np.sort(np.fromiter(self.confidences, dtype=np.float64, count=len(self.confidences)))
        n = len(confs)
        edges = np.unique(confs[(np.arange(self.bins) * n) // self.bins]) if n else np.zeros(1)
        edges[0] = 0.0
        counts = np.bincount(np.searchsorted(edges, confs, side="right") - 1, minlength=len(edges))
        labelled = np.array(self.labelled, dtype=np.float64).reshape(-1, 3)  # confidence, agreed, weight
        where = np.searchsorted(edges, labelled[:, 0], side="right") - 1
        weights = labelled[:, 2]
        total_w = np.bincount(where, weights=weights, minlength=len(edges)).tolist()
        square_w = np.bincount(where, weights=weights * weights, minlength=len(edges)).tolist()
        agree_w = np.bincount(where, weights=weights * labelled[:, 1], minlength=len(edges)).tolist()
        return edges.tolist(), isotonic(agree_w, total_w), counts.tolist(), total_w, square_w

    def pick_threshold(self) -> tuple[float, float | None]:
        """The lowest bin edge whose expected agreement holds the target, and that agreement."""
        if not self.confidences or not self.labelled:
            return self._threshold, None
        edges, fitted, counts, total_w, square_w = self._bins()
        n = sum(counts)
        goal = self.target + self.margin
        wrong = answered = weights = squares = 0.0
        best, best_agreement = 1.0 + 1e-9, 1.0  # answer nothing if even the top bin is too often wrong
        for b in range(len(edges) - 1, -1, -1):
            wrong += counts[b] * (1.0 - fitted[b])
            answered += counts[b]
            weights += total_w[b]
            squares += square_w[b]
            agreement = 1.0 - wrong / n
            if agreement - self.z * self._error_spread(wrong, answered, weights, squares, n) < goal:
                break
            best, best_agreement = edges[b], agreement
        return best, best_agreement

    @staticmethod
    def _error_spread(wrong: float, answered: float, weights: float, squares: float, n: int) -> float:
        """Standard error of the estimated disagreement share when the events above a candidate threshold are
        answered: their error rate is estimated from labels of effective size (sum w)^2 / sum w^2 (audits
        weigh 1/audit_rate, so a few of them count for little), with one pseudo-error against zero."""
        if answered <= 0:
            return 0.0
        effective = weights * weights / squares if squares > 0 else 0.0
        rate = (wrong / answered * effective + 1.0) / (effective + 2.0)
        return answered / n * math.sqrt(rate * (1.0 - rate) / max(effective, 1.0))


def isotonic(agree_w: list[float], total_w: list[float]) -> list[float]:
    """Weighted non-decreasing fit of ``agree_w / total_w`` (pool adjacent violators); empty bins borrow.

    >>> isotonic([1, 3, 1, 0], [2, 4, 2, 0])
    [0.5, 0.6666666666666666, 0.6666666666666666, 0.6666666666666666]
    """
    blocks: list[list[float]] = []  # [sum agree, sum weight, first bin, last bin]
    for i, (a, w) in enumerate(zip(agree_w, total_w)):
        if w <= 0:
            continue
        blocks.append([a, w, i, i])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            a2, w2, _, last = blocks.pop()
            blocks[-1][0] += a2
            blocks[-1][1] += w2
            blocks[-1][3] = last
    if not blocks:
        return [1.0] * len(agree_w)
    fitted = [0.0] * len(agree_w)
    for a, w, first, last in blocks:
        for i in range(first, last + 1):
            fitted[i] = a / w
    # bins without labels take the nearest fitted bin below them (the first ones take the lowest block)
    value = blocks[0][0] / blocks[0][1]
    for i, w in enumerate(total_w):
        if fitted[i] == 0.0 and w <= 0:
            fitted[i] = value
        else:
            value = fitted[i]
    return fitted


#: The policies by name (``--policy``, ``STREAMER_POLICY``).
POLICIES = ("fixed", "paper", "online")


def build_policy(name: str, *, threshold: float, target: float, audit_rate: float,
                 calibration_events: int) -> ThresholdPolicy:
    """The policy named ``name`` (one of :data:`POLICIES`)."""
    if name == "fixed":
        return FixedPolicy(threshold)
    if name == "paper":
        return PaperPolicy(target, calibration_events)
    if name == "online":
        return OnlinePolicy(target, audit_rate, initial_threshold=threshold)
    raise ValueError(f"unknown policy {name!r}")


__all__ = ["POLICIES", "FixedPolicy", "PaperPolicy", "OnlinePolicy", "ThresholdPolicy", "build_policy"]
