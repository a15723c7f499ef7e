"""For the kit's own tests of the sandbox: what they look at and the few things they change, so that tests do
not reach into the private names of the modules."""

from __future__ import annotations

import os
from pathlib import Path

from autograder.sandbox import bwrap, policy, procfs, zygote
from autograder.sandbox.policy import MARKER_VAR, SANDBOX_WORKDIR  # noqa: F401  (re-exported for tests)

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout (or the kit folder of a bundle)


def bubblewrap_problem() -> str | None:
    """None where bubblewrap works here, else why not."""
    return bwrap._bwrap_problem()


def seccomp_in_force() -> bool:
    return bwrap._bwrap_setup()[1]


def python_dirs() -> tuple[str, ...]:
    """The folders of the Python installation that the sandbox shows read-only."""
    return policy._python_dirs()


def zygote_processes() -> list[int]:
    """Live processes forked by this process's zygotes (keepers, inits and student processes): a forked process
    keeps the zygote's initial environment, so the sandbox's marker cannot find them."""
    pids = []
    for z in zygote._all_zygotes:
        if z.proc.poll() is not None:
            continue
        top = procfs._python_of(z.proc.pid, z.level)
        pids += [pid for pid in procfs._descendants(top) if os.path.exists(f"/proc/{pid}")] if top > 0 else []
    return pids


def show_python_dir(monkeypatch, folder: str) -> None:
    """Shows `folder` in the sandbox as part of the Python installation (on the import path, read-only), with
    zygotes of its own, for the rest of the test (pytest's monkeypatch undoes it)."""
    dirs, path = policy._python_dirs() + (folder,), policy._child_path() + [folder]
    monkeypatch.setattr(policy, "_python_dirs", lambda: dirs)
    monkeypatch.setattr(policy, "_child_path", lambda: path)
    monkeypatch.setattr(zygote, "_idle_zygotes", {})


def close_idle_zygotes() -> None:
    """Ends the zygotes no sandbox is using now (a test that changed what they show must not leave them)."""
    for idle in zygote._idle_zygotes.values():
        while idle:
            idle.pop().close()
