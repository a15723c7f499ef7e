"""The pytest plugin that turns a pytest session over autograder/graders/ into students' scores.

The grader process (trusted: it holds the reference) runs one pytest session with this plugin, collected once
(GraderSession), and grades students one after another in it; the `student` fixture is a proxy whose calls run
in the current student's sandbox (autograder/sandbox/). Each test is marked with the graded
function it tests:

    @graded("rnn_backward", "dWh on random sequences")
    def test_dWh(backward_results): ...

and its name in the results is "rnn_backward: dWh on random sequences". A function's points (course.yml) are
shared equally by its tests. A failing test's message is the GradingFailure it raised; any other exception is a
grader bug, reported to the instructor and shown to the student only as an internal error.

Why one module of over 400 lines: the proxy (Student, its helper calls), the helper code it loads into each sandbox
(HELPER_UNITS) and the hooks that share points out must agree on names and on what is charged to whom; about a
quarter of it is that helper code, kept as one string so that it runs in the sandbox and nowhere else.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import math
import queue
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest

from autograder.secret import CourseSecret
from autograder.vocabulary import GradingFailure, Tolerance
from autograder.sandbox import LoadUnit, StudentException, StudentTimeout

GRADED_MARK = "graded"


def graded(function: str, description: str, error_handling: bool = False, points: float | None = None):
    """Mark a grader test: which contract function it grades and what it checks (shown to students).

    A function's points (course.yml) are shared equally by its tests, except that a test may be given a fixed
    number of `points` (the others share the rest); used to keep every share exact to the 6 decimals of results.json.
    error_handling=True marks a test of invalid inputs (the right exception raised), or of an edge case a stub
    passes (an empty list): it counts only when the same function also passes all its other (valid-input) tests, so
    a stub that only raises earns nothing."""
    return getattr(pytest.mark, GRADED_MARK)(function=function, description=description,
                                             error_handling=error_handling, points=points)


def grader_functions(graders_dir: str) -> set[str]:
    """The graded functions the graders test, read statically (ast: nothing imported or run) from their
    `@graded("function", ...)` marks, so course.yml can be checked against them before anyone is graded."""
    import ast
    from pathlib import Path

    functions = set()
    for path in sorted(Path(graders_dir).glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "graded"):
                continue
            first = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "function"), None)
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                functions.add(first.value)
    return functions


class StudentFunction:
    def __init__(self, student: "Student", name: str):
        self._student, self.name = student, name

    def __call__(self, *args, **kwargs):
        return self._student.call_charged(self.name, self.name, args, kwargs)

    @property
    def echo(self) -> "EchoFunction":
        """`student.f.echo(*args)` returns (result, args as the student's code left them): to detect in-place changes."""
        return EchoFunction(self._student, self.name)

    def reading(self, names: list[str]) -> "HelperCall":
        """`student.f.reading(["NAMES"])(*args)` returns (result, [the student's global NAMES before the call],
        [the same after it]): to detect changes of the data a function reads."""
        return HelperCall(self._student, self.name, READ_FUNCTION, list(names))

    def with_stand_ins(self, tables: dict) -> "HelperCall":
        """`student.f.with_stand_ins(tables)(*args)` calls f with the grader's stand-ins in place of the student's
        rnn_forward, rnn_backward and rnn_backward_truncated for the duration of the call (see STAND_IN_FUNCTION);
        returns (result, args as f left them), as echo does."""
        return HelperCall(self._student, self.name, STAND_IN_FUNCTION, tables)


class HelperCall(StudentFunction):
    """A call of the student's function through one of the helpers in ECHO_SOURCE."""

    def __init__(self, student: "Student", name: str, helper: str, *extra):
        super().__init__(student, name)
        self._helper, self._extra = helper, extra

    def __call__(self, *args):
        try:
            return self._student.call_charged(self.name, self._helper, (self.name, *self._extra, *args), {})
        except StudentException as exc:
            if exc.type_name == "NameError" and exc.message.startswith(ECHO_MISSING):
                raise GradingFailure(f"{self.name} is not defined in your submission") from None
            raise


class EchoFunction(HelperCall):
    def __init__(self, student: "Student", name: str):
        super().__init__(student, name, ECHO_FUNCTION)


class Student:
    """`student.rnn_forward(x, h0, Wx, Wh, b)` runs the student's rnn_forward in their sandbox."""

    def __init__(self, sandbox, deadline: float = math.inf):
        self._sandbox, self._deadline = sandbox, deadline

    def call(self, name: str, *args, **kwargs):
        return self.call_charged(name, name, args, kwargs)

    def call_charged(self, function: str, name: str, args: tuple, kwargs: dict):
        """Calls `name` in the sandbox (the student's function, or a helper that calls it), charging a timeout to
        `function`: once a call of it has timed out it is not called again, so an infinite loop costs one call
        limit, not one per test."""
        if time.monotonic() > self._deadline:
            raise GradingFailure("not graded: the time limit for the whole submission was used up before this test")
        if function in self._sandbox.hung:
            raise StudentTimeout(f"{function}() was not called again: it timed out earlier")
        try:
            if function in getattr(self._sandbox, "by_hand", ()):  # course.yml's by-hand rule holds for this call
                return self._sandbox.call_by_hand(function, name, *args, **kwargs)
            return self._sandbox.call(name, *args, **kwargs)
        except StudentTimeout:
            self._sandbox.hung.add(function)
            raise

    def call_each(self, name: str, calls: list[tuple]) -> list:
        """[student.name(*args) for args in calls], in one round trip to the sandbox (charged to `name`)."""
        try:
            return self.call_charged(name, EACH_FUNCTION, (name, [list(args) for args in calls]), {})
        except StudentException as exc:
            if exc.type_name == "NameError" and exc.message.startswith(ECHO_MISSING):
                raise GradingFailure(f"{name} is not defined in your submission") from None
            raise

    def __getattr__(self, name: str) -> StudentFunction:
        if name.startswith("_"):
            raise AttributeError(name)
        return StudentFunction(self, name)


# Loaded after the student's code, to report arguments after a call. The worker runs it in a namespace of its own
# (worker.Worker.load_helpers: `student_namespace` is the student's, `deepcopy` and the builtins are as they were
# before student code ran) and calls its own copy whatever the student bound to these names. It runs in the sandbox
# like everything else there: it can only return data, which the grader validates like any result. `[*args]`, not
# list(args): a display looks no name up after the student's function returned.
ECHO_FUNCTION = "__autograder_call_and_echo__"
READ_FUNCTION = "__autograder_call_and_read__"
STAND_IN_FUNCTION = "__autograder_call_with_stand_ins__"
EACH_FUNCTION = "__autograder_call_each__"
STAND_INS = ("rnn_forward", "rnn_backward", "rnn_backward_truncated")
ECHO_MISSING = "not defined:"
ECHO_SOURCE = f"""
def {ECHO_FUNCTION}(name, *args):
    function = student_namespace.get(name)
    if not callable(function):
        raise NameError("{ECHO_MISSING} " + name)
    result = function(*args)
    return result, [*args]


def {EACH_FUNCTION}(name, calls):
    # One round trip for many calls (a feedback picture's 25 thresholds): the results, in order.
    function = student_namespace.get(name)
    if not callable(function):
        raise NameError("{ECHO_MISSING} " + name)
    return [function(*args) for args in calls]


def {READ_FUNCTION}(name, names, *args):
    function = student_namespace.get(name)
    if not callable(function):
        raise NameError("{ECHO_MISSING} " + name)
    before = [deepcopy(student_namespace.get(n)) for n in names]
    result = function(*args)
    return result, before, [student_namespace.get(n) for n in names]


def {STAND_IN_FUNCTION}(name, tables, *args):
    # Calls `name` with stand-ins for {", ".join(STAND_INS)} in the namespace. They hold no BPTT: only the
    # grader's answers (tables) for the calls a function is expected to make on these inputs (the forward of the
    # given inputs, backward passes of dh = zeros except dh[:, -1] = dout through the cache it returned); any other
    # call raises LookupError. The student's own definitions are put back afterwards.
    import numpy
    namespace = student_namespace
    function = namespace.get(name)
    if not callable(function):
        raise NameError("{ECHO_MISSING} " + name)

    class StandInCache:
        pass

    cache_token = StandInCache()

    def same(got, want):
        return isinstance(got, numpy.ndarray) and got.shape == want.shape and numpy.array_equal(got, want)

    def unprepared(what):
        raise LookupError("the autograder's stand-in for " + what + " was called with arguments it has no answer for")

    def rnn_forward(x, h0, Wx, Wh, b):
        if all(same(got, want) for got, want in zip((x, h0, Wx, Wh, b), tables["inputs"])):
            return tables["h"].copy(), cache_token
        unprepared("rnn_forward")

    def rnn_backward(dh, cache):
        if cache is cache_token and same(dh, tables["dh"]):
            return tuple(g.copy() for g in tables["full"])
        unprepared("rnn_backward")

    def rnn_backward_truncated(dh, cache, k1, k2):
        for k in (k1, k2):
            if isinstance(k, bool) or not isinstance(k, (int, numpy.integer)):
                raise ValueError("k1 and k2 must be integers")
        k1, k2 = int(k1), int(k2)
        T = tables["dh"].shape[1]
        if not 1 <= k1 <= k2 or T % k1 != 0:
            raise ValueError("need 1 <= k1 <= k2 and T % k1 == 0")
        if cache is cache_token and same(dh, tables["dh"]):  # one loss, at the last step: only k2 matters
            return tuple(g.copy() for g in tables["truncated"][min(k2, T) - 1])
        unprepared("rnn_backward_truncated")

    stand_ins = {{"rnn_forward": rnn_forward, "rnn_backward": rnn_backward,
                 "rnn_backward_truncated": rnn_backward_truncated}}
    saved = {{key: namespace[key] for key in stand_ins if key in namespace}}
    namespace.update(stand_ins)
    try:
        return function(*args), [*args]
    finally:
        for key in stand_ins:
            namespace.pop(key, None)
        namespace.update(saved)
"""

# What grade_one loads into each student's sandbox after the student's own files.
HELPER_UNITS = (LoadUnit(file="(autograder)", index=None, source=ECHO_SOURCE, kind="helper"),)


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
    reference: object = None  # the course's reference module (None: the kit's own solutions)
    results: list[TestResult] = field(default_factory=list)
    collection_errors: list[str] = field(default_factory=list)
    secret: CourseSecret = field(kw_only=True, repr=False)  # autograder/secret.py: required, never defaulted

    def rng(self, *key) -> np.random.Generator:
        """Random inputs per student, per purpose: reproducible for a regrade with the same course secret,
        different between students, and not computable from the kit and the student id alone."""
        return self.secret.rng(self.seed, self.student_id, *key)


class GradingPlugin:
    """Collects the graders once, then grades one student after another in the same pytest session.

    The session runs in a thread of its own (GraderSession) whose `pytest_runtestloop` waits for students: each
    student is one pass over the collected items with `context` swapped in. The last item of a pass is run with
    nextitem=None, so pytest tears down every fixture, session-scoped ones too: nothing of one student (their
    sandbox, their random cases) survives into the next.
    """

    def __init__(self, points: dict[str, float], jobs: "queue.Queue"):
        self._points = dict(points)
        self._jobs = jobs
        self._context: GradingContext | None = None  # the student being graded
        self.templates: list[tuple[str, str, str, float]] = []  # (nodeid, test name, function, points)
        self.error_handling: set[str] = set()  # nodeids of error-handling tests (see `graded`)
        self.collection_errors: list[str] = []
        self._results: dict[str, TestResult] = {}

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

        return self._context.reference or load_reference()

    # ---- hooks ----
    def pytest_configure(self, config):
        config.addinivalue_line("markers", f"{GRADED_MARK}(function, description): a graded test")

    def pytest_collection_modifyitems(self, session, config, items):
        per_function: dict[str, list] = {}
        for item in items:
            mark = item.get_closest_marker(GRADED_MARK)
            if mark is None:
                self.collection_errors.append(f"{item.nodeid} has no @graded mark")
                continue
            per_function.setdefault(mark.kwargs["function"], []).append(item)
        for function in sorted(set(self._points) - set(per_function)):
            self.collection_errors.append(f"no grader tests for {function}")
        for function, function_items in per_function.items():
            if function not in self._points:
                self.collection_errors.append(f"tests for {function}, which has no points in course.yml")
                continue
            fixed = {item.nodeid: item.get_closest_marker(GRADED_MARK).kwargs.get("points") for item in function_items}
            fixed = {nodeid: float(points) for nodeid, points in fixed.items() if points is not None}
            rest, shared = self._points[function] - sum(fixed.values()), len(function_items) - len(fixed)
            if rest < -1e-9 or (shared == 0 and abs(rest) > 1e-9) or (shared and rest <= 0):
                self.collection_errors.append(f"{function}: the fixed points of its tests ({sum(fixed.values()):g}) "
                                              f"do not fit its {self._points[function]:g} points in course.yml")
                continue
            for item in function_items:
                share = fixed.get(item.nodeid, rest / shared if shared else 0.0)
                description = item.get_closest_marker(GRADED_MARK).kwargs["description"]
                if item.get_closest_marker(GRADED_MARK).kwargs.get("error_handling"):
                    self.error_handling.add(item.nodeid)
                if hasattr(item, "callspec"):  # parametrized: "{name} on random inputs" -> "dWh on random inputs"
                    description = description.format(**item.callspec.params)
                self.templates.append((item.nodeid, f"{function}: {description}", function, share))

    def pytest_collectreport(self, report):
        if report.failed:
            self.collection_errors.append(f"{report.nodeid}: {report.longreprtext[-2000:]}")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        graded = {nodeid for nodeid, *_ in self.templates}
        items = [item for item in session.items if item.nodeid in graded]
        while True:
            job = self._jobs.get()
            if job is None:  # the process is ending
                return True
            context, done = job
            try:
                self._grade(context, items)
            except BaseException as exc:  # a bug here must reach the waiting caller, not kill the session
                done.set_exception(exc)
            else:
                done.set_result(context)

    def _grade(self, context: GradingContext, items: list) -> None:
        context.collection_errors.extend(self.collection_errors)
        context.results = [TestResult(name, function, share) for _, name, function, share in self.templates]
        if self.collection_errors:
            return
        self._context = context
        self._results = {nodeid: result for (nodeid, *_), result in zip(self.templates, context.results)}
        try:
            with warnings.catch_warnings():  # the reference meets NaN and inf inputs on purpose
                warnings.simplefilter("ignore", RuntimeWarning)
                for i, item in enumerate(items):
                    nextitem = items[i + 1] if i + 1 < len(items) else None  # None: tear every fixture down
                    item.ihook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            self._count_error_handling_only_with_valid_inputs()
        finally:
            self._context, self._results = None, {}

    def _count_error_handling_only_with_valid_inputs(self) -> None:
        """An error-handling test that passed keeps its points only if every other test of its function passed."""
        for nodeid, result in self._results.items():
            if nodeid not in self.error_handling or result.status != "passed":
                continue
            valid = [r for n, r in self._results.items()
                     if r.function == result.function and n not in self.error_handling]
            failing = [r for r in valid if r.status != "passed"]
            if failing:
                result.status, result.score = "failed", 0.0
                result.output = (f"not counted: {result.function} passes this test, but error handling and edge cases a "
                                 f"stub passes earn points only when {result.function} also passes its valid-input "
                                 "tests, and "
                                 f"{len(failing)} of {len(valid)} fail (first: '{failing[0].name}')")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        """Records the outcome of one graded test and makes a plain report: pytest's own renders each failure's
        source and locals (~60 ms a test, most of a failing submission's grading time), which nobody reads here.
        Students see the GradingFailure's message; the instructor gets a traceback for grader errors only."""
        excinfo = call.excinfo
        if excinfo is not None and excinfo.errisinstance(pytest.skip.Exception):
            return None  # pytest's own report for skips
        error = excinfo.value if excinfo is not None else None
        result = self._results.get(item.nodeid)
        if result is not None and call.when != "teardown":
            if call.when == "call" and error is None:
                result.status, result.score, result.output = "passed", result.max_score, ""
            elif error is not None:
                result.status, result.score = "failed", 0.0
                if isinstance(error, GradingFailure):
                    result.output = str(error)
                else:
                    result.output = "internal grader error: this test could not be graded (the instructor is told)"
                    result.grader_error = "".join(traceback.format_exception(error))
        longrepr = f"{type(error).__name__}: {error}"[:2000] if error is not None else None
        return pytest.TestReport(item.nodeid, item.location, {}, "failed" if error is not None else "passed",
                                 longrepr, call.when, (), call.duration, call.start, call.stop)


class GraderSession:
    """One pytest session over the graders, collected once and kept in a thread of its own for the life of the
    process; `grade(context)` runs every grader test against one student and waits for the results.

    Collection, conftest imports and plugin set-up (~0.5 s) are thus paid once per worker process, not per student.
    """

    def __init__(self, graders_dir: str, points: dict[str, float]):
        self._jobs: queue.Queue = queue.Queue()
        self.plugin = GradingPlugin(points, self._jobs)
        self.exit_code = None
        self._thread = threading.Thread(target=self._run, args=(graders_dir,), name="grader-session", daemon=True)
        self._thread.start()

    def _run(self, graders_dir: str) -> None:
        args = [graders_dir, "-c", f"{graders_dir}/pytest.ini", "--rootdir", graders_dir, "-p", "no:cacheprovider",
                "-p", "no:terminal", "-p", "no:stepwise", "-p", "no:xdist", "-p", "no:timeout",
                "-p", "no:logging", "-p", "no:warnings",  # per-test log and warning capture nobody reads
                "--capture=no",  # the session outlives one student: never swap this process's stdout and stderr
                "--continue-on-collection-errors"]  # reach the loop anyway: every student is then told why
        try:
            self.exit_code = pytest.main(args, plugins=[self.plugin])
        finally:
            self.exit_code = self.exit_code if self.exit_code is not None else "crashed"
            while True:  # fail whoever is still waiting
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[1].set_exception(RuntimeError(f"the grader session ended ({self.exit_code!r})"))

    def grade(self, context: GradingContext) -> GradingContext:
        if not self._thread.is_alive():
            raise RuntimeError(f"the grader session ended ({self.exit_code!r})")
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((context, done))
        return done.result()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=10)


_sessions: dict[tuple, GraderSession] = {}
_sessions_lock = threading.Lock()


def run_graders(context: GradingContext, graders_dir: str) -> GradingContext:
    """Run every grader test against one student; the results land in context.results (and
    context.collection_errors). Uses this process's GraderSession for these graders and points."""
    return session_for(graders_dir, context.points).grade(context)


def session_for(graders_dir: str, points: dict[str, float]) -> "GraderSession":
    """This process's grader session for these graders and points, started (collecting in its thread) if needed."""
    key = (graders_dir, tuple(sorted(points.items())))
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None or not session._thread.is_alive():
            session = _sessions[key] = GraderSession(graders_dir, points)
    return session


@atexit.register
def _close_sessions() -> None:
    for session in list(_sessions.values()):
        session.close()
