"""The seccomp filter given to bubblewrap (--seccomp), assembled here as classic BPF (no library needed)."""

from __future__ import annotations

import errno
import functools
import os

# A small seccomp filter for bubblewrap (--seccomp), assembled here to need no library. The student has no
# capabilities, but could still create a user namespace (the usual first step of kernel privilege escalations)
# or reach rarely needed kernel interfaces; these calls fail with EPERM instead. Threads, fork, numpy and torch
# are unaffected (glibc falls back from clone3, which the filter cannot inspect, to clone).
_X86_64_SYSCALLS = {"clone": 56, "unshare": 272, "clone3": 435, "add_key": 248, "request_key": 249,
                    "keyctl": 250, "perf_event_open": 298, "bpf": 321, "userfaultfd": 323,
                    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}
_DENIED = ("add_key", "request_key", "keyctl", "perf_event_open", "bpf", "userfaultfd", "io_uring_setup",
           "io_uring_enter", "io_uring_register")
CLONE_NEWUSER = 0x10000000


@functools.cache
def _seccomp_program() -> bytes | None:
    """Classic BPF for seccomp on x86-64 (other machines get no filter); bytes of struct sock_filter[]."""
    if os.uname().machine != "x86_64":
        return None
    nr = _X86_64_SYSCALLS
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
    allow, kill = 0x7FFF0000, 0x80000000  # SECCOMP_RET_ALLOW, SECCOMP_RET_KILL_PROCESS
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS  # SECCOMP_RET_ERRNO | errno
    # (code, jump-if-true label, jump-if-false label, k); labels are resolved to relative offsets below.
    program = [
        (ld, None, None, 4),  # seccomp_data.arch
        (jeq, "next", "kill", 0xC000003E),  # AUDIT_ARCH_X86_64; any other ABI (i386, x32 below) is killed
        (ld, None, None, 0),  # seccomp_data.nr
        (jge, "kill", "next", 0x40000000),  # x32 syscall numbers
        (jeq, "flags", "next", nr["unshare"]),
        (jeq, "flags", "next", nr["clone"]),
        (jeq, "enosys", "next", nr["clone3"]),
        *[(jeq, "eperm", "next", nr[name]) for name in _DENIED],
        (ret, None, None, allow),
        ("flags", ld, None, None, 16),  # args[0], low 32 bits: the clone/unshare flags
        (jset, "eperm", "allow", CLONE_NEWUSER),
        ("allow", ret, None, None, allow),
        ("eperm", ret, None, None, eperm),
        ("enosys", ret, None, None, enosys),
        ("kill", ret, None, None, kill),
    ]
    labels, rows = {}, []
    for i, row in enumerate(program):
        if isinstance(row[0], str):
            labels[row[0]] = i
            row = row[1:]
        rows.append(row)
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(rows):
        offset = [0 if j in (None, "next") else labels[j] - i - 1 for j in (jt, jf)]
        out += code.to_bytes(2, "little") + bytes(offset) + k.to_bytes(4, "little")
    return bytes(out)
