"""The student side of the sandbox: runs student code and answers the grader's requests.

autograder/sandbox.py puts this file read-only into the sandbox (/sandbox/worker.py under bubblewrap, a
private copy otherwise) and starts it as `python -I -S worker.py REQUEST_FD REPLY_FD CONFIG`, or as a zygote
(`--zygote CONTROL_FD CONFIG`, see the zygote section below) that forks student workers. It must stay
self-contained (standard library only) because the autograder package is invisible in there, and cheap to
start: it imports only what a bare interpreter has loaded anyway (no json, traceback or numpy until needed),
which saves ~25 ms per start when student code does not import those itself.

Nothing here is trusted by the grader: student code runs in this very process and can patch or replace
any of it. The worker is only the honest path; the parent validates every byte it gets back.

Wire format: a frame is a 20-byte prefix (magic, header length, payload length; see pack_frame), a header,
then the payload: the raw bytes of every array, back to back, whose lengths the header lists in "buffers".
Replies carry a JSON header (ASCII, NaN and Infinity allowed), which the parent parses and checks without
trusting anything; requests come from the trusted parent and carry a marshal header (fast to load, no
import). Values inside a header are scalars (None, bool, int, float, str) or tagged objects:
    {"t": "tuple" | "list", "v": [...]}                   containers (requests may also carry
    {"t": "dict", "v": [[key, value], ...]}                 dicts with str keys)
    {"t": "nd", "dtype": "<f8", "shape": [2, 3], "b": i}   array, C order, bytes in buffer i
    {"t": "sc", "dtype": "<f8", "b": i}                    numpy scalar, bytes in buffer i
    {"t": "h", "id": n, "type": "MyCache"}                 handle to an object kept in this process
"""

import builtins
import marshal
import os
import sys

try:
    from _json import encode_basestring_ascii as _json_str  # the C helper alone: `import json` costs ~20 ms
except ImportError:  # an interpreter built without the accelerator
    from json.encoder import encode_basestring_ascii as _json_str

MAGIC = b"AGSB"
FRAME_SIZE = 20
# Array dtypes that may cross the boundary (numpy dtype.str, little-endian).
DTYPES = frozenset({"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"})
MAX_DEPTH = 32  # nesting of tuples/lists; deeper containers become handles
MAX_HEADER = 1 << 20  # a reply's JSON header; arrays travel as raw buffers beside it
TEXT_CAP = 4096  # error messages and tracebacks are cut to this many characters
MAX_INT_BITS = 1024  # larger Python ints stay in here as handles

_WORKER_FILE = os.path.abspath(__file__)


def pack_frame(header_len, payload_len):
    return MAGIC + header_len.to_bytes(8, "big") + payload_len.to_bytes(8, "big")


def unpack_frame(prefix):
    """(magic, header length, payload length) of a 20-byte frame prefix."""
    return bytes(prefix[:4]), int.from_bytes(prefix[4:12], "big"), int.from_bytes(prefix[12:20], "big")


def to_json(obj, out):
    """Appends the JSON text of obj (None, bool, int, float, str, list, tuple, dict with str keys) to out."""
    t = type(obj)
    if obj is None:
        out.append("null")
    elif t is bool:
        out.append("true" if obj else "false")
    elif t is int:
        out.append(int.__repr__(obj))
    elif t is float:
        if obj != obj:
            out.append("NaN")
        elif obj in (float("inf"), float("-inf")):
            out.append("Infinity" if obj > 0 else "-Infinity")
        else:
            out.append(float.__repr__(obj))  # shortest repr: round-trips exactly
    elif t is str:
        out.append(_json_str(obj))
    elif t is list or t is tuple:
        out.append("[")
        for i, item in enumerate(obj):
            if i:
                out.append(",")
            to_json(item, out)
        out.append("]")
    elif t is dict:
        out.append("{")
        for i, (key, value) in enumerate(obj.items()):
            if i:
                out.append(",")
            out.append(_json_str(str(key)))
            out.append(":")
            to_json(value, out)
        out.append("}")
    else:
        raise TypeError(f"cannot write a {t.__name__} as JSON")


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _numpy():
    import numpy  # only when an array crosses: keeps start-up cheap for code that never needs it

    return numpy


