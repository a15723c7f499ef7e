"""Zygotes and keepers, the student side of warm starts (standard library only; see worker.py).

A warm parent: `python -I -S worker.py --zygote CONTROL_FD CONFIG` imports the course's libraries (numpy, torch,
matplotlib: never student code, references or graders) once, then forks a fresh student process per request:

  zygote (pays the imports once) --fork--> keeper --fork--> init (pid 1) --fork--> student worker (pid 2)
                                                  (without namespaces: keeper --fork--> student worker)

The keeper gives the student a world of its own and cleans up after it. It becomes a child subreaper, so every
process the student starts (double forks and setsid daemons included) stays its descendant; under bubblewrap it
also enters new mount, IPC and pid namespaces with a fresh /tmp and /dev/shm, so files and shared memory die
with it. In the new pid namespace a small init (pid 1, our code, no student code) mounts a /proc that shows only
that namespace, forks the student worker and reaps; when the worker ends, init reports its status and exits, and
the kernel kills whatever else is left in the namespace. The student worker sets its rlimits and drops every
capability (and, when the grader runs as root, becomes nobody). When the worker ends, or the grader closes the
kill pipe, the keeper kills every descendant, reports the worker's exit status and rusage on the status pipe,
and exits; the status pipe's end of file tells the grader that nothing of the student is left.
As root, the zygote and keeper run as root with a few capabilities and the student as nobody. As a normal user,
bubblewrap puts the zygote in a user namespace of its own (uid 65534 inside, the grader's uid outside) where it
holds those capabilities; the student has the same uid but no capability and a pid namespace of its own, so it
can neither see nor signal the zygote or keeper (init ignores what it cannot handle), and cannot trace them
(they hold capabilities it lacks). Either way the student never receives the zygote's control socket.
"""

import marshal
import os
import sys

import guard
from worker import Worker, _limit_memory, _preload, _setup_paths

_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_CAPBSET_DROP = 1, 4, 24
_PR_SET_NO_NEW_PRIVS, _PR_SET_CHILD_SUBREAPER, _PR_CAP_AMBIENT = 38, 36, 47
_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWPID = 0x00020000, 0x08000000, 0x20000000
_PR_SET_SECUREBITS, _SECUREBITS_LOCKED_NOROOT = 28, 0x2F  # NOROOT, NO_SETUID_FIXUP and KEEP_CAPS off, all locked
_SUBMITTED_FD = 5  # in the student process: the files the grader put in the work folder, until copied
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND = 1, 2, 4, 32, 4096
_MS_REC, _MS_PRIVATE, _MS_NOEXEC = 16384, 1 << 18, 8


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _check(result, what):
    if result != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _children_of_self():
    pid = os.getpid()
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        pass
    return found


def _kill_descendants():
    """SIGKILLs and reaps every descendant (all are our children: we are their subreaper) until none is left."""
    import signal

    while True:
        children = _children_of_self()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            if not children:
                return
        if not children:
            try:
                os.waitpid(-1, 0)  # a child we could not see yet
            except ChildProcessError:
                return


