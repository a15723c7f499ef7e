"""Bubblewrap: whether it works here (the isolation level), and the command line that applies the policy: an
allow-list filesystem, no network, new namespaces, the seccomp filter, and the drop to nobody (setpriv) as root."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from autograder.sandbox.limits import SandboxLimits
from autograder.sandbox.policy import (NOBODY, PYTHON, SANDBOX_HOME, SANDBOX_SUBMITTED, SANDBOX_TMP, SANDBOX_WORKER,
                                       IsolationPolicy, isolation_policy)
from autograder.sandbox import policy
from autograder.sandbox.seccomp import _seccomp_program

def isolation_level() -> str:
    """ "bubblewrap" if bubblewrap really works here (checked once), else "process".

    AUTOGRADER_ISOLATION=process forces the process level; AUTOGRADER_ISOLATION=bubblewrap makes a missing
    bubblewrap an error instead of a silent downgrade.
    """
    wanted = os.environ.get("AUTOGRADER_ISOLATION", "").strip().lower()
    if wanted == "process":
        return "process"
    problem = _bwrap_problem()
    if problem is None:
        return "bubblewrap"
    if wanted == "bubblewrap":
        raise RuntimeError(f"AUTOGRADER_ISOLATION=bubblewrap, but bubblewrap does not work here: {problem}")
    return "process"


def _bwrap_problem() -> str | None:
    """None if bubblewrap works here, else why not (checked once)."""
    return _bwrap_setup()[0]


@functools.cache
def _bwrap_setup() -> tuple[str | None, bool]:
    """(problem, seccomp): runs bubblewrap with the real flags on a trivial Python command, with the seccomp
    filter and, if that fails (a kernel without seccomp filters), without it."""
    if not sys.platform.startswith("linux"):
        return "not Linux", False
    if shutil.which("bwrap") is None:
        return "bwrap is not installed", False
    if not hasattr(os, "memfd_create"):
        return "os.memfd_create is missing", False
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "setpriv is not installed", False
    package = Path(__file__).resolve().parent.parent  # autograder/
    for d in policy._python_dirs():
        if package.is_relative_to(d):
            return (f"the Python installation {d} contains the autograder package; it cannot be shown to "
                    f"students"), False
    if _seccomp_program() is not None and _probe(seccomp=True) is None:
        return None, True
    return _probe(seccomp=False), False


def _probe(seccomp: bool) -> str | None:
    with tempfile.TemporaryDirectory(prefix="agsb-probe-") as work:
        check = f"import os, sys; sys.exit(0 if os.getuid() == {NOBODY} or {os.geteuid() != 0} else 1)"
        probe = isolation_policy(SandboxLimits(disk_bytes=2**20), "bubblewrap", {}, seccomp=seccomp)
        argv, fds = _bwrap_command(probe, Path(work), {})
        try:
            run = subprocess.run(argv + [PYTHON, "-I", "-S", "-c", check], stdin=subprocess.DEVNULL,
                                 capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"}, pass_fds=fds)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bwrap failed to run: {exc}"
        finally:
            for fd in fds:
                os.close(fd)
        if run.returncode != 0:
            return f"bwrap exited with status {run.returncode}: {run.stderr.decode(errors='replace')[:500]}"
    return None


def _data_fd(data: bytes) -> int:
    """A file descriptor to read `data` from, for bwrap --ro-bind-data (no temporary file on disk)."""
    fd = os.memfd_create("agsb-data")  # close-on-exec: only the child it is passed to gets it
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@functools.cache
def _tool(name: str) -> str:
    return shutil.which(name) or name


# bwrap's root is a tmpfs; in a user namespace (a grader that is not root) the student owns it and could fill it,
# or leave files there for the next student of a zygote: read-only, like everything not bound writable. Last, once
# every mount point exists.
_READ_ONLY_ROOT = ["--remount-ro", "/"]


def _bwrap_command(policy: IsolationPolicy, workdir: Path, student_files: dict[str, bytes],
                   zygote: bool = False) -> tuple[list[str], tuple[int, ...]]:
    """The bwrap [+ setpriv] command prefix that applies `policy`: new namespaces, the seccomp filter, only the
    policy's read-only folders, its tmpfs, the worker at SANDBOX_WORKER, the student's files read-only at
    SANDBOX_SUBMITTED (copied into the work folder's tmpfs by the worker before any student code), a read-only root,
    and, as root, the drop to nobody without capabilities.

    For a zygote, `workdir` appears at SANDBOX_HOME instead, and the zygote keeps the policy's zygote capabilities
    (as root, or for a normal user inside bubblewrap's user namespace), to give each student fresh namespaces and
    then drop them; its keeper mounts each student's tmpfs (worker.py). Also returns the file descriptors bwrap
    reads (the worker's source, the seccomp filter): pass them to one child (bwrap reads them to the end), then
    close them."""
    # The student side becomes read-only files in /sandbox (--ro-bind-data: no temporary file on disk).
    file_fds = {name: _data_fd(source) for name, source in student_files.items()}
    seccomp = _seccomp_program() if policy.seccomp else None
    fds = tuple(file_fds.values()) + (() if seccomp is None else (_data_fd(seccomp),))
    argv = [_tool("bwrap")]
    for namespace in policy.namespaces:
        argv.append("--unshare-cgroup-try" if namespace == "cgroup" else f"--unshare-{namespace}")
    if policy.user_namespace:
        argv += ["--uid", str(policy.uid), "--gid", str(policy.uid)]
    if seccomp is not None:
        argv += ["--seccomp", str(fds[-1])]
    argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    for path in policy.read_only[:2]:  # /usr and /etc; merged-/usr links between them and the Python folders
        argv += ["--ro-bind", path, path]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + name
        if os.path.islink(path):  # merged /usr (Debian 12): recreate the symlinks
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for path in (SANDBOX_TMP, "/dev/shm"):
        argv += ["--perms", "1777", "--size", str(policy.tmpfs_size(path)), "--tmpfs", path]
    made = {"/", "/usr", "/etc", "/tmp", "/dev", "/proc"}

    def parents(path: str) -> list[str]:
        # bwrap creates missing parents with mode 0700, which nobody cannot cross: create them 0755 first.
        out = []
        for parent in reversed(Path(path).parents):
            p = str(parent)
            if p not in made:
                made.add(p)
                out += ["--perms", "0755", "--dir", p]
        return out

    for d in policy.read_only[2:]:
        argv += parents(d) + ["--ro-bind", d, d]
    argv += parents(SANDBOX_WORKER)
    for name, fd in file_fds.items():
        argv += ["--perms", "0444", "--ro-bind-data", str(fd), os.path.join(os.path.dirname(SANDBOX_WORKER), name)]
    if zygote:
        argv += parents(SANDBOX_HOME) + ["--bind", str(workdir), SANDBOX_HOME, "--chdir", "/"]
        for cap in policy.zygote_capabilities:
            argv += ["--cap-add", cap]
        return argv + _READ_ONLY_ROOT + ["--"], fds
    argv += parents(policy.workdir) + ["--ro-bind", str(workdir), SANDBOX_SUBMITTED,
                                       "--perms", "1777", "--size", str(policy.tmpfs_size(policy.workdir)),
                                       "--tmpfs", policy.workdir, "--chdir", policy.workdir]
    argv += _READ_ONLY_ROOT + ["--"]
    if policy.setuid:
        argv += [_tool("setpriv"), f"--reuid={policy.uid}", f"--regid={policy.uid}",
                 "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return argv, fds