class _Encoder:
    """Turns a return value into header nodes plus buffers; anything not exactly plain becomes a handle."""

    def __init__(self, handles):
        self.handles = handles
        self.buffers = []

    def node(self, obj, depth=0):
        t = type(obj)
        if obj is None or t is bool or t is float or t is str:
            return obj
        if t is int and obj.bit_length() <= MAX_INT_BITS:
            return obj
        if (t is tuple or t is list) and depth < MAX_DEPTH:
            return {"t": t.__name__, "v": [self.node(item, depth + 1) for item in obj]}
        np = sys.modules.get("numpy")
        if np is not None:
            if t is np.ndarray:
                dtype = self._plain_dtype(obj.dtype)
                if dtype is not None:
                    return {"t": "nd", "dtype": dtype.str, "shape": list(obj.shape),
                            "b": self._buffer(obj.astype(dtype, copy=False).tobytes(order="C"))}
            elif isinstance(obj, np.generic) and t is obj.dtype.type:
                dtype = self._plain_dtype(obj.dtype)
                if dtype is not None:
                    return {"t": "sc", "dtype": dtype.str, "b": self._buffer(obj.astype(dtype).tobytes())}
        return self.handle(obj)

    @staticmethod
    def _plain_dtype(dtype):
        if dtype.kind not in "biuf" or dtype.hasobject:
            return None
        if dtype.byteorder == ">":
            dtype = dtype.newbyteorder("<")
        return dtype if dtype.str in DTYPES else None

    def _buffer(self, data):
        self.buffers.append(data)
        return len(self.buffers) - 1

    def handle(self, obj):
        hid = len(self.handles) + 1
        self.handles[hid] = obj
        try:
            name = type(obj).__qualname__
            module = type(obj).__module__
            if module not in ("builtins", "__main__"):
                name = f"{module}.{name}"
        except BaseException:
            name = "?"
        return {"t": "h", "id": hid, "type": str(name)[:100]}


def _decode(node, buffers, handles):
    """Rebuilds request arguments. Requests come from the trusted parent, so this checks little."""
    if not isinstance(node, dict):
        return node
    tag = node["t"]
    if tag == "tuple":
        return tuple(_decode(v, buffers, handles) for v in node["v"])
    if tag == "list":
        return [_decode(v, buffers, handles) for v in node["v"]]
    if tag == "dict":
        return {k: _decode(v, buffers, handles) for k, v in node["v"]}
    if tag == "h":
        try:
            return handles[node["id"]]
        except KeyError:
            raise LookupError(f"unknown handle {node['id']}") from None
    np = _numpy()
    data = buffers[node["b"]]
    if tag == "nd":
        # A fresh, writable array the student may do anything with.
        return np.frombuffer(data, dtype=node["dtype"]).reshape(node["shape"]).copy()
    if tag == "sc":
        return np.frombuffer(data, dtype=node["dtype"])[0]
    raise ValueError(f"unknown tag {tag!r}")


def _json_bytes(header):
    out = []
    to_json(header, out)
    return "".join(out).encode("ascii")


def _text(fn, default):
    """Student objects may have hostile __str__/__repr__: never let them break the reply."""
    try:
        return str(fn())[:TEXT_CAP]
    except BaseException:
        return default


