"""The pytest plugin that turns a pytest session over autograder/graders/ into one student's scores.

The grader process (trusted: it holds the reference) runs pytest with this plugin; the `student` fixture is a
proxy whose calls run in that student's sandbox (autograder/sandbox.py). Each test is marked with the graded
function it tests:

    @graded("rnn_backward", "dWh on random sequences")
    def test_dWh(backward_results): ...

and its name in the results is "rnn_backward: dWh on random sequences". A function's points (course.yml) are
shared equally by its tests. A failing test's message is the GradingFailure it raised; any other exception is a
grader bug, reported to the instructor and shown to the student only as an internal error.
"""

from __future__ import annotations

import hashlib
import math
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import pytest

from autograder.checks import GradingFailure, Tolerance
from autograder.sandbox import StudentException

GRADED_MARK = "graded"


def graded(function: str, description: str):
    """Mark a grader test: which contract function it grades and what it checks (shown to students)."""
    return getattr(pytest.mark, GRADED_MARK)(function=function, description=description)


class StudentFunction:
    def __init__(self, student: "Student", name: str):
        self._student, self.name = student, name

    def __call__(self, *args, **kwargs):
        return self._student.call(self.name, *args, **kwargs)

    @property
    def echo(self) -> "EchoFunction":
        """`student.f.echo(*args)` returns (result, args as the student's code left them): to detect in-place changes."""
        return EchoFunction(self._student, self.name)


class EchoFunction(StudentFunction):
    def __call__(self, *args):
        try:
            return self._student.call(ECHO_FUNCTION, self.name, *args)
        except StudentException as exc:
            if exc.type_name == "NameError" and exc.message.startswith(ECHO_MISSING):
                raise GradingFailure(f"{self.name} is not defined in your submission") from None
            raise


class Student:
    """`student.rnn_forward(x, h0, Wx, Wh, b)` runs the student's rnn_forward in their sandbox."""

    def __init__(self, sandbox, deadline: float = math.inf):
        self._sandbox, self._deadline = sandbox, deadline

    def call(self, name: str, *args, **kwargs):
        if time.monotonic() > self._deadline:
            raise GradingFailure("not graded: the time limit for the whole submission was used up before this test")
        return self._sandbox.call(name, *args, **kwargs)

    def __getattr__(self, name: str) -> StudentFunction:
        if name.startswith("_"):
            raise AttributeError(name)
        return StudentFunction(self, name)


# Loaded into the student's namespace after their own code, to report arguments after a call. It runs in the
# sandbox like everything else there: it can only return data, which the grader validates like any result.
ECHO_FUNCTION = "__autograder_call_and_echo__"
ECHO_MISSING = "not defined:"
ECHO_SOURCE = f"""
def {ECHO_FUNCTION}(name, *args):
    function = globals().get(name)
    if not callable(function):
        raise NameError("{ECHO_MISSING} " + name)
    result = function(*args)
    return result, list(args)
"""


@dataclass
class TestResult:
    name: str
    function: str
    max_score: float
    score: float = 0.0
    status: str = "failed"
    output: str = ""
    grader_error: str = ""


@dataclass
class GradingContext:
    student_id: str
    sandbox: object
    points: dict[str, float]
    seed: int
    tolerance: Tolerance
    deadline: float = math.inf
    results: list[TestResult] = field(default_factory=list)
    collection_errors: list[str] = field(default_factory=list)

    def rng(self, *key) -> np.random.Generator:
        """Random inputs per student, per purpose: reproducible for a regrade, different between students."""
        digest = hashlib.sha256("\0".join([self.student_id, *map(str, key)]).encode()).digest()
        return np.random.default_rng([self.seed, int.from_bytes(digest[:8], "little")])


class GradingPlugin:
    def __init__(self, context: GradingContext):
        self._context = context  # not `context`: that name is the fixture below
        self.by_nodeid: dict[str, TestResult] = {}

    # ---- fixtures available to every grader ----
    @pytest.fixture(scope="session")
    def student(self) -> Student:
        return Student(self._context.sandbox, self._context.deadline)

    @pytest.fixture(scope="session")
    def context(self) -> GradingContext:
        return self._context

    @pytest.fixture(scope="session")
    def tol(self) -> Tolerance:
        return self._context.tolerance

    @pytest.fixture(scope="session")
    def ref(self):
        from autograder.reference import load_reference

        return load_reference()

    # ---- hooks ----
    def pytest_configure(self, config):
        config.addinivalue_line("markers", f"{GRADED_MARK}(function, description): a graded test")

    def pytest_collection_modifyitems(self, session, config, items):
        per_function: dict[str, list] = {}
        for item in items:
            mark = item.get_closest_marker(GRADED_MARK)
            if mark is None:
                self._context.collection_errors.append(f"{item.nodeid} has no @graded mark")
                continue
            per_function.setdefault(mark.kwargs["function"], []).append(item)
        for function in sorted(set(self._context.points) - set(per_function)):
            self._context.collection_errors.append(f"no grader tests for {function}")
        for function, function_items in per_function.items():
            if function not in self._context.points:
                self._context.collection_errors.append(f"tests for {function}, which has no points in course.yml")
                continue
            share = self._context.points[function] / len(function_items)
            for item in function_items:
                description = item.get_closest_marker(GRADED_MARK).kwargs["description"]
                if hasattr(item, "callspec"):  # parametrized: "{name} on random inputs" -> "dWh on random inputs"
                    description = description.format(**item.callspec.params)
                result = TestResult(f"{function}: {description}", function, share)
                self.by_nodeid[item.nodeid] = result
                self._context.results.append(result)

    def pytest_collectreport(self, report):
        if report.failed:
            self._context.collection_errors.append(f"{report.nodeid}: {report.longreprtext[-2000:]}")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        result = self.by_nodeid.get(item.nodeid)
        if result is None or report.when == "teardown":
            return
        if report.when == "call" and report.passed:
            result.status, result.score, result.output = "passed", result.max_score, ""
        elif report.failed:
            error = call.excinfo.value if call.excinfo else None
            result.status, result.score = "failed", 0.0
            if isinstance(error, GradingFailure):
                result.output = str(error)
            else:
                result.output = "internal grader error: this test could not be graded (the instructor is told)"
                result.grader_error = "".join(traceback.format_exception(error)) if error else report.longreprtext


def run_graders(context: GradingContext, graders_dir: str) -> GradingContext:
    """Run every grader test against one student; the results land in context.results."""
    args = [graders_dir, "-c", f"{graders_dir}/pytest.ini", "--rootdir", graders_dir, "-p", "no:cacheprovider",
            "-p", "no:terminal", "-p", "no:stepwise", "-p", "no:xdist", "-p", "no:timeout"]
    exit_code = pytest.main(args, plugins=[GradingPlugin(context)])
    if exit_code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        context.collection_errors.append(f"pytest ended with {exit_code!r}")
    return context
