"""The per-student cgroup is emptied whatever its processes did to leave their session or parent: kill_all kills
every member (cgroup.kill on v2; pids.max 0 and SIGKILL on v1) and the group is then removed."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from autograder.sandbox import cgroups
from autograder.sandbox.cgroups import StudentGroup

pytestmark = pytest.mark.skipif(cgroups.support()[0] is None, reason=f"no cgroups here: {cgroups.support()[1]}")


def test_kill_all_empties_the_group_of_a_forking_daemon():
    group = StudentGroup.create(memory_bytes=256 << 20, processes=64)
    assert group is not None
    # A member that double-forks into a setsid daemon which keeps forking short-lived children (bounded: 30 s).
    script = ("import os, time\n"
              "if os.fork() == 0:\n"
              "    os.setsid()\n"
              "    if os.fork() == 0:\n"
              "        end = time.time() + 30\n"
              "        while time.time() < end:\n"
              "            try:\n"
              "                pid = os.fork()\n"
              "            except OSError:\n"
              "                time.sleep(0.01)\n"
              "                continue\n"
              "            if pid == 0:\n"
              "                time.sleep(0.05)\n"
              "                os._exit(0)\n"
              "            time.sleep(0.01)\n"
              "    os._exit(0)\n")
    procs = tuple(group.procs)

    def join():
        for path in procs:
            with open(path, "w") as f:
                f.write("0")

    subprocess.run(["python3", "-c", script], preexec_fn=join, check=True, timeout=30)
    members = lambda: (group.dirs[0] / "cgroup.procs").read_text().split()  # noqa: E731
    deadline = time.monotonic() + 5
    while not members() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert members(), "the daemon did not start: the test proves nothing"
    started = time.monotonic()
    group.kill_all()
    assert members() == []
    assert time.monotonic() - started < 5
    group.close()
    assert not any(d.exists() for d in group.dirs)
