"""``streamer evaluate``: replay a labelled dataset through the cascade and measure it.

The replay runs in process, for speed, through the same :class:`~streamer.triage.router.Triage`
(student, threshold policy, warm-up, audit) the student worker runs. The teacher
labels every event once (cached on disk per teacher and dataset) so teacher-only
accuracy and the cascade's true agreement with the teacher are exact. Feedback is
immediate by default: an escalated event's label is learned before the next event is
routed (a live stream learns slightly later, see ``streamer demo``). With a snapshot delay
(``--snapshot-interval S`` at ``--rate R`` events/s) the replay runs as a learner and its
predictors do (``STREAMER_LEARNING=learner``): a learner triage learns each label as it
comes, its policy seeing the stream only through the labels' weights, and the events are
routed by a copy of its last snapshot (the student, the threshold and the warm-up count of
that moment), published as the learner's :class:`~streamer.triage.snapshot.SnapshotSchedule`
says with a tick every ``S x R`` events. The learner is taken to keep up (one label a step); with
``STREAMER_CATCH_UP_LABELS=0`` it is taken to be always catching up, the worst case of a learner behind its
labels: it learns them ``catch_up_step`` at a time, one optimiser step each (those left at a tick, before it).
"""

from __future__ import annotations

import hashlib
import pickle
import statistics
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streamer.datasets import Example
from streamer.settings import Settings
from streamer.tasks import get_task
from streamer.triage import build_triage
from streamer.triage.router import Feedback, Triage
from streamer.triage.snapshot import SnapshotSchedule

SWEEP_TARGETS = tuple(round(0.85 + 0.01 * i, 2) for i in range(15))


@dataclass
class EvalResult:
    """The figures of one replay."""

    events: int
    policy: str
    target: float
    teacher_calls: int
    teacher_calls_saved_pct: float
    audits: int
    agreement_with_teacher: float
    agreement_second_half: float
    #: teacher calls saved over the second half of the stream, once the student has learned from the first
    saved_second_half_pct: float
    accuracy_cascade: float
    accuracy_teacher_only: float
    accuracy_student_only: float
    final_threshold: float
    student: str = ""
    task: str = "classify"
    #: the task's own figures (NER: entity-level F1 of cascade, teacher and student, and the cascade's relative F1)
    extra: dict[str, float | None] = field(default_factory=dict)
    curve: dict[str, list[float]] = field(default_factory=dict, repr=False)
    #: events between two snapshots of the learner (0: every label learned before the next event)
    snapshot_events: int = 0

    def figure(self, name: str) -> float | None:
        """A figure by name, whether a field or one of the task's own."""
        return self.extra[name] if name in self.extra else getattr(self, name)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("curve")
        out.update(out.pop("extra"))
        return out


def teacher_labels(teacher_model: str, examples: list[Example], cache_dir: Path, *, device: str = "auto",
                   max_length: int = 128, progress: bool = True, task: str = "classify",
                   teacher_class: str | None = None) -> list[str]:
    """The teacher's label for every example, computed once and cached on disk."""
    from streamer.models.teacher import read_meta

    meta = read_meta(Path(teacher_model)) if Path(teacher_model).is_dir() else {}
    digest = hashlib.sha256()
    digest.update(f"{teacher_model}|{meta.get('version')}|{max_length}".encode()
                  + (f"|{teacher_class}".encode() if teacher_class else b""))
    for ex in examples:
        digest.update(ex.id.encode() + b"\0" + ex.text.encode() + b"\0")
    cache = cache_dir / f"teacher-labels-{digest.hexdigest()[:20]}.json"
    if cache.is_file():
        return orjson.loads(cache.read_bytes())
    teacher = get_task(task).load_teacher(teacher_model, device=device, max_length=max_length, batch_size=64,
                                          teacher_class=teacher_class)
    labels = teacher.label_all([e.text for e in examples], progress=progress, desc="teacher labels (once, cached)")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(orjson.dumps(labels))
    return labels


#: share of the warm start's texts that may be among the replayed ones: a dataset's own duplicates (BBC News
#: repeats 41 of its teacher split's 890 articles in its stream split) stay below it, a replay of the teacher's
#: training rows (``--split all``) does not
WARM_START_MAX_OVERLAP = 0.25


