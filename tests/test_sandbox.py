"""The sandbox that runs student code: data round trips, handles, failures, hostile code, isolation.

Every hostile payload is bounded on its own (time, memory, number of processes), so that even a broken
sandbox cannot harm the machine. Isolation-independent tests run at both levels when bubblewrap works.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from autograder.sandbox import testing
from autograder.sandbox import (Handle, InvalidResult, LoadUnit, MissingFunction, Sandbox, SandboxLimits,
                                StudentCrashed, StudentError, StudentException, StudentTimeout, isolation_level,
                                warm_available)

pytestmark = pytest.mark.timeout(60)

HAVE_BWRAP = testing.bubblewrap_problem() is None
LEVELS = ["process"] + (["bubblewrap"] if HAVE_BWRAP else [])
# Each level twice: student processes forked from a warm zygote (the default where available) and started cold.
MODES = [f"{level}-{start}" for level in LEVELS for start in ("warm", "cold")]
needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP, reason=f"bubblewrap unavailable: {testing.bubblewrap_problem()}")
AS_ROOT = os.geteuid() == 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _marked(marker: str) -> list[int]:
    """Live processes whose environment carries AG_TEST_MARKER=marker (i.e. started by one test's sandboxes)."""
    needle = f"AG_TEST_MARKER={marker}".encode()
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if needle in f.read().split(b"\0") and _alive(int(name)):
                        pids.append(int(name))
            except OSError:
                pass
    return pids + testing.zygote_processes()


def _nobody_tasks() -> int:
    """Threads of the uid the student's processes count against (RLIMIT_NPROC counts them all, other sandboxes'
    too): nobody when the grader is root, else the grader's own uid (its other processes and threads included)."""
    uid = "65534" if AS_ROOT else str(os.geteuid())
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
                if fields["Uid"].split()[0] == uid:
                    total += int(fields["Threads"])
            except (OSError, KeyError, ValueError):
                pass
    return total


@pytest.fixture(params=MODES)
def level(request, monkeypatch):
    level, start = request.param.split("-")
    monkeypatch.setenv("AUTOGRADER_ISOLATION", level)
    monkeypatch.setenv("AUTOGRADER_WARM", "1" if start == "warm" else "0")
    if start == "warm" and not warm_available(level):
        pytest.skip(f"no warm start at the {level} level here")
    return level


@pytest.fixture
def marker():
    return secrets.token_hex(8)


@pytest.fixture
def open_sandbox(tmp_path, level, marker):
    """open_sandbox(cell, cell, ..., limits=..., files=...) -> an entered Sandbox; all are closed and checked
    to have left no process behind at teardown."""
    opened: list[Sandbox] = []

    def _open(*cells: str, limits: SandboxLimits | None = None, files: dict | None = None,
              units: list[LoadUnit] | None = None, env: dict | None = None) -> Sandbox:
        work = tmp_path / f"work{len(opened)}"
        work.mkdir()
        for name, text in (files or {}).items():
            (work / name).write_text(textwrap.dedent(text))
        if units is None:
            units = [LoadUnit("nb.ipynb", i, textwrap.dedent(src), "cell") for i, src in enumerate(cells)]
        sb = Sandbox(work, units, limits or SandboxLimits(call_timeout=5, memory_mb=1024),
                     env={**(env or {}), "AG_TEST_MARKER": marker})
        opened.append(sb)
        sb.__enter__()
        assert sb.isolation == level
        assert sb.warm == (os.environ["AUTOGRADER_WARM"] == "1")
        return sb

    yield _open
    for sb in opened:
        private = sb._resources.private_dir
        sb.close()
        assert private is None or not os.path.exists(private)
    assert _marked(marker) == []


# ----------------------------------------------------------------------------------------- data
def test_isolation_level_env(monkeypatch):
    monkeypatch.setenv("AUTOGRADER_ISOLATION", "process")
    assert isolation_level() == "process"
    monkeypatch.delenv("AUTOGRADER_ISOLATION")
    assert isolation_level() == ("bubblewrap" if HAVE_BWRAP else "process")


def test_round_trip_is_bit_exact(open_sandbox):
    sb = open_sandbox("""
        import numpy as np
        def echo(*args):
            return args
        def mutate(a):
            a[...] = 0
            return a
        def keys(d):
            return sorted(d)
    """)
    weird_nan = np.array([0x7FF8000000000123], dtype="<i8").view("<f8")
    arrays = [
        np.array([1.0, np.nan, np.inf, -np.inf, -0.0, 5e-324, 1e308]),
        weird_nan,
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(24, dtype=np.int64).reshape(2, 3, 4)[:, ::2, 1:],  # not contiguous
        np.array([True, False]),
        np.array(3.25),  # 0-d
        np.zeros((0, 3)),
        np.array([1, 2], dtype=">f8"),  # big-endian goes over as little-endian
        np.array([-1, 255], dtype=np.int16).astype(np.uint8),
    ]
    scalars = [np.float64(np.nan), np.float32(1.5), np.int32(-7), np.bool_(True), 3, 2.5, True, None, "grüße",
               float("inf"), 10**30]
    nested = ([1, (2.0, "x")], [], ())
    out = sb.call("echo", *arrays, *scalars, nested)
    assert type(out) is tuple and len(out) == len(arrays) + len(scalars) + 1
    for sent, got in zip(arrays, out):
        assert type(got) is np.ndarray and got.shape == sent.shape
        assert got.dtype == (sent.dtype.newbyteorder("<") if sent.dtype.byteorder == ">" else sent.dtype)
        assert got.tobytes() == np.ascontiguousarray(sent, dtype=got.dtype).tobytes()
        assert got.flags.writeable and got.flags.owndata
    for sent, got in zip(scalars, out[len(arrays):]):
        assert type(got) is type(sent)
        if isinstance(sent, np.generic):
            assert got.tobytes() == sent.tobytes()
        elif isinstance(sent, float) and np.isnan(sent):
            assert np.isnan(got)
        else:
            assert got == sent
    assert out[-1] == nested
    # The student gets a copy: mutating it does not touch the grader's array.
    a = np.ones(3)
    assert np.array_equal(sb.call("mutate", a), np.zeros(3)) and np.array_equal(a, np.ones(3))
    assert sb.call("keys", {"b": 1, "a": np.zeros(2)}) == ["a", "b"]


def test_handles_carry_a_cache_between_calls(open_sandbox):
    sb = open_sandbox("""
        import numpy as np
        class Cache:
            def __init__(self, x, h):
                self.x, self.h = x, h
        def forward(x, w):
            h = np.tanh(x @ w)
            return h, Cache(x, h)
        def backward(dh, cache):
            return (dh * (1 - cache.h ** 2)).T @ cache.x
        def forward_dict(x):
            return x * 2, {"x": x}
        def backward_dict(cache):
            return cache["x"].sum()
    """)
    rng = np.random.default_rng(0)
    x, w, dh = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((3, 2))
    h, cache = sb.call("forward", x, w)
    assert isinstance(cache, Handle) and cache.type_name == "Cache"
    assert np.array_equal(h, np.tanh(x @ w))
    dw = sb.call("backward", dh, cache=cache)
    assert np.allclose(dw, (dh * (1 - h ** 2)).T @ x, rtol=1e-12)
    _, dcache = sb.call("forward_dict", x)
    assert isinstance(dcache, Handle) and dcache.type_name == "dict"
    assert sb.call("backward_dict", dcache) == x.sum()


def test_missing_and_non_callable_names(open_sandbox):
    sb = open_sandbox("x = 3\ndef f():\n    return 1\n")
    with pytest.raises(MissingFunction, match="not defined"):
        sb.call("rnn_backward")
    with pytest.raises(MissingFunction, match="not callable"):
        sb.call("x")
    assert sb.call("f") == 1


def test_student_exception(open_sandbox):
    sb = open_sandbox("""
        def check(k):
            if k < 1:
                raise ValueError(f"k must be >= 1, got {k}")
            return k
    """)
    with pytest.raises(StudentException) as info:
        sb.call("check", 0)
    err = info.value
    assert err.type_name == "ValueError" and err.message == "k must be >= 1, got 0"
    assert "nb.ipynb (cell 0)" in err.traceback and 'raise ValueError(f"k must be' in err.traceback
    assert "worker" not in err.traceback  # only the student's frames
    assert sb.call("check", 2) == 2


def test_non_plain_values_come_back_as_handles(open_sandbox):
    sb = open_sandbox("""
        import numpy as np
        class Sub(np.ndarray):
            pass
        class Liar:
            def __eq__(self, other):
                return True
            def __array__(self, dtype=None, copy=None):
                return np.zeros(3)
        class F(float):
            pass
        class F64(np.float64):
            pass
        def values():
            return (np.zeros(3).view(Sub), Liar(), F(1.0), F64(2.0), {"a": 1}, np.array([1, None]),
                    np.zeros(2, dtype=complex), [Liar(), 1.0], b"bytes", 1 + 2j)
        def type_of(x):
            return type(x).__name__
    """)
    out = sb.call("values")
    for value, name in zip(out, ["Sub", "Liar", "F", "F64", "dict", "numpy.ndarray", "numpy.ndarray"]):
        assert isinstance(value, Handle) and value.type_name == name
    assert isinstance(out[7], list) and isinstance(out[7][0], Handle) and out[7][1] == 1.0
    assert all(isinstance(v, Handle) for v in out[8:])
    assert sb.call("type_of", out[1]) == "Liar"


def test_reply_over_the_size_limit(open_sandbox):
    sb = open_sandbox("import numpy as np\ndef big(n):\n    return np.zeros(n)\n",
                      limits=SandboxLimits(call_timeout=5, memory_mb=1024, reply_bytes=2**20))
    with pytest.raises(InvalidResult, match="over the limit"):
        sb.call("big", 2**18)
    assert sb.call("big", 10).shape == (10,)
    assert sb.restarts == 0


# ----------------------------------------------------------------------------------------- loading
def test_load_errors_are_reported_per_cell(open_sandbox):
    sb = open_sandbox(
        "def a():\n    return 'a'\n",
        "raise ValueError('cell one is broken')\n",
        "def broken(:\n",
        "%matplotlib inline\n",
        "def b():\n    return a() + 'b'\n",
    )
    report = sb.load_report
    assert [(r["index"], r["error"].split(":")[0]) for r in report] == [
        (1, "ValueError"), (2, "SyntaxError"), (3, "SyntaxError")]
    assert report[0]["error"] == "ValueError: cell one is broken" and report[0]["file"] == "nb.ipynb"
    assert report[0]["kind"] == "cell" and "cell one is broken" in report[0]["traceback"]
    assert sb.call("b") == "ab"


def test_modules_and_helpers_load(open_sandbox):
    files = {"helper.py": "def twice(x):\n    return 2 * x\n", "a_mod.py": "from helper import twice\n",
             "b_bad.py": "def f(:\n"}
    units = [LoadUnit(name, None, textwrap.dedent(files[name]), "module") for name in ("a_mod.py", "b_bad.py")]
    units.append(LoadUnit("nb.ipynb", 0, "def g(x):\n    return twice(x) + 1\n", "cell"))
    sb = open_sandbox(units=units, files=files)
    assert [(r["file"], r["index"], r["kind"]) for r in sb.load_report] == [("b_bad.py", None, "module")]
    assert sb.call("g", 4) == 9


def test_hanging_cell_is_skipped(open_sandbox):
    sb = open_sandbox(
        "def a():\n    return 1\n",
        "import time\nend = time.time() + 30\nwhile time.time() < end:\n    pass\n",
        "def b():\n    return 2\n",
        limits=SandboxLimits(call_timeout=1, unit_timeout=1, memory_mb=1024))
    assert [r["error"] for r in sb.load_report] == ["TimeoutError: ran longer than 1 s; skipped"]
    assert sb.call("a") + sb.call("b") == 3
    assert sb.restarts == 1


def test_hanging_call_times_out_then_restarts(open_sandbox):
    sb = open_sandbox("""
        import os, time
        TOKEN = os.urandom(8).hex()
        def token():
            return TOKEN
        def spin():
            end = time.time() + 30
            while time.time() < end:
                pass
        def make():
            return object()
    """, limits=SandboxLimits(call_timeout=1, memory_mb=1024))
    first = sb.call("token")
    handle = sb.call("make")
    start = time.monotonic()
    with pytest.raises(StudentTimeout, match=r"spin\(\) timed out after 1 s"):
        sb.call("spin")
    assert time.monotonic() - start < 5
    second = sb.call("token")
    assert second != first and sb.restarts == 1  # a fresh process, code reloaded
    with pytest.raises(StudentError, match="lost when the student process was restarted"):
        sb.call("token", handle)


CRASHES = {
    "os._exit": ("import os\nos._exit(3)\n", StudentCrashed, "exited with status 3"),
    "segfault": ("import ctypes\nctypes.string_at(0)\n", StudentCrashed, "killed by signal SIGSEGV"),
    "sys.exit": ("import sys\nsys.exit(4)\n", StudentException, "SystemExit"),
    "KeyboardInterrupt": ("raise KeyboardInterrupt\n", StudentException, "KeyboardInterrupt"),
}


@pytest.mark.parametrize("how", list(CRASHES))
def test_crash_at_load_and_in_a_call(open_sandbox, how):
    body, error, text = CRASHES[how]
    sb = open_sandbox("def ok():\n    return 'ok'\n", body,
                      "def crash():\n" + textwrap.indent(body, "    "), "def later():\n    return 'later'\n")
    (entry,) = sb.load_report
    assert entry["index"] == 1 and text in entry["error"]
    if error is StudentCrashed:
        assert entry["error"].endswith("skipped")
    assert sb.call("ok") == "ok" and sb.call("later") == "later"
    with pytest.raises(error) as info:
        sb.call("crash")
    assert text in (info.value.type_name if error is StudentException else str(info.value))
    assert sb.call("later") == "later"  # the sandbox goes on (in a fresh process after a crash)


def test_memory_is_counted_over_all_processes_of_a_student(open_sandbox):
    """Four processes of 250 MB each, with a 256 MB allowance: each is within its own per-process limit, but where a
    cgroup can be made their sum must stay under the student's limit (256 MB + the cgroup's headroom). Bounded:
    at most 1 GB in all even if nothing held, for at most 20 s."""
    from autograder.sandbox import cgroups

    sb = open_sandbox("""
        import os, time
        def hog(n, mb):
            pids = []
            for _ in range(n):
                pid = os.fork()
                if pid == 0:
                    block = bytearray(b"\\x01") * (mb << 20)  # every page touched: resident
                    time.sleep(3)  # all of them at once
                    os._exit(0)
                pids.append(pid)
            # How many held their block to the end (the kernel kills some when the group is full).
            return sum(os.waitpid(pid, 0)[1] == 0 for pid in pids)
    """, limits=SandboxLimits(call_timeout=20, memory_mb=256))
    limit_mb = 256 + cgroups.HEADROOM // 2**20
    if cgroups.support()[0] is None:
        assert "per process" in sb.memory_scope
        assert sb.call("hog", 4, 250) == 4  # no cgroup: nothing counts the processes together (see README)
        return
    assert "per student" in sb.memory_scope
    try:
        held = sb.call("hog", 4, 250)
    except StudentCrashed as crash:  # the kernel may pick the student's main process
        assert "ran out of memory" in str(crash) and "all its processes together" in str(crash)
        held = 0
    assert held * 250 <= limit_mb, f"{held} processes held 250 MB each against a limit of {limit_mb} MB"


@needs_bwrap
def test_student_cannot_kill_trace_or_outlive_its_init(tmp_path, monkeypatch):
    """A warm student is pid 2 below our init: signals to init are dropped (as root the student, nobody, may not
    even send them), tracing it is refused (it holds capabilities the student lacks), and the student still
    answers afterwards. The zygote and keeper are not in its pid namespace at all."""
    monkeypatch.setenv("AUTOGRADER_ISOLATION", "bubblewrap")
    monkeypatch.setenv("AUTOGRADER_WARM", "1")
    source = textwrap.dedent("""
        import ctypes, os, signal, time
        def attack():
            for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGSEGV):
                try:
                    os.kill(1, sig)
                except PermissionError:
                    pass
            time.sleep(0.2)
            libc = ctypes.CDLL(None, use_errno=True)
            traced = libc.ptrace(16, 1, None, None)  # PTRACE_ATTACH
            pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            return os.getpid(), os.getppid(), traced, pids
    """)
    with Sandbox(tmp_path, [LoadUnit("nb.ipynb", 0, source, "cell")], SandboxLimits(call_timeout=10)) as sb:
        assert sb.warm, "the warm start must work under bubblewrap here"
        pid, parent, traced, pids = sb.call("attack")
        assert (pid, parent) == (2, 1)
        assert traced == -1
        assert pids == [1, 2]
        assert sb.call("attack")[:2] == (2, 1)  # the same process, still served by the same init


def test_disk_is_capped_per_student_and_nothing_is_left_on_the_host(open_sandbox, level):
    """A student fills its work folder and /tmp with 16 MB files and a chain of 1,300 nested folders. Under
    bubblewrap each of them is a tmpfs of disk_bytes (here 48 MB): the student writes at most that much to each,
    and none of it reaches the host. Without bubblewrap the files land in the work folder on the host (each file
    capped by RLIMIT_FSIZE) and the grader's cleanup must still remove the deep chain. Bounded: at most 12 x 16 MB
    per folder even if nothing held."""
    from autograder.files import remove_tree

    sb = open_sandbox("""
        import os, tempfile
        def fill(folder):
            written = 0
            for i in range(12):
                try:
                    with open(os.path.join(folder, f"big{i}"), "wb") as f:
                        for _ in range(16):
                            f.write(bytes(2**20))
                            f.flush()
                            written += 2**20
                except OSError:
                    break
            here = folder
            try:
                for _ in range(1300):
                    here = os.path.join(here, "d")
                    os.mkdir(here)
            except OSError:
                pass
            return written
        def both():
            return fill("."), fill(tempfile.gettempdir())
    """, limits=SandboxLimits(call_timeout=30, memory_mb=1024, disk_bytes=48 * 2**20))
    in_work, in_tmp = sb.call("both")
    if level == "bubblewrap":
        assert in_work <= 48 * 2**20 and in_tmp <= 48 * 2**20, (in_work, in_tmp)
        assert not (sb.workdir / "big0").exists() and not (sb.workdir / "d").exists()
    else:
        assert (sb.workdir / "big0").exists()
    sb.close()
    workdir = sb.workdir  # the caller's folder (while open, the sandbox may have moved it where the student runs)
    assert remove_tree(workdir) == []
    assert not workdir.exists()


def test_cpu_is_one_cpu_per_student_where_a_cgroup_can_be_made(open_sandbox):
    """Six processes spinning for 2 s each: with a cgroup the student gets at most one CPU, so together they get
    about 2 s of CPU (a classmate graded at the same time keeps the other CPUs); without one they get what the
    machine has. Bounded: 6 processes for 2 s."""
    from autograder.sandbox import cgroups

    sb = open_sandbox("""
        import os, time
        def spin(n, seconds):
            r, w = os.pipe()
            pids = []
            for _ in range(n):
                pid = os.fork()
                if pid == 0:
                    end = time.monotonic() + seconds
                    while time.monotonic() < end:
                        pass
                    os.write(w, b"%f\\n" % time.process_time())
                    os._exit(0)
                pids.append(pid)
            os.close(w)
            for pid in pids:
                os.waitpid(pid, 0)
            return sum(float(line) for line in os.read(r, 4096).split())
    """, limits=SandboxLimits(call_timeout=20, memory_mb=1024))
    used = sb.call("spin", 6, 2.0)
    if cgroups.support()[0] is not None:
        assert used < 2.0 * 1.3, f"six spinners used {used:.1f} s of CPU in 2 s against a quota of one CPU"
    else:  # no quota: the batch regrades a submission that hit a time limit on its own (test_grade.py)
        assert "per process" in sb.memory_scope


def test_a_zygote_started_early_is_the_one_the_first_sandbox_gets(tmp_path, monkeypatch):
    """A grading worker starts its zygote early (sandbox.start_early) and loads the reference meanwhile: the first
    Sandbox must take that zygote, not start a second one."""
    from autograder.sandbox import start_early
    from autograder.sandbox import zygote as zygotes

    if not warm_available(isolation_level()):
        pytest.skip("no warm start here")
    monkeypatch.setattr(zygotes, "_idle_zygotes", {})
    monkeypatch.setattr(zygotes, "_starting", {})
    started = len(zygotes._all_zygotes)
    start_early(("json",))  # a preload of its own: a zygote no other test shares
    early = next(iter(zygotes._starting.values()))
    try:
        with Sandbox(tmp_path, [LoadUnit("nb.ipynb", 0, "import json\n", "cell")], SandboxLimits(),
                     preload=("json",)) as sb:
            assert sb.warm and sb._resources.zygote is early.result()
        assert len(zygotes._all_zygotes) == started + 1
    finally:
        testing.close_idle_zygotes()


def test_memory_hog(open_sandbox):
    # At most 3 GB even if the limit did not hold.
    sb = open_sandbox("""
        import numpy as np
        def hog():
            return np.ones(3 * 2**30 // 8).sum()
        def ok():
            return 1
    """, limits=SandboxLimits(call_timeout=10, memory_mb=1024))
    with pytest.raises((StudentCrashed, StudentException)) as info:
        sb.call("hog")
    if isinstance(info.value, StudentException):
        assert info.value.type_name == "MemoryError"
    assert sb.call("ok") == 1


def test_cpu_limit(open_sandbox):
    sb = open_sandbox("""
        import time
        def burn():
            end = time.time() + 20
            while time.time() < end:
                pass
        def ok():
            return 1
    """, limits=SandboxLimits(call_timeout=15, memory_mb=1024, cpu_seconds=1))
    start = time.monotonic()
    with pytest.raises(StudentCrashed, match="CPU time limit"):
        sb.call("burn")
    assert time.monotonic() - start < 10
    assert sb.call("ok") == 1


def test_huge_output_is_capped(open_sandbox):
    sb = open_sandbox("""
        import sys
        print("start")
        def shout():
            for _ in range(800):  # 50 MB
                sys.stdout.write("x" * 65536)
                sys.stderr.write("y" * 100)
            return "done"
    """, limits=SandboxLimits(call_timeout=20, memory_mb=1024, output_bytes=10000))
    start = time.monotonic()
    assert sb.call("shout") == "done"
    assert time.monotonic() - start < 15
    out = sb.output()
    assert out.startswith("start\n") and "xxxx" in out and out.endswith("[... output truncated ...]\n")
    assert len(out) < 10100


# ----------------------------------------------------------------------------------------- hostile code
def test_forked_daemon_dies_with_the_sandbox(open_sandbox, marker, level):
    sb = open_sandbox("""
        import os, time
        def daemonize():
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    with open("daemon.pid.tmp", "w") as f:  # renamed when complete: never read half-written
                        f.write(str(os.getpid()))
                    os.rename("daemon.pid.tmp", "daemon.pid")
                    end = time.time() + 40
                    while time.time() < end:
                        time.sleep(0.1)
                os._exit(0)
            os.wait()
            for _ in range(100):
                if os.path.exists("daemon.pid"):
                    break
                time.sleep(0.02)
            with open("daemon.pid") as f:
                return int(f.read())
    """)
    daemon_pid = sb.call("daemonize")
    assert len(_marked(marker)) >= 2  # the worker and the daemon are alive now
    start = time.monotonic()
    sb.close()
    assert time.monotonic() - start < 5
    assert _marked(marker) == []
    if level == "process":  # inside bubblewrap the pid is from the sandbox's own pid namespace
        assert not _alive(daemon_pid)


def _processes_with(word: str) -> list[int]:
    """Live processes whose command line holds `word` (a daemon with a clean environment carries no marker)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if word.encode() in f.read() and _alive(int(name)):
                        found.append(int(name))
            except OSError:
                pass
    return found


def test_reexecuted_daemon_with_a_clean_environment_cannot_rewrite_results(open_sandbox, level, tmp_path):
    """The attack on grades without bubblewrap: a double fork, setsid, and a re-exec of python with an empty
    environment (no sandbox marker), which then rewrites a results file every 50 ms for up to 20 s. It must be
    gone when the sandbox closes (the grading process is its subreaper; at the process level as root the student
    is nobody and cannot write the grader's files at all), and the file must stay as the grader wrote it."""
    out = tmp_path / "OUT"
    out.mkdir()
    results = out / "results.json"
    results.write_text('{"score": 0}')
    word = "daemon-" + secrets.token_hex(6)
    daemon = (f"import time\nend = time.time() + 20\nwhile time.time() < end:\n"
              f"    try:\n        open({str(results)!r}, 'w').write('forged')\n    except OSError:\n        pass\n"
              f"    time.sleep(0.05)\n")
    sb = open_sandbox(f"""
        import os, sys, time
        def start():
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execve(sys.executable, [sys.executable, "-c", {daemon!r}, {word!r}], {{}})
                os._exit(0)
            os.wait()
            time.sleep(0.3)
            return 1
    """)
    assert sb.call("start") == 1
    if level == "process":  # in bubblewrap the daemon lives in the sandbox's pid namespace
        assert _processes_with(word), "the daemon did not start: the test proves nothing"
    sb.close()
    assert _processes_with(word) == []
    written = results.read_text()
    time.sleep(0.3)
    assert results.read_text() == written  # nothing of the student is left to write it
    if AS_ROOT or level == "bubblewrap":  # as a normal user without bubblewrap the student has the grader's rights
        assert written == '{"score": 0}'


@pytest.mark.skipif(not AS_ROOT, reason="as a normal user without bubblewrap students have the grader's uid")
def test_students_graded_at_once_cannot_reach_each_other(open_sandbox, level):
    """Two students at the same time: neither reads the other's files nor signals the other's process (under
    bubblewrap: namespaces of their own; at the process level as root: a uid each, uids.py)."""
    a = open_sandbox("""
        import os
        open("answers.py", "w").write("SECRET = 42")
        def where():
            return os.getcwd(), os.getpid(), os.getuid()
    """)
    b = open_sandbox("""
        import os, signal
        def reach(folder, pid):
            found = []
            for attempt in (lambda: open(os.path.join(folder, "answers.py")).read(), lambda: os.listdir(folder),
                            lambda: os.kill(pid, signal.SIGSTOP), lambda: open(f"/proc/{pid}/mem", "rb").read(1)):
                try:
                    attempt()
                    found.append("reached")
                except OSError as exc:
                    found.append(type(exc).__name__)
            return found, os.getuid()
    """)
    folder, pid, uid_a = a.call("where")
    if level == "bubblewrap":  # a's pid is from a's own pid namespace (in b's, that number is b itself): try a's
        folder, pid = str(a.workdir), 999_999  # folder on the host, which b cannot see
    found, uid_b = b.call("reach", folder, pid)
    assert "reached" not in found, found
    if level == "process":
        assert uid_a != uid_b and 65534 not in (uid_a, uid_b)
    assert a.call("where")[0] is not None  # a is alive and was not stopped


def fork_bomb(children: int) -> str:
    """A cell defining bomb(): forks up to `children` sleepers (each gone after 20 s anyway); returns how many."""
    return textwrap.dedent(f"""
        import os, time
        def bomb():
            n = 0
            for _ in range({children}):
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    time.sleep(20)
                    os._exit(0)
                n += 1
            return n
    """)


def test_fork_bomb_is_bounded_and_cleaned_up(open_sandbox, marker, level):
    sb = open_sandbox(fork_bomb(50), limits=SandboxLimits(call_timeout=10, memory_mb=1024, processes=_nobody_tasks() + 30))
    forked = sb.call("bomb")
    if level == "bubblewrap" and AS_ROOT:
        assert forked < 40  # RLIMIT_NPROC holds for uid 65534 (give or take other sandboxes coming and going)
    assert len(_marked(marker)) >= forked
    sb.close()
    assert _marked(marker) == []


def test_threads_left_running(open_sandbox, marker):
    sb = open_sandbox("""
        import threading, time
        def spin():
            end = time.time() + 30
            while time.time() < end:
                time.sleep(0.001)
        def start():
            threading.Thread(target=spin).start()              # not a daemon thread
            threading.Thread(target=spin, daemon=True).start()
            return threading.active_count()
        def ok():
            return 1
    """)
    assert sb.call("start") == 3
    assert sb.call("ok") == 1
    start = time.monotonic()
    sb.close()
    assert time.monotonic() - start < 5 and _marked(marker) == []


FORGERIES = {
    "garbage": "os.write(fd, b'garbage' * 1000)",
    "huge frame": "os.write(fd, b'AGSB' + (2**40).to_bytes(8, 'big') + (0).to_bytes(8, 'big'))",
    "bad json": "os.write(fd, b'AGSB' + (5).to_bytes(8, 'big') + (0).to_bytes(8, 'big') + b'{[}]x')",
    "wrong id": "os.write(fd, b'AGSB' + (len(H)).to_bytes(8, 'big') + (0).to_bytes(8, 'big') + H)",
    "closed pipe": "os.close(fd)",
    "deep json": "os.write(fd, b'AGSB' + (200000).to_bytes(8, 'big') + (0).to_bytes(8, 'big') + b'[' * 200000)",
}


@pytest.mark.parametrize("how", list(FORGERIES))
def test_forged_reply_is_never_a_value(open_sandbox, how):
    sb = open_sandbox(f"""
        import os, sys
        H = b'{{"id": 1, "status": "ok", "value": 1, "buffers": []}}'
        def forge():
            fd = int(sys.argv[2])
            {FORGERIES[how]}
            return 42
        def ok():
            return 1
    """)
    with pytest.raises((InvalidResult, StudentCrashed)):
        sb.call("forge")
    assert sb.call("ok") == 1


def test_forged_frames_do_not_grow_the_grader(open_sandbox):
    """A student writes its own reply frames: a header of 60 MB of `[[],[],...]` is refused before it is read or
    parsed, and a refused reply is not kept alive by the exception the grader holds on to. Measured: this process's
    resident memory grows by less than 100 MB over eight 60 MB forgeries whose exceptions are all kept (before
    the fix the parsed header alone took gigabytes). Bounded: 8 x 60 MB even if nothing held."""
    sb = open_sandbox("""
        import os, sys
        def flood(kind):
            fd = int(sys.argv[2])
            size = 60 * 2**20
            if kind == "header":
                header = b"[" + b"[]," * (size // 3 - 1) + b"[]]"
                os.write(fd, b"AGSB" + len(header).to_bytes(8, "big") + (0).to_bytes(8, "big"))
                os.write(fd, header)
            else:  # a small malformed header with a 60 MB payload, which is read and must then be let go
                header = b'{"id": 0, "status": "ok", "value": 1, "buffers": [1]}'
                os.write(fd, b"AGSB" + len(header).to_bytes(8, "big") + size.to_bytes(8, "big") + header)
                os.write(fd, bytes(size))
            return 1
        def ok():
            return 1
    """, limits=SandboxLimits(call_timeout=20, memory_mb=1024))

    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

    before = rss_mb()
    kept = []
    for kind in ["header", "payload"] * 4:
        with pytest.raises((InvalidResult, StudentCrashed)) as info:
            sb.call("flood", kind)
        kept.append(info.value)
        assert sb.call("ok") == 1
    assert rss_mb() - before < 100, f"the grader grew by {rss_mb() - before:.0f} MB"
    assert all(e.__context__ is None and e.__cause__ is None for e in kept)


def test_loading_stops_at_the_submission_deadline(tmp_path):
    """Six cells of 2 s each, every one under the 5 s cell limit, against a 3 s deadline for the whole submission:
    loading stops at the deadline (about 3 s, not 12), and the cells not loaded say why."""
    cells = [LoadUnit("nb.ipynb", i, "import time\ntime.sleep(2)\n", "cell") for i in range(6)]
    started = time.monotonic()
    with Sandbox(tmp_path, cells, SandboxLimits(unit_timeout=5), deadline=started + 3) as sb:
        loaded_in = time.monotonic() - started
        report = sb.load_report
    assert loaded_in < 6, f"loading took {loaded_in:.1f} s against a 3 s deadline"
    assert any("whole submission was used up" in r["error"] for r in report), report
    assert [r["index"] for r in report] == sorted(r["index"] for r in report) and report[-1]["index"] == 5


def test_student_modules_named_like_the_sandbox_files_are_theirs(open_sandbox):
    """The sandbox's own files are wire.py, worker.py and keeper.py; a student's helpers of the same names are the
    ones a student's import finds."""
    sb = open_sandbox("""
        import wire, worker, keeper
        def names():
            return wire.NAME, worker.NAME, keeper.NAME
    """, files={"wire.py": "NAME = 'my wire'\n", "worker.py": "NAME = 'my worker'\n",
                "keeper.py": "NAME = 'my keeper'\n"})
    assert sb.call("names") == ("my wire", "my worker", "my keeper")


def test_a_function_that_hung_costs_one_timeout(open_sandbox):
    """Through the graders' proxy, once a call of a function has timed out, later calls of that function fail at
    once (charged to it), directly or through the echo helper, so one infinite loop costs one call limit, not one
    per test; other functions, through the same helper, are still called."""
    from autograder.pytest_plugin import HELPER_UNITS, Student

    sb = open_sandbox(units=[LoadUnit("nb.ipynb", 0, textwrap.dedent("""
        def spin():
            while True:
                pass
        def ok():
            return 1
    """), "cell"), *HELPER_UNITS],
        limits=SandboxLimits(call_timeout=1, memory_mb=1024))
    student = Student(sb)
    with pytest.raises(StudentTimeout, match="timed out after 1 s"):
        student.spin.echo()
    started = time.monotonic()
    for call in (student.spin, student.spin.echo, student.spin):
        with pytest.raises(StudentTimeout, match="spin\\(\\) was not called again: it timed out earlier"):
            call()
    assert time.monotonic() - started < 0.5
    assert student.ok() == 1 and student.ok.echo() == (1, [])


# Well-framed replies that answer the right request (student code can read the request id from the worker's
# frame) but carry values that the grader must refuse.
BAD_VALUES = {
    "bytes do not match the shape": ({"t": "nd", "dtype": "<f8", "shape": [1000], "b": 0}, [8]),
    "object dtype": ({"t": "nd", "dtype": "|O", "shape": [1], "b": 0}, [8]),
    "negative shape": ({"t": "nd", "dtype": "<f8", "shape": [-1], "b": 0}, [8]),
    "buffer out of range": ({"t": "nd", "dtype": "<f8", "shape": [1], "b": 5}, [8]),
    "buffers do not add up": ({"t": "nd", "dtype": "<f8", "shape": [1], "b": 0}, [800]),
    "dtype not a string": ({"t": "nd", "dtype": ["<f8"], "shape": [1], "b": 0}, [8]),
    "absurd empty shape": ({"t": "nd", "dtype": "<f8", "shape": [0, 10**30], "b": 0}, [0]),
    "unknown tag": ({"t": "pickle", "v": "gASVAAAAAAAAAAB9lC4="}, []),
    "bare dict": ({"a": 1}, []),
    "too deep": ("nested below", []),
    "long string": ("x" * (2**20 + 1), []),
    "handle without type": ({"t": "h", "id": 1}, []),
}


@pytest.mark.parametrize("how", list(BAD_VALUES))
def test_well_framed_but_invalid_values_are_refused(open_sandbox, how):
    value, buffers = BAD_VALUES[how]
    if how == "too deep":
        for _ in range(40):
            value = {"t": "tuple", "v": [value]}
    sb = open_sandbox("""
        import json, os, sys
        def forge(value_json, sizes):
            value = json.loads(value_json)
            rid = sys._getframe(1).f_locals["req"]["id"]  # the worker's request: student code can see it
            data = json.dumps({"id": rid, "status": "ok", "value": value, "buffers": sizes}).encode()
            payload = bytes(8 if sizes == [800] else sum(sizes))
            frame = b"AGSB" + len(data).to_bytes(8, "big") + len(payload).to_bytes(8, "big") + data + payload
            os.write(int(sys.argv[2]), frame)
            return 1
        def ok():
            return 1
    """)
    with pytest.raises(InvalidResult):
        sb.call("forge", json.dumps(value), buffers)
    assert sb.call("ok") == 1


def test_monkeypatching_numpy_in_the_child_does_not_reach_the_grader(open_sandbox):
    sb = open_sandbox("""
        import numpy as np
        np.allclose = lambda *a, **k: True
        np.testing.assert_allclose = lambda *a, **k: None
        def value():
            import numpy
            return numpy.zeros(2)
    """)
    out = sb.call("value")
    assert type(out) is np.ndarray and not np.allclose(out, np.ones(2))
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(out, np.ones(2))


def test_environment_and_working_directory(open_sandbox, level):
    sb = open_sandbox("""
        import os, sys, tempfile
        def env():
            return sorted(os.environ)
        def packages():
            import numpy
            return numpy.__file__, sys.prefix
        def where():
            with open(os.path.join(os.environ["HOME"], "x"), "w") as f:
                f.write("home is writable")
            with tempfile.NamedTemporaryFile() as f:
                pass
            with open("written.txt", "w") as f:
                f.write("hi")
            return os.getcwd(), sys.path[0], os.environ["OMP_NUM_THREADS"], os.environ["EXTRA"]
        def read_back():
            with open("written.txt") as f:
                return f.read(), sorted(os.listdir("."))
    """, files={"helper.py": "X = 1\n"}, env={"EXTRA": "1"})
    names = set(sb.call("env"))
    assert names == {"PATH", "HOME", "TMPDIR", "LANG", "MPLBACKEND", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                     "OPENBLAS_NUM_THREADS", "AUTOGRADER", "EXTRA", "AG_TEST_MARKER", testing.MARKER_VAR}
    assert sb.call("packages") == (np.__file__, sys.prefix)  # the grader's own interpreter and packages
    cwd, path0, omp, extra = sb.call("where")
    assert cwd == path0 and omp == "1" and extra == "1"
    assert cwd == (testing.SANDBOX_WORKDIR if level == "bubblewrap" else str(sb.workdir))
    assert sb.call("read_back") == ("hi", ["helper.py", "written.txt"])  # its own files, and what it wrote
    # Under bubblewrap the work folder is a tmpfs of the student's own: what it writes never reaches the host.
    assert (sb.workdir / "written.txt").exists() == (level != "bubblewrap")


# ----------------------------------------------------------------------------------------- bubblewrap only
@needs_bwrap
@pytest.mark.parametrize("warm", ["1", "0"], ids=["warm", "cold"])
def test_bubblewrap_hides_the_machine(tmp_path, monkeypatch, marker, warm):
    monkeypatch.setenv("AUTOGRADER_ISOLATION", "bubblewrap")
    monkeypatch.setenv("AUTOGRADER_WARM", warm)
    repo = testing.PACKAGE_ROOT
    other = tmp_path / "other_student"
    other.mkdir()
    (other / "secret.py").write_text("ANSWER = 42\n")
    work = tmp_path / "work"
    work.mkdir()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    source = textwrap.dedent(f"""
        import ctypes, os, socket, subprocess, threading
        def attempt(action):
            try:
                return ("ok", repr(action()))
            except BaseException as exc:
                return ("failed", type(exc).__name__)
        def probe():
            def connect():
                s = socket.socket()
                s.settimeout(2)
                s.connect(("127.0.0.1", {port}))
            def write(path):
                with open(path, "w") as f:
                    f.write("x")
            def user_namespace():
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
                    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            def thread_fork_spawn():
                t = threading.Thread(target=lambda: None)
                t.start()
                t.join()
                pid = os.fork()
                if pid == 0:
                    os._exit(7)
                return os.waitpid(pid, 0)[1] >> 8, subprocess.run(["true"]).returncode
            return {{
                "course.yml": attempt(lambda: open({str(repo / "course.yml")!r}).read()),
                "autograder": attempt(lambda: os.listdir({str(repo / "autograder")!r})),
                "import": attempt(lambda: __import__("autograder.sandbox")),
                "other": attempt(lambda: open({str(other / "secret.py")!r}).read()),
                "home": attempt(lambda: sorted(os.listdir({str(Path.home())!r}))),
                "connect": attempt(connect),
                "write /usr": attempt(lambda: write("/usr/x")),
                "write /etc": attempt(lambda: write("/etc/x")),
                "write /": attempt(lambda: write("/x")),
                "write home": attempt(lambda: write("/home/student/x")),
                "write venv": attempt(lambda: write({os.path.join(sys.prefix, "x")!r})),
                "write /tmp": attempt(lambda: write("/tmp/x")),
                "uid": os.getuid(),
                "user namespace": attempt(user_namespace),
                "thread, fork, spawn": attempt(thread_fork_spawn),
            }}
        def probe_list():
            return sorted(probe().items())
    """)
    with Sandbox(work, [LoadUnit("nb.ipynb", 0, source, "cell")], SandboxLimits(call_timeout=10),
                 env={"AG_TEST_MARKER": marker}) as sb:
        assert sb.isolation == "bubblewrap"
        result = dict(sb.call("probe_list"))
    listener.close()
    for key in ("course.yml", "autograder", "import", "other", "connect", "write /usr", "write /etc",
                "write /", "write home", "write venv"):
        assert result[key][0] == "failed", (key, result[key])
    # The grader's home shows at most the folders on the way to the Python installation (a pyenv below it).
    on_the_way = {Path(d).relative_to(Path.home()).parts[0] for d in testing.python_dirs()
                  if Path(d).is_relative_to(Path.home()) and Path(d) != Path.home()}
    assert result["home"][0] == "failed" or set(eval(result["home"][1])) <= on_the_way, result["home"]
    assert result["write /tmp"][0] == "ok"
    assert result["thread, fork, spawn"] == ("ok", "(7, 0)")  # the seccomp filter leaves these alone
    if testing.seccomp_in_force():  # the seccomp filter is in force
        assert result["user namespace"] == ("failed", "PermissionError")
    if AS_ROOT:
        assert result["uid"] == 65534
    assert _marked(marker) == []


@needs_bwrap
@pytest.mark.skipif(not AS_ROOT, reason="RLIMIT_NPROC is per real uid only when the grader runs as root")
def test_start_waits_out_another_students_fork_bomb(tmp_path, monkeypatch, marker):
    """uid 65534's process limit is shared: a bomb in one sandbox must only delay the start of another."""
    monkeypatch.setenv("AUTOGRADER_ISOLATION", "bubblewrap")
    bomb = fork_bomb(60)
    limits = SandboxLimits(call_timeout=10, memory_mb=1024, processes=_nobody_tasks() + 40)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with Sandbox(tmp_path / "a", [LoadUnit("nb.ipynb", 0, bomb, "cell")], limits,
                 env={"AG_TEST_MARKER": marker}) as a:
        assert a.call("bomb") < 50  # uid 65534 is now at its limit
        closer = threading.Timer(1.0, a.close)
        closer.start()
        start = time.monotonic()
        with Sandbox(tmp_path / "b", [LoadUnit("nb.ipynb", 0, "def ok():\n    return 1\n", "cell")], limits,
                     env={"AG_TEST_MARKER": marker}) as b:
            assert b.call("ok") == 1
        closer.join()
        assert time.monotonic() - start < 15  # usually ~1 s: it waited for `a` to be closed
    assert _marked(marker) == []


@needs_bwrap
def test_torch_works_inside_bubblewrap(tmp_path, monkeypatch):
    """The course's torch exercise needs torch in the sandbox (no /sys, private /dev/shm, 2 GB of address space)."""
    monkeypatch.setenv("AUTOGRADER_ISOLATION", "bubblewrap")
    source = textwrap.dedent("""
        import numpy as np
        import torch
        def grad(x):
            t = torch.tensor(x, requires_grad=True)
            (t ** 2).sum().backward()
            return t.grad.numpy()
    """)
    with Sandbox(tmp_path, [LoadUnit("nb.ipynb", 0, source, "cell")], SandboxLimits(call_timeout=30)) as sb:
        assert sb.load_report == []
        assert np.array_equal(sb.call("grad", np.array([1.0, -2.0])), [2.0, -4.0])


# ------------------------------------------------------------------------------------------ warm starts
@pytest.mark.parametrize("level", [lv for lv in LEVELS if warm_available(lv)])
def test_students_forked_from_one_zygote_leave_nothing_for_each_other(tmp_path, monkeypatch, level):
    """One zygote serves students one after another: each gets a fresh process; files in /tmp and /dev/shm, a
    patched library, leftover processes and the zygote's own control socket are out of the next one's reach."""
    monkeypatch.setenv("AUTOGRADER_ISOLATION", level)
    monkeypatch.setenv("AUTOGRADER_WARM", "1")
    first = textwrap.dedent("""
        import os, tempfile, numpy as np
        def leave_things():
            for folder in FOLDERS:
                try:
                    with open(os.path.join(folder, "left_behind"), "w") as f:
                        f.write("secret")
                except OSError:
                    pass
            np.linalg.norm = lambda *a, **k: 0.0
            if os.fork() == 0:  # a daemon that would like to outlive this student
                os.setsid()
                import time
                time.sleep(60)
            return os.getpid()
    """)
    second = textwrap.dedent("""
        import os, sys, signal, tempfile, numpy as np
        def look_around():
            found = [os.path.join(folder, name) for folder in FOLDERS
                     if os.path.isdir(folder) for name in os.listdir(folder)]
            others = []
            for name in os.listdir("/proc"):
                if name.isdigit() and int(name) != os.getpid():
                    try:
                        os.kill(int(name), 0)
                        others.append(int(name))
                    except OSError:
                        pass
            return (found, float(np.linalg.norm(np.ones(4))), sorted(os.listdir("/proc/self/fd")),
                    "autograder" in sys.modules, os.getpid(), others)
    """)
    # The process level has no namespaces: the host's /dev/shm is shared, so only bubblewrap is tried there.
    folders = "(tempfile.gettempdir(), '/dev/shm')" if level == "bubblewrap" else "(tempfile.gettempdir(),)"
    first, second = (source + f"FOLDERS = {folders}\n" for source in (first, second))
    pids = []
    for i, source in enumerate([first, second]):
        work = tmp_path / f"w{i}"
        work.mkdir()
        with Sandbox(work, [LoadUnit("nb.ipynb", 0, source, "cell")], SandboxLimits(call_timeout=10)) as sb:
            assert sb.warm
            if i == 0:
                pids.append(sb.call("leave_things"))
                zygote = sb._resources.zygote
            else:
                assert sb._resources.zygote is zygote  # the same warm parent served both
                found, norm, fds, sees_grader, pid, others = sb.call("look_around")
    shown = {os.path.join("/tmp", os.path.relpath(d, "/tmp").split(os.sep)[0]) for d in testing.python_dirs()
             if d.startswith("/tmp/")}  # a virtualenv below /tmp is shown again, read-only, on the fresh /tmp
    assert [f for f in found if f not in shown] == []
    assert norm == 2.0
    assert fds == ["0", "1", "2", "3", "4", fds[-1]] and len(fds) == 6  # no zygote socket; the last is listdir's
    assert not sees_grader
    if level == "bubblewrap":  # each student is pid 2 of a pid namespace of its own, below our init (pid 1)
        assert pid == pids[0] == 2
        # Alone with its init (the daemon is dead); as nobody it cannot even probe init. As a normal user it shares
        # init's uid, so signal 0 reaches it, but init ignores every signal (tested elsewhere).
        assert others == ([] if AS_ROOT else [1])
    else:
        assert pid != pids[0]


@needs_bwrap
@pytest.mark.skipif(not warm_available("bubblewrap"), reason="no warm start under bubblewrap here")
def test_warm_student_still_sees_python_folders_below_tmp(tmp_path, monkeypatch):
    """Each student gets a fresh /tmp; a virtualenv below /tmp (a checkout cloned into /tmp, as CI does) must stay
    visible, read-only, on top of it."""
    import shutil
    import tempfile

    lib = Path(tempfile.mkdtemp(prefix="agsb-lib-", dir="/tmp"))
    try:
        (lib / "helper_below_tmp.py").write_text("VALUE = 42\n")
        lib.chmod(0o755)
        testing.show_python_dir(monkeypatch, str(lib))  # with a zygote of its own, that shows the folder
        monkeypatch.setenv("AUTOGRADER_ISOLATION", "bubblewrap")
        monkeypatch.setenv("AUTOGRADER_WARM", "1")
        source = textwrap.dedent("""
            import helper_below_tmp
            def probe():
                with open("/tmp/mine.txt", "w") as f:
                    f.write("x")
                try:
                    open(helper_below_tmp.__file__, "a").close()
                    writable = True
                except OSError:
                    writable = False
                return helper_below_tmp.VALUE, sorted(os.listdir("/tmp")), writable
            import os
        """)
        with Sandbox(tmp_path, [LoadUnit("nb.ipynb", 0, source, "cell")], SandboxLimits(call_timeout=10)) as sb:
            assert sb.warm
            value, listing, writable = sb.call("probe")
        assert value == 42 and "mine.txt" in listing and not writable
    finally:
        testing.close_idle_zygotes()  # the ones that show the folder
        shutil.rmtree(lib, ignore_errors=True)


def test_call_each_is_one_round_trip_with_fresh_arguments_per_call(open_sandbox):
    """Student.call_each (the feedback pictures' many thresholds): the same values as calls one by one, in one
    request; every call gets its own copy of the arguments, so a function that changes its input in place cannot
    change what the next call is given."""
    from autograder.pytest_plugin import HELPER_UNITS, Student
    from autograder.vocabulary import GradingFailure

    cell = LoadUnit("nb.ipynb", 0, "def scale(a, s):\n    a *= s\n    return a.sum()\n", "cell")
    sb = open_sandbox(units=[cell, *HELPER_UNITS])
    requests = []
    original = sb._resources.child.request
    sb._resources.child.request = lambda *args, **kwargs: requests.append(1) or original(*args, **kwargs)
    student = Student(sb)
    a = np.arange(3.0)
    assert student.call_each("scale", [(a, 2.0), (a, 3.0), (a, 10.0)]) == [6.0, 9.0, 30.0]
    assert len(requests) == 1
    assert a.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(GradingFailure, match="absent is not defined"):
        student.call_each("absent", [(1,)])