def _private_mounts(libc, tmp_bytes, under_tmp, cwd, uid):
    """Mount, IPC and pid namespaces of the keeper's own: new, empty /tmp and /dev/shm, gone with the student
    (the keeper's next child is pid 1 of the new pid namespace).
    `under_tmp`: read-only folders the sandbox shows below /tmp (a virtualenv in /tmp, say), shown again on top.
    Returns an O_PATH descriptor of the files the grader put in the work folder (now covered by its tmpfs)."""
    _check(libc.unshare(_CLONE_NEWNS | _CLONE_NEWIPC | _CLONE_NEWPID), "unshare")  # pid: for our next child
    _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")
    old_tmp = os.open("/tmp", os.O_PATH | os.O_DIRECTORY)  # still reaches what the new /tmp covers
    for path, size in ((b"/tmp", tmp_bytes), (b"/dev/shm", max(tmp_bytes // 4, 1 << 20))):
        options = b"mode=1777,size=%d" % size
        _check(libc.mount(b"tmpfs", path, b"tmpfs", _MS_NOSUID | _MS_NODEV, options), f"mount {path!r}")
    for folder in under_tmp:
        os.makedirs(folder, mode=0o755, exist_ok=True)
        source = f"/proc/self/fd/{old_tmp}/{os.path.relpath(folder, '/tmp')}".encode()
        _check(libc.mount(source, folder.encode(), None, _MS_BIND | _MS_REC, None), f"bind {folder}")
        _check(libc.mount(None, folder.encode(), None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV,
                          None), f"read-only {folder}")
    os.close(old_tmp)
    # The work folder: a tmpfs of tmp_bytes over the files the grader put there (the student process copies them
    # in through `submitted` before any student code), so what the student writes is capped and never reaches the
    # host's disk. The zygote's scratch folder around it is read-only: nothing is left for the next student (in a
    # user namespace the student owns that folder).
    submitted = os.open(cwd, os.O_PATH | os.O_DIRECTORY)
    owner = b"" if uid is None else b",uid=%d,gid=%d" % (uid, uid)
    _check(libc.mount(b"tmpfs", cwd.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=0755,size=%d" % tmp_bytes
                      + owner), "mount the work folder")
    home = os.path.dirname(cwd).encode()
    _check(libc.mount(None, home, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None),
           "read-only scratch")
    return submitted


def _drop_privileges(libc, uid):
    """Drop every capability, with none to regain (bounding set, ambient, securebits, no_new_privs); and become
    uid (and its group) when given: as root, nobody. In a user namespace (a grader that is not root) the uid
    stays: the only one mapped."""
    for cap in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # EINVAL past the last capability this kernel knows
    libc.prctl(_PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    libc.prctl(_PR_SET_SECUREBITS, _SECUREBITS_LOCKED_NOROOT, 0, 0, 0)  # uid 0 gains nothing on exec, ever
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # leaving uid 0 clears the permitted and effective capabilities
    _clear_capabilities(libc)
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)  # as after an exec: the student may read its own /proc entries


def _clear_capabilities(libc):
    """capset(2) with empty effective, permitted and inheritable sets (for a uid that keeps its capabilities)."""
    import ctypes

    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable} words, all zero
    _check(libc.capset(header, data), "capset")


def _copy_in(source, dest):
    """Copies the student's files (regular files and folders, as the grader prepared them) into its work folder,
    a tmpfs; runs in the student process before any student code, with the student's rights and limits."""
    import shutil

    for dirpath, dirnames, filenames in os.walk(source):
        target = os.path.join(dest, os.path.relpath(dirpath, source))
        for name in dirnames:
            os.makedirs(os.path.join(target, name), exist_ok=True)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                shutil.copyfile(path, os.path.join(target, name))


def _run_student(req, fds, libc):
    """In the student process: fds, limits, identity, environment, then serve the grader's requests."""
    import resource
    import signal

    request_fd, reply_fd, out_fd = fds
    os.setsid()
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.dup2(request_fd, 3)
    os.dup2(reply_fd, 4)
    if req.get("submitted_fd") is not None:
        os.dup2(req["submitted_fd"], _SUBMITTED_FD, inheritable=False)
    else:
        os.closerange(_SUBMITTED_FD, _SUBMITTED_FD + 1)
    os.closerange(_SUBMITTED_FD + 1, 1 << 16)  # keep only the pipes and the submitted files (if any)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)  # die with the keeper
    for res, value in req["rlimits"]:
        resource.setrlimit(res, (value, value))  # soft = hard: student code cannot raise them
    _limit_memory(req["memory_bytes"])
    if req["namespaces"] or req["uid"] is not None:  # the process level as root: the student's own uid all the same
        _drop_privileges(libc, req["uid"])
    os.chdir(req["cwd"])
    if req.get("copy_from"):
        _copy_in(req["copy_from"], req["cwd"])
    try:
        os.close(_SUBMITTED_FD)
    except OSError:
        pass
    os.environ.clear()
    os.environ.update(req["env"])
    sys.path[0] = req["cwd"]
    sys.argv[1:] = ["3", "4"]  # as a worker started from scratch: the request and reply fds
    # sys.stdout and sys.stderr write to fds 1 and 2: now the student's
    Worker(3, 4, req["reply_limit"], req.get("by_hand", ())).serve()


def _init(req, fds, libc, report_fd):
    """pid 1 of the student's pid namespace (our code, never student code): a /proc of this namespace only, the
    student worker as pid 2, then reap everything; when the worker ends, report its status and rusage on
    report_fd and exit, which makes the kernel kill whatever the student left in the namespace."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # pid 1 gets only signals it handles: handle none
    # Best effort: without it the student sees the zygote's /proc, where it can reach nothing (other pid
    # namespace, capabilities it lacks).
    libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(report_fd)
            _run_student(req, fds, libc)
        finally:
            os._exit(70)
    for fd in fds:
        os.close(fd)
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    while True:
        try:
            done, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if done == pid:
            os.write(report_fd, ("exit %d %r %r %d\n" % (status, usage.ru_utime, usage.ru_stime,
                                                          usage.ru_maxrss)).encode())
            os._exit(0)


def _keeper(req, fds, libc):
    """Between the zygote and one student process: see the comment above."""
    import select
    import signal

    request_fd, reply_fd, out_fd, status_fd, kill_fd = fds
    if os.read(kill_fd, 1) != b"g":  # the grader first puts us in the student's cgroup, then says go
        os._exit(0)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the zygote ignores it; we wait for our children
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    report_r = report_w = -1
    if req["namespaces"]:
        submitted = _private_mounts(libc, req["tmp_bytes"], req["under_tmp"], req["cwd"], req["uid"])
        import fcntl

        req["submitted_fd"] = fcntl.fcntl(submitted, fcntl.F_DUPFD, 100)  # above every pipe the student gets
        os.close(submitted)
        req["copy_from"] = f"/proc/self/fd/{_SUBMITTED_FD}"
        report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(status_fd)
            os.close(kill_fd)
            if report_w >= 0:
                os.close(report_r)
                _init(req, (request_fd, reply_fd, out_fd), libc, report_w)
            else:
                _run_student(req, (request_fd, reply_fd, out_fd), libc)
        finally:
            os._exit(70)
    for fd in (request_fd, reply_fd, out_fd, report_w):
        if fd >= 0:
            os.close(fd)
    poller = select.poll()
    poller.register(kill_fd, select.POLLIN)
    worker_fd = os.pidfd_open(pid)
    poller.register(worker_fd, select.POLLIN)
    status = None
    while status is None:
        events = dict(poller.poll())
        if kill_fd in events:  # the grader wants it gone (or the grader is gone)
            os.kill(pid, signal.SIGKILL)
        done, wait_status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            status = (wait_status, usage.ru_utime, usage.ru_stime, usage.ru_maxrss)
    _kill_descendants()
    report = ("exit %d %r %r %d\n" % status).encode()
    if report_r >= 0:  # init's report on the student worker, if it lived to send one
        os.set_blocking(report_r, False)
        try:
            report = os.read(report_r, 4096) or report
        except BlockingIOError:
            pass
    os.write(status_fd, report)
    os._exit(0)  # closing the status pipe: the student's processes are all gone


def zygote(control_fd, config):
    import socket
    import signal

    _setup_paths(config)
    _preload(config["preload"])
    guard.install_when_imported()  # before any student process is forked: every one inherits it
    import resource  # noqa: F401  (used after fork: import it before)

    libc = _libc()
    control = socket.socket(fileno=control_fd)
    control.sendall(b"ready\n")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished keepers: no zombies
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1 << 20, 8)
        except OSError:
            os._exit(0)
        if not message:
            os._exit(0)  # the grader is gone
        req = marshal.loads(message)  # from the trusted grader
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or a child would print our buffered text as its own
        pid = os.fork()
        if pid == 0:
            try:
                control.close()  # never in a student's reach
                _keeper(req, fds, libc)
            except BaseException as exc:
                try:
                    os.write(fds[3], f"error {type(exc).__name__}: {exc}\n".encode())
                except BaseException:
                    pass
            finally:
                os._exit(70)
        for fd in fds:
            os.close(fd)
        control.sendall(b"%d\n" % pid)

