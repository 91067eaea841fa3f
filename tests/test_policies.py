"""Threshold policies on synthetic streams whose student confidence is known.

In the synthetic stream the student's confidence c is uniform on [0.5, 1] and the
student agrees with the teacher with probability exactly c (perfect calibration),
so the cascade's agreement at threshold t is known in closed form:
2(t - 0.5) + (1 - t^2), which equals 0.90 at t = 1 - sqrt(0.1) = 0.684.
"""

import math
import random

import pytest

from streamer.triage.policies import FixedPolicy, OnlinePolicy, PaperPolicy, build_policy


def simulate(policy, events: int, seed: int = 1) -> list[tuple[bool, bool]]:
    """Route a synthetic stream; returns (answered_by_student, agrees_with_teacher) per event."""
    rng = random.Random(seed)
    out = []
    for _ in range(events):
        conf = rng.uniform(0.5, 1.0)
        agree = rng.random() < conf
        policy.record(conf)
        if conf < policy.threshold:
            policy.observe(conf, agree, 1.0, "low_confidence")
            out.append((False, True))
        elif policy.audit_rate and rng.random() < policy.audit_rate:
            policy.observe(conf, agree, 1.0 / policy.audit_rate, "audit")
            out.append((False, True))
        else:
            out.append((True, agree))
    return out


def test_fixed_policy_never_moves():
    p = FixedPolicy(0.8)
    result = simulate(p, 2000)
    assert p.threshold == 0.8 and p.audit_rate == 0.0
    answered = sum(a for a, _ in result) / len(result)
    assert answered == pytest.approx(0.4, abs=0.04)  # P(c >= 0.8) = 0.4


def test_paper_policy_escalates_the_prefix_then_picks_the_closed_form_threshold():
    p = PaperPolicy(target=0.9, calibration_events=4000)
    result = simulate(p, 6000)
    assert all(not answered for answered, _ in result[:4000])
    assert p.calibrated
    assert p.threshold == pytest.approx(1 - math.sqrt(0.1), abs=0.05)
    tail = result[4000:]
    assert sum(agree for _, agree in tail) / len(tail) == pytest.approx(0.9, abs=0.02)


def second_half_agreement(target: float, seed: int, events: int = 30000,
                          z: float = 0.0) -> tuple[float, float, OnlinePolicy]:
    """Realised agreement and savings over the second half; ``z`` 0 is the plain estimate (no bound). The synthetic
    student never drifts, so the policy keeps a longer window of labels than its default."""
    p = OnlinePolicy(target=target, audit_rate=0.05, initial_threshold=0.95, z=z, label_window=3000)
    second = simulate(p, events, seed=seed)[events // 2:]
    realised = sum(agree for _, agree in second) / len(second)
    saved = sum(answered for answered, _ in second) / len(second)
    return realised, saved, p


def test_online_policy_holds_the_target_over_the_second_half():
    runs = [second_half_agreement(0.9, seed) for seed in range(4)]
    realised = [r for r, _, _ in runs]
    assert sum(realised) / len(realised) == pytest.approx(0.9, abs=0.01)
    assert all(abs(r - 0.9) < 0.02 for r in realised)
    for _, saved, p in runs:
        # near the best possible savings at this target: P(c >= 0.684) = 0.632, minus the audits
        assert saved > 0.55
        assert p.threshold == pytest.approx(1 - math.sqrt(0.1), abs=0.05)
        assert p.estimated_agreement() == pytest.approx(0.9, abs=0.02)


@pytest.mark.parametrize("target", [0.85, 0.95])
def test_online_policy_follows_other_targets(target):
    realised = [second_half_agreement(target, seed)[0] for seed in range(4)]
    assert sum(realised) / len(realised) == pytest.approx(target, abs=0.01)
    assert all(abs(r - target) < 0.02 for r in realised)


@pytest.mark.parametrize("target", [0.85, 0.9, 0.95])
def test_the_default_confidence_bound_keeps_the_policy_at_or_above_its_target(target):
    """The default policy (z = 0.5) answers only where a lower bound of the estimate holds the target: it lands
    at or a little above the target, never below, and saves less than the plain estimate."""
    bounded = [second_half_agreement(target, seed, z=OnlinePolicy(target).z) for seed in range(4)]
    plain = [second_half_agreement(target, seed) for seed in range(4)]
    realised = [r for r, _, _ in bounded]
    assert all(r >= target - 0.005 for r in realised), realised
    assert sum(realised) / len(realised) <= target + 0.03
    assert sum(s for _, s, _ in bounded) < sum(s for _, s, _ in plain)


def test_online_policy_needs_an_audit_rate():
    with pytest.raises(ValueError):
        OnlinePolicy(target=0.9, audit_rate=0.0)


def test_build_policy_by_name():
    assert build_policy("fixed", threshold=0.7, target=0.9, audit_rate=0.05, calibration_events=10).threshold == 0.7
    assert build_policy("online", threshold=0.7, target=0.9, audit_rate=0.05, calibration_events=10).audit_rate == 0.05
    with pytest.raises(ValueError):
        build_policy("nope", threshold=0.7, target=0.9, audit_rate=0.05, calibration_events=10)
