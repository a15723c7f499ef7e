"""The warm parent of the local grading workers (trusted: no student code ever runs here).

`autograder grade` starts one multiprocessing fork server with this module preloaded, and forks every grading
worker from it: the libraries a grader needs (numpy, torch, pytest, matplotlib, the kit) are imported and the
reference solution is loaded once per run, not once per worker (each of those took 1-2 s). First of all it starts
one sandboxed zygote per worker (sandbox/zygote.py), whose imports run beside its own; each forked worker takes one
of them, and starts its own grader session (a thread: threads do not survive a fork, so none is started here).

Only imports and the reference's definitions run here, never a computation: a parent that had started torch's
intra-op (OpenMP) thread pool could leave a forked child waiting on a lock no thread will release. (Importing
torch starts one idle thread of its own; the sandbox's zygote forks after the same import.)
"""

from __future__ import annotations

import json
import os
import sys

# Set by executors.start_warm_parent: the course's preload list, how many workers will be forked, and the
# reference they grade against (the course's solutions/).
PLAN = json.loads(os.environ.get("AUTOGRADER_WARM_PARENT", "{}") or "{}")

try:  # first, so that the zygotes' imports (in their sandboxes) run beside this process's own
    from autograder.sandbox.core import prestart_zygotes

    if PLAN.get("zygotes"):
        prestart_zygotes(tuple(PLAN.get("preload", ())), int(PLAN["zygotes"]))
except BaseException as exc:
    print(f"autograder: the warm parent could not start zygotes ({type(exc).__name__}: {exc}); workers will "
          "start their own", file=sys.stderr)

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

    # Imports what the solution notebooks import (torch among them) and defines the reference, as the workers ask
    # for it (grade.reference_for).
    if PLAN.get("solutions"):
        load_reference(PLAN["assignment"], PLAN["solutions"])
    else:
        load_reference()
    PRELOADED = True
    from autograder.sandbox.zygote import greet_prestarted

    for problem in greet_prestarted():
        print(f"autograder: a zygote of the warm parent failed: {problem}", file=sys.stderr)
except BaseException as exc:  # a worker forked from here imports or loads whatever is missing, and reports it
    print(f"autograder: the warm parent could not preload everything ({type(exc).__name__}: {exc}); "
          "workers will load it themselves", file=sys.stderr)
    PRELOADED = False