def warm_start_for(settings: Settings, examples: list[Example], name: str) -> tuple[int, str]:
    """How many teacher-labelled texts a fresh student of this replay starts from, and a line that says so.
    None when ``settings.warm_start`` is off, when the teacher has none, or when over
    :data:`WARM_START_MAX_OVERLAP` of them are among the replayed texts (``--split all`` replays the teacher's
    own training rows: the student would be scored on what it learned); a few shared texts are duplicates in
    the data and are reported."""
    from streamer.models.student import StudentResources

    if not settings.warm_start:
        return 0, "student warm start: off"
    if not get_task(settings.task).warm_starts_students:
        return 0, f"student warm start: none ({settings.task} students take none)"
    start = StudentResources(settings.teacher_model_ref, settings.data_dir).warm_start()
    if start is None:
        return 0, (f"student warm start: none for this teacher (`streamer teacher distill --dataset {name}` or "
                   "`--file F` labels texts for it); the student starts from nothing")
    known = set(start.texts)
    overlap = sum(e.text in known for e in examples)
    if overlap > WARM_START_MAX_OVERLAP * len(start):
        return 0, (f"student warm start: off, {overlap} of the {len(examples)} replayed texts are among its "
                   f"{len(start)} ({start.source})")
    shared = f"; {overlap} replayed texts are also among them (duplicates in the data)" if overlap else ""
    return len(start), f"student warm start: {len(start)} texts labelled by the teacher ({start.source}{shared})"


