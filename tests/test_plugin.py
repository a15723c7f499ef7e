"""The graders' pytest plugin, on small grader folders written here and a stand-in sandbox (no student process):
how points are shared, and what a collection error or a failing fixture gives. Each case runs in a fresh Python
(the plugin keeps one pytest session per process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


RUN = textwrap.dedent("""
    import json, sys
    from autograder.pytest_plugin import GradingContext, run_graders
    from autograder.secret import PUBLIC_EXAMPLE_SECRET, CourseSecret
    from autograder.vocabulary import Tolerance

    class Answers:  # stands in for a Sandbox: every call returns the answer given here
        hung = set()
        def call(self, name, *args, **kwargs):
            return {"double": lambda x: 2 * x, "wrong": lambda x: 3 * x}[name](*args)

    context = GradingContext("ada", Answers(), json.loads(sys.argv[2]), 1, Tolerance(1e-7, 0.0),
                             secret=CourseSecret(PUBLIC_EXAMPLE_SECRET.encode(), "tests"))
    run_graders(context, sys.argv[1])
    print(json.dumps({"results": [vars(r) for r in context.results], "errors": context.collection_errors}))
""")


def grade(tmp_path, points: dict, files: dict) -> dict:
    graders = tmp_path / "graders"
    graders.mkdir()
    (graders / "pytest.ini").write_text("[pytest]\npython_files = test_*.py\n")
    for name, text in files.items():
        (graders / name).write_text(textwrap.dedent(text))
    run = subprocess.run([sys.executable, "-c", RUN, str(graders), json.dumps(points)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


GRADER = """
    from autograder.pytest_plugin import graded
    from autograder.vocabulary import GradingFailure

    @graded("double", "doubles 2")
    def test_two(student):
        assert student.double(2) == 4

    @graded("double", "doubles 5", points=1)
    def test_five(student):
        if student.wrong(5) != 10:
            raise GradingFailure("double(5) is not 10")

    @graded("double", "raises on strings", error_handling=True)
    def test_strings(student):
        pass
"""


def test_points_are_shared_and_fixed_points_kept(tmp_path):
    got = grade(tmp_path, {"double": 3}, {"test_double.py": GRADER})
    assert got["errors"] == []
    by_name = {r["name"]: r for r in got["results"]}
    assert by_name["double: doubles 5"]["max_score"] == 1  # fixed points
    assert by_name["double: doubles 2"]["max_score"] == by_name["double: raises on strings"]["max_score"] == 1
    assert by_name["double: doubles 2"]["score"] == 1
    assert by_name["double: doubles 5"]["status"] == "failed" and by_name["double: doubles 5"]["output"] == \
        "double(5) is not 10"
    # The error-handling test passed, but does not count: a valid-input test of the same function failed.
    assert by_name["double: raises on strings"]["score"] == 0
    assert by_name["double: raises on strings"]["output"].startswith("not counted: double passes this test, but error handling")


def test_a_collection_error_is_reported_not_hidden(tmp_path):
    got = grade(tmp_path, {"double": 3}, {"test_double.py": GRADER, "test_broken.py": "def test_x(:\n"})
    assert any("test_broken.py" in error for error in got["errors"])


def test_a_function_without_tests_or_points_is_a_collection_error(tmp_path):
    got = grade(tmp_path, {"double": 3, "missing": 2}, {"test_double.py": GRADER})
    assert "no grader tests for missing" in got["errors"]


def test_a_failing_fixture_is_a_grader_error_for_the_instructor(tmp_path):
    got = grade(tmp_path, {"double": 2}, {"conftest.py": """
        import pytest

        @pytest.fixture
        def broken():
            raise KeyError("the grader's own bug")
    """, "test_double.py": """
        from autograder.pytest_plugin import graded

        @graded("double", "doubles 2")
        def test_two(student):
            assert student.double(2) == 4

        @graded("double", "uses a broken fixture")
        def test_broken(student, broken):
            pass
    """})
    by_name = {r["name"]: r for r in got["results"]}
    assert by_name["double: doubles 2"]["score"] == 1
    broken = by_name["double: uses a broken fixture"]
    assert broken["score"] == 0 and broken["output"].startswith("internal grader error")
    assert "KeyError" in broken["grader_error"] and "the grader's own bug" in broken["grader_error"]
