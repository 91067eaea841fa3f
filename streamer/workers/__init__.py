"""Workers: decision logic (``*_logic``) apart from transport (``*_worker``), a shared runtime, a supervisor.

* :mod:`~streamer.workers.student_logic` / :mod:`~streamer.workers.student_worker`: route events, learn labels
  (plain aiokafka);
* :mod:`~streamer.workers.teacher_logic` / :mod:`~streamer.workers.teacher_worker`: answer escalations (Faust);
* :mod:`~streamer.workers.runtime`: signals, ready file, lag gauge, watchdog, dead letters, summaries;
* :mod:`~streamer.workers.supervisor`: worker processes for the demo, the benchmark and the tests.
"""
