"""The one place where student code runs: a child process, under bubblewrap where available, with rlimits.

The trusted grader holds reference values and hidden tests, so student code never runs in its process.
A `Sandbox` starts a child (autograder/sandbox/worker.py), loads the student's code units into one
namespace, and executes calls on request. Only plain data comes back (arrays of bool/int/float, numbers,
strings), re-built here from validated bytes, never unpickled; tuples and lists are rebuilt item by item;
any other object stays in the child and is represented by a `Handle` that later calls can pass back.

    with Sandbox(workdir, units, SandboxLimits(call_timeout=10)) as sb:
        h, cache = sb.call("rnn_forward", x, h0, Wx, Wh, b)     # cache may be a Handle
        grads = sb.call("rnn_backward", dh, cache)

Isolation levels (`isolation_level()`):
- "bubblewrap": new pid/net/ipc/uts namespaces; a filesystem that shows only /usr, /etc, the Python
  installation and virtualenv (read-only), a private /tmp and the student's work folder; the student runs
  as nobody (uid 65534) without capabilities, under a small seccomp filter (no user namespaces, bpf,
  io_uring, keyrings). The repository, other students and the grader's output are not visible, the network
  is unreachable, and when the sandbox ends every process in it dies.
- "process": no bubblewrap (a laptop, macOS, a container without namespaces): a separate process and the
  same rlimits, but the student can read what the grader's user can read. The caller should say so.

Warm starts (`warm_available()`, on by default where possible): instead of starting python (and numpy, torch...)
for every student, a Sandbox leases a zygote (_Zygote: one per process and library set, itself sandboxed) that
has imported the `preload` libraries once and forks each student process through a keeper, which gives it a
fresh /tmp, mount and IPC namespaces, nobody's uid and the rlimits, and kills all it started at the end; see the
zygote section of worker.py. A student process is thus as fresh and as isolated as a cold one.

Calls on one Sandbox are serialized by a lock. The child is told to die with its parent through
PR_SET_PDEATHSIG (and bwrap --die-with-parent), which the kernel ties to the *thread* that started it: use a
Sandbox in a thread that outlives it (the main thread, or a pool thread), not in a short-lived thread.
"""

from autograder.sandbox.bwrap import isolation_level
from autograder.sandbox.codec import Handle
from autograder.sandbox.core import Sandbox, start_early
from autograder.sandbox.errors import (InvalidResult, MissingFunction, RuleBroken, StudentCrashed, StudentError,
                                       StudentException, StudentTimeout)
from autograder.sandbox.limits import LoadUnit, SandboxLimits
from autograder.sandbox.zygote import warm_available

__all__ = ["Sandbox", "LoadUnit", "Handle", "SandboxLimits", "StudentError", "StudentException",
           "StudentTimeout", "StudentCrashed", "MissingFunction", "InvalidResult", "RuleBroken", "isolation_level",
           "warm_available", "start_early"]
