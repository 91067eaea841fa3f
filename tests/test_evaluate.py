"""The in-process replay behind ``streamer evaluate``, on a small real stream.

Gold labels stand in for the teacher here (so the figures test the replay's
bookkeeping and each policy's behaviour, not a model); teacher_labels is tested
with the briefly trained test teacher.
"""

from __future__ import annotations

import pytest

from streamer.commands import evaluate
from streamer.datasets import load_examples
from streamer.settings import Settings

EXAMPLES = load_examples("rotten_tomatoes", split="stream", limit=3000)
GOLD = [e.label for e in EXAMPLES]


@pytest.fixture(scope="module")
def base(quick_teacher: str) -> Settings:
    """The default student reads the test teacher's distilled embeddings."""
    return Settings(teacher_model=quick_teacher)


@pytest.mark.parametrize("policy", ["fixed", "paper", "online"])
def test_each_policy_saves_calls_and_counts_consistently(policy, base):
    s = base.replace(policy=policy, threshold=0.9, target=0.9, calibration_events=600, warmup_labels=100)
    r = evaluate.replay(EXAMPLES, GOLD, s)
    assert r.events == 3000 and 0 < r.teacher_calls < 3000
    assert r.teacher_calls_saved_pct == pytest.approx(100 * (1 - r.teacher_calls / 3000), abs=0.01)
    second_half_calls = round(1500 * (1 - r.saved_second_half_pct / 100))
    assert 0 < second_half_calls <= r.teacher_calls - (600 if policy == "paper" else 0)
    assert r.accuracy_teacher_only == 1.0  # teacher == gold here
    assert r.accuracy_cascade == r.agreement_with_teacher
    assert r.accuracy_student_only < r.accuracy_cascade
    assert (r.audits > 0) == (policy == "online")
    if policy == "paper":
        assert r.teacher_calls >= 600  # the calibration prefix is all escalated
    assert len(r.curve["events"]) == 60


def test_online_policy_lands_near_its_target_on_real_text(base):
    r = evaluate.replay(EXAMPLES, GOLD, base.replace(policy="online", target=0.9))
    assert 0.9 - 0.01 <= r.agreement_second_half <= 0.9 + 0.06  # the policy's bound errs above the target
    assert r.saved_second_half_pct > r.teacher_calls_saved_pct  # the student has learned from the first half


def test_sweep_trades_savings_for_agreement(base):
    results = evaluate.sweep(EXAMPLES[:1500], GOLD[:1500], base.replace(policy="online"), targets=(0.85, 0.95))
    low, high = results
    assert low.teacher_calls_saved_pct > high.teacher_calls_saved_pct
    assert low.agreement_with_teacher < high.agreement_with_teacher
    assert "saved %" in evaluate.format_table(results)


def test_plots_are_written(tmp_path, base):
    pytest.importorskip("matplotlib")
    r = evaluate.replay(EXAMPLES[:500], GOLD[:500], base)
    evaluate.plot_run(r, tmp_path / "run.png", "t")
    evaluate.plot_sweep([r, r], tmp_path / "sweep.png", "t")
    assert (tmp_path / "run.png").stat().st_size > 1000 and (tmp_path / "sweep.png").stat().st_size > 1000


def test_teacher_labels_are_computed_once_and_cached(quick_teacher, tmp_path):
    few = EXAMPLES[:40]
    labels = evaluate.teacher_labels(quick_teacher, few, tmp_path, progress=False)
    assert len(labels) == 40 and set(labels) <= {"fresh", "rotten"}
    assert len(list(tmp_path.glob("teacher-labels-*.json"))) == 1
    assert evaluate.teacher_labels(quick_teacher, few, tmp_path, progress=False) == labels


def test_seeds_report_mean_spread_and_how_many_held_the_target(base):
    runs = [evaluate.replay(EXAMPLES[:1500], GOLD[:1500], base.replace(policy="online", target=0.9, seed=s))
            for s in range(3)]
    [summary] = evaluate.over_seeds(runs)
    assert summary["seeds"] == 3 and summary["student"] == "embed-nb" and summary["target"] == 0.9
    assert summary["saved_pct_mean"] == pytest.approx(sum(r.teacher_calls_saved_pct for r in runs) / 3, abs=0.01)
    assert summary["held_target"] == sum(r.agreement_with_teacher >= 0.9 for r in runs)
    assert summary["saved_second_half_pct_mean"] == pytest.approx(
        sum(r.saved_second_half_pct for r in runs) / 3, abs=0.01)
    assert "held the target in" in evaluate.format_seeds([summary])


def test_a_users_file_is_split_as_the_shipped_datasets_are(tmp_path, quick_teacher, capsys):
    import csv

    import orjson

    from streamer.cli import main

    path = tmp_path / "mine.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows([ex.text, ex.label] for ex in EXAMPLES[:300])
    teacher_rows = {e.text for e in load_examples(file=path, split="teacher")}
    stream_rows = {e.text for e in load_examples(file=path, split="stream")}
    assert len(teacher_rows) == 120 and len(stream_rows) == 180 and not teacher_rows & stream_rows
    code = main(["evaluate", "--file", str(path), "--teacher-model", quick_teacher, "--seeds", "2", "--json",
                 "--data-dir", str(tmp_path / "data"), "--warmup-labels", "20"])
    out = capsys.readouterr().out
    report = orjson.loads(out.strip().splitlines()[-1])
    assert code == 0 and "replaying the stream split" in out and "180 rows" in out
    assert [r["events"] for r in report["results"]] == [180, 180] and report["over_seeds"][0]["seeds"] == 2


def test_a_snapshot_delay_routes_with_the_learners_last_snapshot(base):
    s = base.replace(policy="online", target=0.9, warmup_labels=100)
    delayed = evaluate.replay(EXAMPLES[:1500], GOLD[:1500], s, snapshot_events=500)
    assert delayed.snapshot_events == 500
    assert evaluate.replay(EXAMPLES[:1500], GOLD[:1500], s, snapshot_events=500).summary() == delayed.summary()
    # the learner publishes as its student leaves warm-up (100 labels), not only every 500 events: the student
    # answers events before the 500th, after the first 100 all went to the teacher
    assert delayed.teacher_calls >= 100 and delayed.curve["teacher_call_share"][1] == 1.0
    assert delayed.curve["teacher_call_share"][9] < 1.0
    # and only from snapshots: with one snapshot in the whole stream (the one at warm-up's end) the student never
    # gets better than it was then
    frozen = evaluate.replay(EXAMPLES[:1500], GOLD[:1500], s, snapshot_events=10**9)
    assert frozen.accuracy_student_only <= delayed.accuracy_student_only


def test_a_learner_always_catching_up_learns_64_labels_a_step(base):
    """``STREAMER_CATCH_UP_LABELS=0``: the worst case of a learner behind its labels is replayed (64 labels a step);
    it still learns, reproducibly, and differs from a learner keeping up."""
    s = base.replace(policy="online", target=0.9, warmup_labels=100, catch_up_labels=0)
    behind = evaluate.replay(EXAMPLES[:1500], GOLD[:1500], s, snapshot_events=250)
    assert evaluate.replay(EXAMPLES[:1500], GOLD[:1500], s, snapshot_events=250).summary() == behind.summary()
    keeping_up = evaluate.replay(EXAMPLES[:1500], GOLD[:1500], s.replace(catch_up_labels=2000), snapshot_events=250)
    assert behind.summary() != keeping_up.summary()
    assert behind.curve["teacher_call_share"][-1] < 1.0 and behind.accuracy_student_only > 0.6