class Worker:
    def __init__(self, request_fd, reply_fd, reply_limit):
        self.request_fd = request_fd
        self.reply_fd = reply_fd
        self.reply_limit = reply_limit
        self.handles = {}
        self.sources = {}  # unit file name -> source
        self.pid = os.getpid()
        # The student namespace is a fresh __main__ module, as in a notebook kernel, so that pickle and
        # multiprocessing find student classes under __main__.
        self.main = type(sys)("__main__")
        self.ns = self.main.__dict__
        self.ns["__builtins__"] = builtins
        self.worker_module = sys.modules["__main__"]
        sys.modules["__main__"] = self.main
        os.environ.pop("PWD", None)  # bwrap --chdir sets it; the environment is an allow-list
        try:
            sys.stdout.reconfigure(line_buffering=True)  # output before a crash is not lost
        except Exception:
            pass

    # ---- framing ----
    def receive(self):
        magic, header_len, payload_len = unpack_frame(_read_exact(self.request_fd, FRAME_SIZE))
        if magic != MAGIC:
            raise EOFError("bad request frame")
        header = marshal.loads(_read_exact(self.request_fd, header_len))
        payload = memoryview(_read_exact(self.request_fd, payload_len))
        buffers, offset = [], 0
        for n in header.pop("buffers"):
            buffers.append(payload[offset:offset + n])
            offset += n
        return header, buffers

    def send(self, header, buffers=()):
        header["buffers"] = [len(b) for b in buffers]
        data = _json_bytes(header)
        size = FRAME_SIZE + len(data) + sum(header["buffers"])
        if size > self.reply_limit or len(data) > MAX_HEADER:  # the grader refuses larger headers unread
            data = _json_bytes({"id": header["id"], "status": "toolarge", "size": size, "buffers": []})
            buffers = ()
        parts = [pack_frame(len(data), sum(len(b) for b in buffers)), data, *buffers]
        if size < 1 << 20:
            parts = [b"".join(parts)]  # one write: each write to a pipe may cost a context switch
        for part in parts:
            _write_all(self.reply_fd, part)

    # ---- operations ----
    def load(self, req):
        filename = req["filename"]
        source = req["source"]
        self.sources[filename] = source
        self._register_sources()
        if req["kind"] == "module" and os.path.isfile(filename):
            self.ns["__file__"] = filename  # for code that finds its data next to itself
        code = compile(source, filename, "exec")
        exec(code, self.ns)
        return {"status": "ok"}, ()

    def call(self, req, buffers):
        name = req["name"]
        fn = self.ns.get(name)
        if fn is None or not callable(fn):
            reason = "is not defined" if name not in self.ns else f"is not callable (it is {type(fn).__name__})"
            return {"status": "missing", "reason": reason}, ()
        try:
            args = [_decode(a, buffers, self.handles) for a in req["args"]]
            kwargs = {k: _decode(v, buffers, self.handles) for k, v in req["kwargs"]}
        except LookupError as exc:
            return {"status": "badrequest", "message": str(exc)}, ()
        value = fn(*args, **kwargs)
        encoder = _Encoder(self.handles)
        node = encoder.node(value)
        return {"status": "ok", "value": node}, encoder.buffers

    def error(self, exc):
        return {
            "status": "raised",
            "type": _text(lambda: type(exc).__name__, "?"),
            "message": _text(lambda: exc, "<the exception could not be printed>"),
            "traceback": _text(lambda: self.format_traceback(exc), ""),
        }

    def _register_sources(self):
        """Lets tracebacks and warnings show the student's lines, as in a notebook (once linecache is loaded)."""
        linecache = sys.modules.get("linecache")
        if linecache is not None:
            for filename, source in self.sources.items():
                linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)

    def format_traceback(self, exc):
        import traceback  # only when something failed

        self._register_sources()
        te = traceback.TracebackException.from_exception(exc)
        stack = [te]
        while stack:  # chained exceptions too
            t = stack.pop()
            frames = list(t.stack)
            # Keep the student's frames, and the frame where the error surfaced (e.g. inside numpy).
            keep = [f for f in frames if self._is_student(f.filename)]
            if frames and frames[-1].filename != _WORKER_FILE and (not keep or keep[-1] is not frames[-1]):
                keep.append(frames[-1])
            t.stack = traceback.StackSummary.from_list(keep)
            stack += [c for c in (t.__cause__, t.__context__) if c is not None]
        text = "".join(te.format())
        return text if len(text) <= TEXT_CAP else "...\n" + text[-(TEXT_CAP - 4):]

    def _is_student(self, filename):
        return filename in self.sources or filename.startswith(sys.path[0] + os.sep)

    def serve(self):
        self.send({"id": 0, "status": "ready", "pid": os.getpid()})
        while True:
            try:
                req, buffers = self.receive()
            except (EOFError, OSError, ValueError, KeyError, TypeError):
                os._exit(0)  # the parent is gone or the request pipe was tampered with
            try:
                if req["op"] == "load":
                    reply, out = self.load(req)
                else:
                    reply, out = self.call(req, buffers)
            except BaseException as exc:  # SystemExit and KeyboardInterrupt are student errors too
                reply, out = self.error(exc), ()
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except BaseException:
                        pass
            if os.getpid() != self.pid:
                os._exit(0)  # a fork made by student code returned into the worker: only the original answers
            reply["id"] = req["id"]
            try:
                self.send(reply, out)
            except (TypeError, ValueError, OverflowError) as exc:  # e.g. a value json cannot write
                self.send({"id": req["id"], **self.error(exc)})


def _setup_paths(config):
    """Import path and prefixes, from the grader's own interpreter.

    The parent starts python with -S: processing the virtualenv's .pth files costs ~30 ms at every start,
    mostly an editable-install finder that points into the grader's checkout (invisible in the sandbox).
    Instead it passes its own sys.path, minus anything outside the Python installation, so student code
    sees the same packages as the grader.
    """
    sys.prefix, sys.exec_prefix = config["prefix"], config["exec_prefix"]
    sys.path[:] = [os.getcwd(), *config["path"]]  # first the student's folder: their helper modules import
    import site

    site.setquit()  # exit(), quit(), help() and friends, as in a normal interpreter
    site.setcopyright()
    site.sethelper()


