"""The student side of the sandbox: runs student code and answers the grader's requests.

The sandbox puts this folder's three files read-only into the sandbox (/sandbox/ under bubblewrap, a private copy
otherwise) and starts `python -I -S worker.py REQUEST_FD REPLY_FD CONFIG`, or a zygote (`--zygote CONTROL_FD
CONFIG`, see keeper.py) that forks student workers. They must stay self-contained (standard library only) because
the autograder package is invisible in there, and cheap to start: they import only what a bare interpreter has
loaded anyway (no json, traceback or numpy until needed), which saves ~25 ms per start when student code does not
import those itself.

Nothing here is trusted by the grader: student code runs in this very process and can patch or replace any of it.
The worker is only the honest path; the grader validates every byte it gets back.
"""

import builtins
import marshal
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # python -I leaves out the script's folder
sys.modules.setdefault("worker", sys.modules[__name__])  # run as __main__: keeper.py imports it as `worker`
from wire import (FRAME_SIZE, MAGIC, MAX_HEADER, TEXT_CAP, _decode, _Encoder, _json_bytes,  # noqa: E402
                  _read_exact, _text, _write_all, pack_frame, unpack_frame)
import guard  # noqa: E402

_OUR_FILES = {os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
              for name in ("wire.py", "worker.py", "keeper.py", "guard.py")}


class Worker:
    def __init__(self, request_fd, reply_fd, reply_limit, by_hand=()):
        self.request_fd = request_fd
        self.reply_fd = reply_fd
        self.reply_limit = reply_limit
        self.by_hand = tuple(by_hand)  # functions under the by-hand rule (guard.py) whenever they run
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
        # The grader's helpers (pytest_plugin.ECHO_SOURCE: call a function and report its arguments afterwards)
        # live apart from the student's namespace, with the builtins and copy.deepcopy as they are now, before any
        # student code ran; calls of them always get the worker's own (see serve), whatever the student's code
        # bound to their names or patched. (Student code in this process can still reach them by walking frames or
        # the heap: this closes the plain ways, not every way.)
        import copy  # already loaded wherever numpy is preloaded

        self.helpers = {}
        self._helper_globals = {"__builtins__": dict(vars(builtins)), "__name__": "autograder_helpers",
                                "student_namespace": self.ns, "deepcopy": copy.deepcopy}
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
        if req["kind"] == "helper":
            return self.load_helpers(source, filename)
        if req["kind"] == "module" and os.path.isfile(filename):
            self.ns["__file__"] = filename  # for code that finds its data next to itself
        code = compile(source, filename, "exec")
        try:
            exec(code, self.ns)
        finally:
            self._wrap_by_hand()
        return {"status": "ok"}, ()

    def _wrap_by_hand(self):
        """The by-hand functions the student defined so far run under the rule wherever they are called from (the
        notebooks' public checks too), as the grader's own calls do."""
        for name in self.by_hand:
            function = self.ns.get(name)
            if function is not None and callable(function):
                self.ns[name] = guard.wrap(function, name)

    def load_helpers(self, source, filename):
        """Runs the grader's helper source in a namespace of its own (not the student's); keeps its functions."""
        exec(compile(source, filename, "exec"), self._helper_globals)
        self.helpers.update((name, value) for name, value in self._helper_globals.items()
                            if name.startswith("__autograder_"))
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
        by_hand = req.get("by_hand")
        if by_hand:  # the grader asks for it: the rule holds whatever the student did to its namespace
            with guard.active(by_hand, grad_off=True):
                value = fn(*args, **kwargs)
        else:
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
            if frames and frames[-1].filename not in _OUR_FILES and (not keep or keep[-1] is not frames[-1]):
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
                    if req.get("name") in self.helpers:  # the worker's own helper, whatever is bound to its name now
                        self.ns[req["name"]] = self.helpers[req["name"]]
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
            if req.get("by_hand") and guard.hit() is not None:  # broke the rule, even if it caught our error
                reply, out = {"status": "forbidden", "function": req["by_hand"], "entry": guard.hit()}, ()
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




def main():
    from keeper import _copy_in, zygote  # before _setup_paths, which leaves this folder off the import path

    for name in ("wire", "worker", "keeper", "guard"):  # a student's own wire.py or worker.py must import as theirs
        sys.modules.pop(name, None)

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
    guard.install_when_imported()  # torch's autograd under the by-hand rule, before any student code
    _limit_memory(config["memory_bytes"])
    try:
        Worker(request_fd, reply_fd, config["reply_limit"], config.get("by_hand", ())).serve()
    except BaseException:
        os._exit(70)
    os._exit(0)  # never wait for threads that student code left running


if __name__ == "__main__":
    main()
