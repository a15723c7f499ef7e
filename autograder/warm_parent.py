"""The warm parent of the local grading workers (trusted: no student code ever runs here).

`autograder grade` starts one multiprocessing fork server with this module preloaded, and forks every grading
worker from it: the libraries a grader needs (numpy, torch, pytest, matplotlib, the kit) are imported and the
reference solution is loaded once per run, not once per worker (each of those took 1-2 s). Each forked worker
then starts its own grader session (a thread: threads do not survive a fork, so none is started here) and its
sandbox's zygote (executors._start_worker).

Only imports and the reference's definitions run here, never a computation: a parent that had started torch's
intra-op (OpenMP) thread pool could leave a forked child waiting on a lock no thread will release. (Importing
torch starts one idle thread of its own; the sandbox's zygote forks after the same import.)
"""

from __future__ import annotations

import sys

try:
    import numpy  # noqa: F401
    import pytest  # noqa: F401

    import autograder.feedback  # noqa: F401
    import autograder.grade  # noqa: F401
    import autograder.plots  # noqa: F401
    import autograder.pytest_plugin  # noqa: F401
    import autograder.results  # noqa: F401
    import autograder.sandbox  # noqa: F401
    import autograder.submission  # noqa: F401
    import autograder.vocabulary  # noqa: F401
    from autograder.reference import load_reference

    load_reference()  # imports what the solution notebooks import (torch among them), defines the reference
    PRELOADED = True
except BaseException as exc:  # a worker forked from here imports or loads whatever is missing, and reports it
    print(f"autograder: the warm parent could not preload everything ({type(exc).__name__}: {exc}); "
          "workers will load it themselves", file=sys.stderr)
    PRELOADED = False
