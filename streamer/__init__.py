"""babybear-streamer: cheap inference triage on a Kafka stream.

A River student answers the events it is confident about; the rest are escalated
to a transformer teacher whose labels feed back so the student keeps learning.

The triage runs in process too (the workers run exactly this):

>>> import streamer
>>> settings = streamer.Settings(policy="fixed", threshold=0.8, warmup_labels=4, student="nb")
>>> triage = streamer.build_triage(settings)
>>> for text, label in [("a warm funny film", "fresh"), ("a dull boring mess", "rotten")] * 4:
...     route = triage.route(text)
...     if route.escalate:  # here the teacher would answer; its label is learned
...         triage.learn(text, label, student_label=route.label, student_confidence=route.confidence,
...                      weight=route.weight, reason=route.reason)
>>> route = triage.route("warm and funny")
>>> route.label, route.escalate
('fresh', False)
"""

from streamer.cascade import Answer, Cascade
from streamer.datasets import Example, load_examples
from streamer.models import BaseStudent, Student
from streamer.models.teacher import Teacher
from streamer.records import Catalogue
from streamer.settings import Settings
from streamer.tasks import TASKS, Task, get_task
from streamer.triage import Route, Triage, build_triage

__version__ = "0.1.0"

__all__ = ["TASKS", "Answer", "BaseStudent", "Cascade", "Catalogue", "Example", "Route", "Settings", "Student", "Task",
           "Teacher", "Triage", "build_triage", "get_task", "load_examples"]
