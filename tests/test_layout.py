"""The package layout keeps its promises: tasks own what is task-specific, modules import without cycles,
shipped datasets each belong to one task, and checkpoints written before the layout changed still load."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import streamer
from streamer.datasets import SHIPPED
from streamer.settings import Settings
from streamer.tasks import STUDENT_KINDS, TASKS, get_task, resolve_dataset, task_of_dataset
from streamer.triage.checkpoint import read_checkpoint

PACKAGE = Path(streamer.__file__).parent
DATA = Path(__file__).parent / "data"
#: names that only the tasks package may compare against
TASK_SPECIFIC = set(TASKS) | set(STUDENT_KINDS) | set(SHIPPED)


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def compared_strings(tree: ast.AST) -> set[str]:
    """String constants that appear as an operand of a comparison (``==``, ``!=``, ``in``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                items = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                found |= {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
    return found


def test_only_the_tasks_package_compares_task_student_or_dataset_names():
    offenders = {name: sorted(compared_strings(ast.parse(path.read_text())) & TASK_SPECIFIC)
                 for name, path in modules().items() if not name.startswith("streamer.tasks")}
    assert {name: names for name, names in offenders.items() if names} == {}


def module_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The streamer modules ``name`` imports when it is loaded (not imports inside functions)."""
    targets = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If):  # TYPE_CHECKING blocks do not run
            continue
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            targets.add(node.module)
            targets |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {t for t in targets if t in known and t != name}


def test_modules_import_without_cycles():
    mods = modules()
    graph = {name: module_level_imports(name, path, set(mods)) for name, path in mods.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in graph[node]:
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own submodules
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, stack + [nxt]):
                return True
        state[node] = 2
        return False

    assert not any(visit(m, [m]) for m in graph if m not in state), " -> ".join(cycle)


def test_every_shipped_dataset_belongs_to_exactly_one_task():
    for name in SHIPPED:
        assert sum(name in task.datasets for task in TASKS.values()) == 1, name
    for task in TASKS.values():
        assert set(task.datasets) <= set(SHIPPED) and task.default_student in task.students
        assert Settings(task=task.name).student_kind == task.default_student
        assert task_of_dataset(task.default_dataset) is task


def test_a_dataset_of_another_task_is_a_clear_error():
    from streamer.datasets import DatasetError

    with pytest.raises(DatasetError, match="add --task ner"):
        resolve_dataset(get_task("classify"), "wnut16")
    with pytest.raises(ValueError, match="task must be one of"):
        get_task("summarise")


@pytest.mark.parametrize("kind,task,probe", [("nb", "classify", "warm funny film"),
                                             ("nb-binary", "classify", "warm funny film"),
                                             ("ner", "ner", "I love Paris")])
def test_checkpoints_written_before_the_layout_change_still_load(kind, task, probe):
    """``tests/data/checkpoint-format1-*.ckpt`` were written by the flat-module version (format 1)."""
    checkpoint = read_checkpoint(DATA / f"checkpoint-format1-{kind}.ckpt", trust_legacy=True)
    assert checkpoint is not None and checkpoint.label_offsets == {0: 6, 1: 0}
    student = checkpoint.triage.student
    assert student.kind == kind and student.version == 6
    label, confidence = student.predict(probe)
    assert label == ("fresh" if task == "classify" else "O O B-geo-loc") and confidence > 0.9
    assert get_task(task).restore_student(student.state()).predict(probe) == (label, confidence)
    assert checkpoint.triage.policy.threshold == 0.9
