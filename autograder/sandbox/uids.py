"""A user id of its own for each student graded at the process level as root (no bubblewrap).

Under bubblewrap every student is nobody inside namespaces of its own, where no other student is visible. Without
it, students graded at the same time (--jobs, the canaries beside the first students, other runs on the machine)
would share nobody's uid, and one could read another's work folder, signal its processes or write into its
memory (/proc/<pid>/mem is open to the same uid). So each sandbox leases an unused uid from a range no account
uses (no passwd entry is needed for a process or a file), held by a lock file for the sandbox's life, so that no
two sandboxes on this machine share one, and drawn at random so that a uid is rarely reused. RLIMIT_NPROC, which
counts per uid, then also counts per student.
"""

from __future__ import annotations

import fcntl
import os
import random
import stat
from pathlib import Path

FIRST, COUNT = 2_100_000_000, 1 << 20  # above the subordinate-uid ranges containers use, below 2**31
LOCKS = Path("/run/autograder-uids") if os.path.isdir("/run") else Path("/tmp/autograder-uids")
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")


class UidLease:
    def __init__(self, uid: int, fd: int):
        self.uid, self._fd = uid, fd

    def release(self) -> None:
        """Removes what the uid left in the machine's world-writable folders (top level: a file or a folder it
        made there), then frees the uid."""
        from autograder.files import remove_tree

        if self._fd < 0:
            return
        for folder in WORLD_WRITABLE:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.stat(follow_symlinks=False).st_uid == self.uid:
                        if entry.is_dir(follow_symlinks=False):
                            remove_tree(entry.path)
                        else:
                            os.unlink(entry.path)
                except OSError:
                    pass
        try:
            os.unlink(LOCKS / str(self.uid))  # before unlocking: a lease that opened it before will see it is gone
        except OSError:
            pass
        os.close(self._fd)
        self._fd = -1


def lease() -> UidLease:
    """An unused uid, locked for this process until released (root only)."""
    LOCKS.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(LOCKS)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise RuntimeError(f"{LOCKS} is not a folder of this user: cannot lease student uids safely")
    for _ in range(64):
        uid = FIRST + random.randrange(COUNT)
        fd = os.open(LOCKS / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(LOCKS / str(uid)).st_ino:  # released and removed meanwhile
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            continue
        return UidLease(uid, fd)
    raise RuntimeError("no free student uid found")