def replay(examples: list[Example], labels: list[str], settings: Settings, *, window: int = 500,
           snapshot_events: int = 0) -> EvalResult:
    """Route every example through a fresh student and policy; learn each escalated event's teacher label (on one
    BLAS thread: one event at a time, the student's matrices are too small to share out), at once or, with
    ``snapshot_events``, all those of each stretch of that many events together at its end."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _replay(examples, labels, settings, window=window, snapshot_events=snapshot_events)


def snapshot_events_for(interval: float, rate: float) -> int:
    """Events between two snapshots taken every ``interval`` seconds of a stream of ``rate`` events/s (0: none).

    >>> snapshot_events_for(1.0, 1000.0), snapshot_events_for(0.0, 1000.0), snapshot_events_for(0.001, 10.0)
    (1000, 0, 1)
    """
    return 0 if interval <= 0 else max(1, round(interval * rate))


def snapshot_of(learner: Triage, seed: int, events: int) -> Triage:
    """What a predictor loads from the learner's snapshot taken after ``events`` events: a copy of its serving
    triage, with an audit draw of its own."""
    router = pickle.loads(pickle.dumps(learner.serving(), protocol=pickle.HIGHEST_PROTOCOL))
    router.reseed(seed * 1_000_003 + events)
    return router


def _replay(examples: list[Example], labels: list[str], settings: Settings, *, window: int,
            snapshot_events: int) -> EvalResult:
    triage = build_triage(settings)  # learns the labels (the learner, with a snapshot delay)
    router = snapshot_of(triage, settings.seed, 0) if snapshot_events else triage  # routes the events
    schedule = SnapshotSchedule(settings.warmup_labels)
    schedule.published_at(0)  # the learner's first snapshot, before any event
    n = len(examples)
    calls = audits = agree = correct = student_correct = teacher_correct = agree_second = calls_second = 0
    recent_calls: deque[int] = deque(maxlen=window)
    recent_agree: deque[int] = deque(maxlen=window)
    curve: dict[str, list[float]] = {"events": [], "teacher_call_share": [], "agreement": [], "threshold": []}
    answers: list[str] = []
    student_answers: list[str] = []
    catching_up = bool(snapshot_events) and settings.catch_up_labels == 0
    waiting: list[Feedback] = []  # a learner catching up: labels until a step's worth (or the tick) has come
    for i, (ex, teacher_label) in enumerate(zip(examples, labels)):
        route = router.route(ex.text)
        if route.escalate:
            answer = teacher_label
            calls += 1
            audits += route.reason == "audit"
            feedback = Feedback(ex.text, teacher_label, route.label, route.confidence, route.weight, route.reason)
            if catching_up:
                waiting.append(feedback)
            else:
                triage.learn_many([feedback], record_routes=bool(snapshot_events))
        else:
            answer = route.label
        if waiting and (len(waiting) >= settings.catch_up_step or (i + 1) % snapshot_events == 0 or i + 1 == n):
            triage.learn_many(waiting, record_routes=True, step=settings.catch_up_step)
            waiting = []
        version = triage.student.version
        if snapshot_events and (schedule.early(version) or ((i + 1) % snapshot_events == 0 and schedule.due(version))):
            router = snapshot_of(triage, settings.seed, i + 1)
            schedule.published_at(version)
        answers.append(answer)
        student_answers.append(route.label or "")
        agrees = answer == teacher_label
        agree += agrees
        if i >= n // 2:
            agree_second += agrees
            calls_second += route.escalate
        correct += answer == ex.label
        student_correct += route.label == ex.label
        teacher_correct += teacher_label == ex.label
        recent_calls.append(route.escalate)
        recent_agree.append(agrees)
        if (i + 1) % 50 == 0 or i + 1 == n:
            curve["events"].append(i + 1)
            curve["teacher_call_share"].append(sum(recent_calls) / len(recent_calls))
            curve["agreement"].append(sum(recent_agree) / len(recent_agree))
            curve["threshold"].append(min(router.policy.threshold, 1.0))
    task = get_task(settings.task)
    extra = task.evaluation_figures([ex.label for ex in examples], answers, labels,
                                    [a or task.blank_answer(ex.text) for a, ex in zip(student_answers, examples)])
    return EvalResult(
        student=settings.student_kind, task=task.name, extra=extra,
        events=n, policy=settings.policy, target=settings.target, teacher_calls=calls,
        teacher_calls_saved_pct=round(100.0 * (1 - calls / n), 2), audits=audits,
        agreement_with_teacher=round(agree / n, 4), agreement_second_half=round(agree_second / (n - n // 2), 4),
        saved_second_half_pct=round(100.0 * (1 - calls_second / (n - n // 2)), 2),
        accuracy_cascade=round(correct / n, 4), accuracy_teacher_only=round(teacher_correct / n, 4),
        accuracy_student_only=round(student_correct / n, 4), final_threshold=round(router.policy.threshold, 4),
        curve=curve, snapshot_events=snapshot_events,
    )


def sweep(examples: list[Example], labels: list[str], settings: Settings,
          targets: tuple[float, ...] = SWEEP_TARGETS, snapshot_events: int = 0) -> list[EvalResult]:
    """One replay per target: the savings/agreement trade-off."""
    return [replay(examples, labels, settings.replace(target=t), snapshot_events=snapshot_events) for t in targets]


def over_seeds(results: list[EvalResult]) -> list[dict[str, Any]]:
    """Per student kind and target: mean and spread of savings and agreement over the seeds' replays, and how
    many seeds held the target (realised agreement at or above it)."""
    groups: dict[tuple[str, float], list[EvalResult]] = {}
    for r in results:
        groups.setdefault((r.student, r.target), []).append(r)
    out = []
    for (student, target), runs in groups.items():
        saved = [r.teacher_calls_saved_pct for r in runs]
        agreement = [r.agreement_with_teacher for r in runs]
        second_half = [r.saved_second_half_pct for r in runs]
        out.append({"student": student, "target": target, "seeds": len(runs),
                    "saved_pct_mean": round(statistics.fmean(saved), 2),
                    "saved_pct_stdev": round(statistics.pstdev(saved), 2),
                    "saved_second_half_pct_mean": round(statistics.fmean(second_half), 2),
                    "agreement_mean": round(statistics.fmean(agreement), 4),
                    "agreement_min": min(agreement),
                    "held_target": sum(a >= target for a in agreement)})
    return out


def format_seeds(summaries: list[dict[str, Any]]) -> str:
    """The :func:`over_seeds` figures as lines of text."""
    return "\n".join(f"{s['student']} @ target {s['target']:.2f} over {s['seeds']} seeds: saved {s['saved_pct_mean']:.1f} % "
                     f"(± {s['saved_pct_stdev']:.1f}; second half {s['saved_second_half_pct_mean']:.1f} %), "
                     f"agreement {s['agreement_mean']:.4f} (min {s['agreement_min']:.4f}), "
                     f"held the target in {s['held_target']} of {s['seeds']}" for s in summaries)


def format_table(results: list[EvalResult]) -> str:
    """One row per result; the quality columns are the task's (accuracy, or entity F1 for NER)."""
    columns = get_task(results[0].task).table_columns if results else ()
    head = (f"{'student':10} {'policy':7} {'target':>6} {'saved %':>8} {'saved 2nd':>9} {'agreement':>9} {'agr. 2nd':>8} "
            + " ".join(f"{header:>11}" for header, _ in columns) + f" {'threshold':>9}")
    rows = [head, "-" * len(head)]
    for r in results:
        figures = [r.figure(name) for _, name in columns]
        rows.append(f"{r.student:10} {r.policy:7} {r.target:6.2f} {r.teacher_calls_saved_pct:8.1f} {r.saved_second_half_pct:9.1f} "
                    f"{r.agreement_with_teacher:9.4f} {r.agreement_second_half:8.4f} "
                    + " ".join("n/a".rjust(11) if f is None else f"{f:11.4f}" for f in figures)
                    + f" {r.final_threshold:9.3f}")
    return "\n".join(rows)


def plot_run(result: EvalResult, path: Path, title: str) -> None:
    """Teacher-call share and rolling agreement against events seen, with the target line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result.curve
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(c["events"], c["teacher_call_share"], label="teacher-call share (rolling 500)")
    ax.plot(c["events"], c["agreement"], label="agreement with teacher (rolling 500)")
    ax.plot(c["events"], c["threshold"], label="threshold", alpha=0.6)
    ax.axhline(result.target, color="k", linestyle="--", linewidth=1, label=f"target {result.target:.2f}")
    ax.set_xlabel("events seen")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(results: list[EvalResult], path: Path, title: str) -> None:
    """Teacher calls saved against realised agreement, one point per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot([r.agreement_with_teacher for r in results], [r.teacher_calls_saved_pct for r in results], marker="o")
    for r in results:
        ax.annotate(f"{r.target:.2f}", (r.agreement_with_teacher, r.teacher_calls_saved_pct), fontsize=7)
    ax.set_xlabel("realised agreement with the teacher")
    ax.set_ylabel("teacher calls saved (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
