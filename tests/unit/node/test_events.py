"""node.events.EventKind is the one list of job-log kinds: every kind node/ writes is a member
(no string literal passed as a kind), no module of node/ compares or filters on a kind's
literal string, and docs/architecture.md's events table lists exactly the members."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from node.events import JOB_STAGE_PREFIX, EventKind, job_stage
from tests.tools import REPO

NODE = REPO / "node"
EVENTS_MODULE = NODE / "events.py"
ARCHITECTURE = REPO / "docs" / "architecture.md"


def node_files() -> list[Path]:
    return [f for f in sorted(NODE.rglob("*.py")) if f != EVENTS_MODULE]


def _called(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def _kind_argument(call: ast.Call) -> ast.expr | None:
    """The kind a record_event(session, kind, ...) or Event(kind=...) call writes."""
    for keyword in call.keywords:
        if keyword.arg == "kind":
            return keyword.value
    if _called(call) == "record_event" and len(call.args) > 1:
        return call.args[1]
    return None


def _assigned(function: ast.AST, name: str) -> list[ast.expr]:
    """Every value `name` is given in `function` (plain and tuple assignments)."""
    values = []
    for node in ast.walk(function):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name) and target.id == name:
                values.append(node.value)
            elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                for element, value in zip(target.elts, node.value.elts, strict=True):
                    if isinstance(element, ast.Name) and element.id == name:
                        values.append(value)
    return values


def _kind_problems(expr: ast.expr, function: ast.AST | None) -> list[str]:
    """Why `expr` is not an EventKind member (or a job_stage(...) call); [] when it is."""
    if isinstance(expr, ast.Attribute) and getattr(expr.value, "id", None) == "EventKind":
        return [] if expr.attr in EventKind.__members__ else [f"EventKind.{expr.attr}: no member"]
    if isinstance(expr, ast.Call) and _called(expr) == "job_stage":
        return []
    if isinstance(expr, ast.Name) and function is not None:
        values = _assigned(function, expr.id)
        if values:
            return [p for value in values for p in _kind_problems(value, function)]
    if isinstance(expr, ast.Constant | ast.JoinedStr):
        return [f"a string literal ({ast.unparse(expr)}) instead of EventKind"]
    return [f"{ast.unparse(expr)}: not visibly an EventKind"]


def kinds_written_outside_the_enum() -> list[str]:
    problems = []
    for file in node_files():
        tree = ast.parse(file.read_text(), str(file))
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        for function in [None, *functions]:
            scope = tree if function is None else function
            for node in ast.walk(scope):
                if not isinstance(node, ast.Call) or _called(node) not in ("record_event", "Event"):
                    continue
                if function is None or (function.name == "record_event" and file.name == "db.py"):
                    continue  # module level has no calls; record_event passes its argument on
                kind = _kind_argument(node)
                if kind is None:
                    continue
                where = f"{file.relative_to(REPO)}:{node.lineno}"
                problems += [f"{where}: {p}" for p in _kind_problems(kind, function)]
    return sorted(set(problems))


def test_every_kind_node_writes_is_an_event_kind() -> None:
    assert kinds_written_outside_the_enum() == []


def test_the_scan_sees_the_writers() -> None:
    """The scan is not vacuous: it finds the calls, and it would catch a literal."""
    calls = sum(
        1
        for file in node_files()
        for node in ast.walk(ast.parse(file.read_text()))
        if isinstance(node, ast.Call) and _called(node) == "record_event"
    )
    assert calls >= 25
    literal = ast.parse('def f(s):\n    record_event(s, "job.done", "m")\n')
    call = literal.body[0].body[0].value
    assert _kind_problems(_kind_argument(call), literal.body[0]) != []


def test_no_module_spells_a_kind_as_a_string() -> None:
    """Consumers (admin filters, metrics, pages) use the members too."""
    values = {kind.value for kind in EventKind}
    spelled = [
        f"{file.relative_to(REPO)}:{node.lineno}: {node.value!r}"
        for file in node_files()
        for node in ast.walk(ast.parse(file.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (node.value in values or node.value.startswith(JOB_STAGE_PREFIX))
    ]
    assert spelled == []


def test_values_are_the_strings_the_database_holds() -> None:
    assert EventKind.JOB_DONE == "job.done" and f"{EventKind.JOB_DONE}" == "job.done"
    assert EventKind("delivery.released") is EventKind.DELIVERY_RELEASED
    assert job_stage("score") == "job.stage.score"
    assert all(re.fullmatch(r"[a-z]+\.[a-z_]+", kind.value) for kind in EventKind)


def documented_kinds() -> set[str]:
    """The kinds in the first column of docs/architecture.md's table under "## Events"."""
    text = ARCHITECTURE.read_text()
    section = text.split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    kinds = set()
    for row in (line for line in section.splitlines() if line.startswith("| `")):
        first, *more = re.findall(r"`([a-z_.]+)`", row.split("|")[1])
        # "`job.stage.volume`, `.score`": a shorthand for job.stage.score
        kinds |= {first, *(first.rsplit(".", 1)[0] + kind for kind in more)}
    return kinds


def test_the_architecture_doc_lists_every_kind() -> None:
    documented = documented_kinds()
    assert {kind.value for kind in EventKind} - documented == set()
    stages = {kind for kind in documented if kind.startswith(JOB_STAGE_PREFIX)}
    assert documented - stages - {kind.value for kind in EventKind} == set()
