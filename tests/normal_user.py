"""A normal (non-root) user with its own copy of this checkout and its own virtualenv, for the tests that check the
kit where most instructors run it: as themselves, not root. Used by tests/test_normal_user.py when the suite runs
as root (as CI does); as a normal user the whole suite already runs where it should.

The user (NAME) is created if missing. Its copy of the checkout (the files git tracks or would track, as they are
in the working tree) is refreshed on every run; its virtualenv is made by scripts/setup.sh, as a new instructor
would, with a Python the user can run (root's own interpreter may live under /root, which others cannot enter),
and is kept between runs (setup.sh only installs what is missing).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from autograder import REPO_ROOT

NAME = "vg-instructor"
SETUP_TIMEOUT = 1800  # a first set-up installs the kit's dependencies from the package index


class Unavailable(Exception):
    """No normal user can be made or used here (the message says why)."""


def user_python() -> str:
    """A Python 3.11 that a normal user can run."""
    for candidate in ("/usr/bin/python3.11", "/usr/local/bin/python3.11"):
        if os.path.exists(candidate) and os.stat(candidate).st_mode & 0o001:
            return candidate
    raise Unavailable("no Python 3.11 outside /root for a normal user (/usr/bin/python3.11)")


def ensure_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        raise Unavailable("only root can make the normal user")
    try:
        return pwd.getpwnam(NAME)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        raise Unavailable("useradd is not installed")
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", NAME], check=True, capture_output=True)
    return pwd.getpwnam(NAME)


def tracked_files(root: Path) -> list[str]:
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout
    return [name for name in listed.decode().split("\0") if name and (root / name).is_file()]


def user_env(user: pwd.struct_passwd, **extra: str) -> dict[str, str]:
    """A login-like environment for the user; pip's settings of this machine (PIP_*) are kept, as the user's own
    shell would have them."""
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in ("LANG", "TERM")}
    env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name, PATH="/usr/local/bin:/usr/bin:/bin",
               TMPDIR="/tmp", **extra)
    return env


def run_as(user: pwd.struct_passwd, argv: list[str], cwd: Path, timeout: float, **extra: str):
    """Runs argv as the user (its uid, gid and groups, a fresh session), returning the CompletedProcess."""
    def demote():
        os.setgroups(os.getgrouplist(user.pw_name, user.pw_gid))
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return subprocess.run(argv, cwd=cwd, env=user_env(user, **extra), preexec_fn=demote, capture_output=True,
                          text=True, timeout=timeout, start_new_session=True)


def prepare_checkout() -> tuple[pwd.struct_passwd, Path]:
    """(the user, its checkout with a ready .venv)."""
    user = ensure_user()
    python = user_python()
    kit = Path(user.pw_dir) / "kit"
    kit.mkdir(exist_ok=True)
    for name in tracked_files(REPO_ROOT):
        dest = kit / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, dest)
    for dirpath, dirnames, filenames in os.walk(kit):
        if ".venv" in dirnames and Path(dirpath) == kit:
            dirnames.remove(".venv")  # the user's own: made by the user
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), user.pw_uid, user.pw_gid, follow_symlinks=False)
    os.chown(kit, user.pw_uid, user.pw_gid)
    setup = run_as(user, ["bash", "scripts/setup.sh"], kit, SETUP_TIMEOUT, PYTHON=python)
    if setup.returncode != 0:
        raise RuntimeError(f"scripts/setup.sh failed as {NAME}:\n{setup.stdout[-3000:]}\n{setup.stderr[-3000:]}")
    return user, kit


if __name__ == "__main__":  # by hand: python tests/normal_user.py  (prints the user's checkout)
    try:
        print(prepare_checkout()[1])
    except Unavailable as exc:
        sys.exit(f"not available: {exc}")
