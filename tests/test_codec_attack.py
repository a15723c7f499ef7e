"""A forged reply that names one buffer many times, through a real sandbox: the trusted process decodes at most what
was sent (issue 20).

The student's function finds the worker's frame and answers the call itself, as the worker would: 60 MB of
payload and a header whose list names that one buffer 48 times. The grader used to copy the buffer once per
reference (48 x 60 MB); it must refuse the reply before building anything, so that its peak memory grows by the
frame alone. Each attack runs in a fresh Python process (run this file), so that the peak (VmHWM) is about the
attack alone; a data limit there keeps a regression from harming the machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

MB = 2**20
REPLY_LIMIT_MB = 64  # the sandbox's reply_bytes for the attack
PAYLOAD_MB = 60  # one legal frame under it
REFERENCES = 48
GUARD_MB = 1024  # RLIMIT_DATA headroom of the attacked process: a regression fails with MemoryError, not the machine
# The frame is buffered once, legitimately (payload + header + read slack); nothing is decoded from a refused reply.
BOUND_MB = REPLY_LIMIT_MB + 16

STUDENT = '''
import sys, time

def forge(references, megabytes):
    frame = sys._getframe(1)
    while not hasattr(frame.f_locals.get("self"), "reply_fd"):  # the worker's call(), wherever it is
        frame = frame.f_back
    worker, request = frame.f_locals["self"], frame.f_locals["req"]
    size = megabytes * 2**20
    array = {"t": "nd", "dtype": "<f8", "shape": [size // 8], "b": 0}
    worker.send({"id": request["id"], "status": "ok", "value": {"t": "list", "v": [array] * references}},
                [bytes(size)])
    time.sleep(30)  # the grader has its answer: it ends this process

def honest(megabytes):
    import numpy as np
    return np.arange(megabytes * 2**20 // 8, dtype=float)
'''


def _memory_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak() -> int:
    """Resets VmHWM to the current resident size where the kernel allows it; the peak to measure from (MB)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # VmHWM stays the process's peak so far: measure from the current resident size instead
    return _memory_kb("VmRSS") / 1024


def _attack(guard_mb: int) -> dict:
    """Runs in a fresh process: the forged call, then an honest one of the same size; their peaks in MB."""
    from autograder.sandbox import InvalidResult, LoadUnit, Sandbox, SandboxLimits, StudentError

    data = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (_memory_kb("VmData") * 1024 + guard_mb * MB, data[1]))
    limits = SandboxLimits(call_timeout=20, memory_mb=512, reply_bytes=REPLY_LIMIT_MB * MB)
    with tempfile.TemporaryDirectory() as work, \
            Sandbox(Path(work), [LoadUnit("nb.ipynb", 0, STUDENT, "cell")], limits, preload=("numpy",)) as sb:
        report = {"isolation": sb.isolation, "warm": sb.warm, "refused": None}
        start = _reset_peak()
        try:
            sb.call("forge", REFERENCES, PAYLOAD_MB)
        except InvalidResult as exc:
            report["refused"] = str(exc)
        report["forged_growth_mb"] = round(_memory_kb("VmHWM") / 1024 - start, 1)
        start = _reset_peak()
        try:
            value = sb.call("honest", PAYLOAD_MB)  # from a fresh student process: the forger's was discarded
            report["honest_ok"] = bool(value.shape == (PAYLOAD_MB * MB // 8,) and value[-1] == value.size - 1)
        except StudentError as exc:  # e.g. the forger's process kept, answering out of step
            report["honest_ok"] = f"{type(exc).__name__}: {exc}"
        report["honest_growth_mb"] = round(_memory_kb("VmHWM") / 1024 - start, 1)
    return report


def run_attack(guard_mb: int = GUARD_MB) -> dict:
    """The attack in a fresh process of this checkout (PYTHONPATH=... python tests/test_codec_attack.py MB runs it
    by hand, e.g. against another checkout with a larger guard)."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, __file__, str(guard_mb)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def _modes() -> list[str]:
    from autograder.sandbox import testing

    levels = ["process"] + (["bubblewrap"] if testing.bubblewrap_problem() is None else [])
    return [f"{level}-{start}" for level in levels for start in ("warm", "cold")]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("mode", _modes())
def test_a_reply_naming_one_buffer_48_times_is_refused_within_the_frames_memory(mode, monkeypatch):
    from autograder.sandbox import warm_available

    level, start = mode.split("-")
    monkeypatch.setenv("AUTOGRADER_ISOLATION", level)
    monkeypatch.setenv("AUTOGRADER_WARM", "1" if start == "warm" else "0")
    if start == "warm" and not warm_available(level):
        pytest.skip(f"no warm start at the {level} level here")
    report = run_attack()
    print(report)
    assert report["isolation"] == level and report["warm"] == (start == "warm")
    assert report["refused"] is not None and "names buffer 0 more than once" in report["refused"], report
    assert report["forged_growth_mb"] <= BOUND_MB, report  # before the fix: ~48 x 60 MB
    # The meter sees a reply of this size: the honest one is buffered, then copied out (2 x 60 MB).
    assert report["honest_ok"] is True and report["honest_growth_mb"] >= PAYLOAD_MB, report


if __name__ == "__main__":
    print(json.dumps(_attack(int(sys.argv[1]))))
