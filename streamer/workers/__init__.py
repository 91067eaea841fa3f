"""Workers: decision logic (``*_logic``) apart from transport (``*_worker``), a shared runtime, a supervisor.

* :mod:`~streamer.workers.student_logic` / :mod:`~streamer.workers.student_worker`: route events, learn labels;
* :mod:`~streamer.workers.teacher_logic` / :mod:`~streamer.workers.teacher_worker`: answer escalations, audit labels;
* :mod:`~streamer.workers.group_worker`: the consume/produce/commit/rebalance lifecycle both run on (aiokafka);
* :mod:`~streamer.workers.runtime`: signals, ready file, lag gauge, watchdog, dead letters, summaries;
* :mod:`~streamer.workers.supervisor`: worker processes for the demo, the benchmark and the tests.
"""
