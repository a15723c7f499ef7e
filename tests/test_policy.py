"""The isolation policy as data, and the bubblewrap command line it becomes (a snapshot): no process is started."""

from __future__ import annotations

import dataclasses
import resource

import pytest

from autograder.sandbox import bwrap, policy
from autograder.sandbox.limits import SandboxLimits
from autograder.sandbox.policy import NOBODY, isolation_policy

MB = 2**20


@pytest.fixture
def machine(monkeypatch):
    """A machine without merged-/usr links, with the Python installation in /opt/venv, fake descriptors."""
    monkeypatch.setattr(policy, "_python_dirs", lambda: ("/opt/venv",))
    monkeypatch.setattr(bwrap.os.path, "islink", lambda path: False)
    monkeypatch.setattr(bwrap.os.path, "isdir", lambda path: False)
    fds = iter([10, 11, 12, 13])
    monkeypatch.setattr(bwrap, "_data_fd", lambda data: next(fds))
    monkeypatch.setattr(bwrap, "_tool", lambda name: name)
    monkeypatch.setattr(bwrap, "_seccomp_program", lambda: b"filter")


def as_user(monkeypatch, uid: int) -> None:
    monkeypatch.setattr(policy.os, "geteuid", lambda: uid)


def test_policy_as_root_and_as_a_normal_user(machine, monkeypatch):
    limits = SandboxLimits(memory_mb=512, disk_bytes=64 * MB, processes=32, cpu_seconds=60)
    as_user(monkeypatch, 0)
    root = isolation_policy(limits, "bubblewrap", {"LANG": "C.UTF-8"}, seccomp=True)
    assert root.setuid and not root.user_namespace and root.uid == NOBODY
    assert "user" not in root.namespaces and {"ipc", "pid", "net", "uts"} <= set(root.namespaces)
    assert root.read_only == ("/usr", "/etc", "/opt/venv")
    assert dict(root.tmpfs) == {"/tmp": 64 * MB, "/dev/shm": 16 * MB, "/home/student/work": 64 * MB}
    assert dict(root.cgroup) == {"memory_bytes": (512 + 512) * MB, "processes": 32, "cpus": 1}
    assert dict(root.rlimits)["RLIMIT_NPROC"] == 32 and dict(root.rlimits)["RLIMIT_CORE"] == 0
    assert root.memory_bytes == 512 * MB and root.environment == (("LANG", "C.UTF-8"),)
    as_user(monkeypatch, 1000)
    user = isolation_policy(limits, "bubblewrap", {}, seccomp=True)
    assert user.user_namespace and not user.setuid and user.namespaces[0] == "user"
    assert dataclasses.replace(user, user_namespace=False, setuid=True, namespaces=root.namespaces,
                               environment=root.environment) == root  # nothing else differs
    process = isolation_policy(limits, "process", {})
    assert not process.read_only and not process.tmpfs and not process.namespaces and not process.seccomp
    assert process.rlimits == root.rlimits


def test_resource_limits_never_exceed_this_process_hard_limits(monkeypatch):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    rules = isolation_policy(SandboxLimits(open_files=10**9), "process", {})
    assert dict(rules.resource_limits())[resource.RLIMIT_NOFILE] == (10**9 if hard == resource.RLIM_INFINITY
                                                                      else min(10**9, hard))


def test_bubblewrap_command_line_of_a_student_as_root(machine, monkeypatch):
    as_user(monkeypatch, 0)
    rules = isolation_policy(SandboxLimits(disk_bytes=64 * MB), "bubblewrap", {}, seccomp=True)
    argv, fds = bwrap._bwrap_command(rules, "/host/work", {"wire.py": b"", "worker.py": b"", "keeper.py": b""})
    assert fds == (10, 11, 12, 13)
    assert argv == [
        "bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
        "--seccomp", "13", "--die-with-parent", "--new-session", "--hostname", "sandbox",
        "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev",
        "--perms", "1777", "--size", str(64 * MB), "--tmpfs", "/tmp",
        "--perms", "1777", "--size", str(16 * MB), "--tmpfs", "/dev/shm",
        "--perms", "0755", "--dir", "/opt", "--ro-bind", "/opt/venv", "/opt/venv",
        "--perms", "0755", "--dir", "/sandbox", "--perms", "0444", "--ro-bind-data", "10", "/sandbox/wire.py",
        "--perms", "0444", "--ro-bind-data", "11", "/sandbox/worker.py",
        "--perms", "0444", "--ro-bind-data", "12", "/sandbox/keeper.py",
        "--perms", "0755", "--dir", "/home", "--perms", "0755", "--dir", "/home/student",
        "--ro-bind", "/host/work", "/home/student/submitted",
        "--perms", "1777", "--size", str(64 * MB), "--tmpfs", "/home/student/work", "--chdir", "/home/student/work",
        "--remount-ro", "/", "--",
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
        "--bounding-set=-all", "--no-new-privs"]


def test_bubblewrap_command_line_of_a_zygote_as_a_normal_user(machine, monkeypatch):
    as_user(monkeypatch, 1000)
    rules = isolation_policy(SandboxLimits(disk_bytes=64 * MB), "bubblewrap", {}, seccomp=False)
    argv, fds = bwrap._bwrap_command(rules, "/host/scratch", {"worker.py": b""}, zygote=True)
    assert fds == (10,) and "--seccomp" not in argv
    assert argv[:11] == ["bwrap", "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net",
                         "--unshare-uts", "--unshare-cgroup-try", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    assert argv[argv.index("--bind"):] == [
        "--bind", "/host/scratch", "/home/student", "--chdir", "/",
        "--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
        "--cap-add", "CAP_SETPCAP", "--cap-add", "CAP_KILL", "--remount-ro", "/", "--"]
    assert "setpriv" not in argv
