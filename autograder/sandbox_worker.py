"""The student side of the sandbox: runs student code and answers the grader's requests.

autograder/sandbox.py copies this file to a private read-only place and starts it as
`python -I -S worker.py REQUEST_FD REPLY_FD REPLY_LIMIT` inside the sandbox. It must stay self-contained
(standard library only, numpy imported only when an array crosses) because the autograder package
is invisible in there.

Nothing here is trusted by the grader: student code runs in this very process and can patch or replace
any of it. The worker is only the honest path; the parent validates every byte it gets back.

Wire format, both directions: a frame is FRAME (magic, header length, payload length), then a JSON
header (ASCII), then the payload: the raw bytes of every array, back to back, whose lengths the header
lists in "buffers". Values inside a header are JSON scalars (null, true/false, int, float incl. NaN and
Infinity, str) or tagged objects:
    {"t": "tuple" | "list", "v": [...]}                   containers (requests may also carry
    {"t": "dict", "v": [[key, value], ...]}                 dicts with str keys)
    {"t": "nd", "dtype": "<f8", "shape": [2, 3], "b": i}   array, C order, bytes in buffer i
    {"t": "sc", "dtype": "<f8", "b": i}                    numpy scalar, bytes in buffer i
    {"t": "h", "id": n, "type": "MyCache"}                 handle to an object kept in this process
"""

import builtins
import json
import linecache
import os
import struct
import sys
import traceback
import types

MAGIC = b"AGSB"
FRAME = struct.Struct("!4sQQ")  # magic, header length, payload length
# Array dtypes that may cross the boundary (numpy dtype.str, little-endian).
DTYPES = frozenset({"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"})
MAX_DEPTH = 32  # nesting of tuples/lists; deeper containers become handles
TEXT_CAP = 4096  # error messages and tracebacks are cut to this many characters
MAX_INT_BITS = 1024  # larger Python ints stay in here as handles

_WORKER_FILE = os.path.abspath(__file__)


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
        self.unit_files = set()
        self.pid = os.getpid()
        # The student namespace is a fresh __main__ module, as in a notebook kernel, so that pickle and
        # multiprocessing find student classes under __main__.
        self.main = types.ModuleType("__main__")
        self.ns = self.main.__dict__
        self.ns["__builtins__"] = builtins
        self.worker_module = sys.modules["__main__"]
        sys.modules["__main__"] = self.main
        sys.path[0] = os.getcwd()  # the student's own helper modules import from their folder
        os.environ.pop("PWD", None)  # bwrap --chdir sets it; the environment is an allow-list
        try:
            sys.stdout.reconfigure(line_buffering=True)  # output before a crash is not lost
        except Exception:
            pass

    # ---- framing ----
    def receive(self):
        magic, header_len, payload_len = FRAME.unpack(_read_exact(self.request_fd, FRAME.size))
        if magic != MAGIC:
            raise EOFError("bad request frame")
        header = json.loads(_read_exact(self.request_fd, header_len))
        payload = _read_exact(self.request_fd, payload_len)
        buffers, offset = [], 0
        for n in header.pop("buffers"):
            buffers.append(payload[offset:offset + n])
            offset += n
        return header, buffers

    def send(self, header, buffers=()):
        header["buffers"] = [len(b) for b in buffers]
        data = json.dumps(header, allow_nan=True).encode("ascii")
        size = FRAME.size + len(data) + sum(header["buffers"])
        if size > self.reply_limit:
            data = json.dumps({"id": header["id"], "status": "toolarge", "size": size, "buffers": []}).encode()
            buffers = ()
        parts = [FRAME.pack(MAGIC, len(data), sum(len(b) for b in buffers)), data, *buffers]
        if size < 1 << 20:
            parts = [b"".join(parts)]  # one write: each write to a pipe may cost a context switch
        for part in parts:
            _write_all(self.reply_fd, part)

    # ---- operations ----
    def load(self, req):
        filename = req["filename"]
        source = req["source"]
        # Register the source so tracebacks show the student's lines, as in a notebook.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        self.unit_files.add(filename)
        if req["kind"] == "module":
            self.ns["__file__"] = filename
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

    def format_traceback(self, exc):
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
        return filename in self.unit_files or filename.startswith(sys.path[0] + os.sep)

    def serve(self):
        self.send({"id": 0, "status": "ready", "pid": os.getpid()})
        while True:
            try:
                req, buffers = self.receive()
            except (EOFError, OSError, ValueError, KeyError, struct.error):
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


def _add_site_packages():
    """What `site` does at start-up, minus editable installs.

    The parent starts python with -S because processing the virtualenv's .pth files costs ~30 ms, mostly
    an editable-install finder that points into the grader's own checkout: useless in the sandbox, where
    the checkout is invisible, and unwanted outside it.
    """
    import site

    known = set(sys.path)
    for sitedir in site.getsitepackages():
        if not os.path.isdir(sitedir) or sitedir in known:
            continue
        sys.path.append(sitedir)
        known.add(sitedir)
        for name in sorted(os.listdir(sitedir)):
            if name.endswith(".pth") and not name.startswith("__editable__"):
                site.addpackage(sitedir, name, known)
    site.setquit()  # exit(), quit(), help() and friends, as in a normal interpreter
    site.setcopyright()
    site.sethelper()


def main():
    request_fd, reply_fd, reply_limit = (int(a) for a in sys.argv[1:4])
    _add_site_packages()
    try:
        Worker(request_fd, reply_fd, reply_limit).serve()
    except BaseException:
        os._exit(70)
    os._exit(0)  # never wait for threads that student code left running


if __name__ == "__main__":
    main()