def _preload(names):
    """Imports the course's libraries before any student code (a zygote once, a cold worker at its start)."""
    for name in names:
        try:
            __import__(name)
        except BaseException as exc:  # a course without torch, say: its students import what they need
            print(f"sandbox: could not preload {name}: {type(exc).__name__}: {exc}", file=sys.stderr)


def _limit_memory(memory_bytes):
    """Memory limits of this process, set after the preloaded libraries are mapped and before any student code.

    `memory_bytes` is what the student's code may use on top of them. RLIMIT_DATA bounds the heap and every
    private writable mapping (numpy arrays, Python objects): memory the process really uses, whatever the
    libraries map read-only (the CUDA build of torch maps gigabytes of code it never touches, which an
    address-space limit of the same size would refuse). RLIMIT_AS stays as a backstop for the rest (shared
    anonymous mappings) at twice the allowance. Both are soft = hard: student code cannot raise them.
    """
    import resource

    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmData", "VmSize"):
                status[key] = int(value.split()[0]) * 1024
    for res, base, allowance in ((resource.RLIMIT_DATA, status["VmData"], memory_bytes),
                                 (resource.RLIMIT_AS, status["VmSize"], 2 * memory_bytes)):
        value = base + allowance
        hard = resource.getrlimit(res)[1]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(res, (value, value))


# ------------------------------------------------------------------------------------------------ zygote
# A warm parent: `python -I -S worker.py --zygote CONTROL_FD CONFIG` imports the course's libraries (numpy, torch,
# matplotlib: never student code, references or graders) once, then forks a fresh student process per request:
#
#   zygote (pays the imports once) --fork--> keeper --fork--> init (pid 1) --fork--> student worker (pid 2)
#                                                   (without namespaces: keeper --fork--> student worker)
#
# The keeper gives the student a world of its own and cleans up after it. It becomes a child subreaper, so every
# process the student starts (double forks and setsid daemons included) stays its descendant; under bubblewrap it
# also enters new mount, IPC and pid namespaces with a fresh /tmp and /dev/shm, so files and shared memory die
# with it. In the new pid namespace a small init (pid 1, our code, no student code) mounts a /proc that shows only
# that namespace, forks the student worker and reaps; when the worker ends, init reports its status and exits, and
# the kernel kills whatever else is left in the namespace. The student worker sets its rlimits and drops every
# capability (and, when the grader runs as root, becomes nobody). When the worker ends, or the grader closes the
# kill pipe, the keeper kills every descendant, reports the worker's exit status and rusage on the status pipe,
# and exits; the status pipe's end of file tells the grader that nothing of the student is left.
# As root, the zygote and keeper run as root with a few capabilities and the student as nobody. As a normal user,
# bubblewrap puts the zygote in a user namespace of its own (uid 65534 inside, the grader's uid outside) where it
# holds those capabilities; the student has the same uid but no capability and a pid namespace of its own, so it
# can neither see nor signal the zygote or keeper (init ignores what it cannot handle), and cannot trace them
# (they hold capabilities it lacks). Either way the student never receives the zygote's control socket.

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
    if req["namespaces"]:
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
    Worker(3, 4, req["reply_limit"]).serve()  # sys.stdout and sys.stderr write to fds 1 and 2: now the student's


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


def main():
    if sys.argv[1] == "--zygote":
        config = marshal.loads(bytes.fromhex(sys.argv[3]))
        try:
            zygote(int(sys.argv[2]), config)
        finally:
            os._exit(70)
    request_fd, reply_fd = int(sys.argv[1]), int(sys.argv[2])
    config = marshal.loads(bytes.fromhex(sys.argv[3]))
    _setup_paths(config)
    if config["copy_from"]:  # bubblewrap: the work folder is a tmpfs; the files come from a read-only copy
        _copy_in(config["copy_from"], os.getcwd())
    _preload(config["preload"])  # as a zygote would have: a cold student process sees the same libraries
    _limit_memory(config["memory_bytes"])
    try:
        Worker(request_fd, reply_fd, config["reply_limit"]).serve()
    except BaseException:
        os._exit(70)
    os._exit(0)  # never wait for threads that student code left running


if __name__ == "__main__":
    main()
