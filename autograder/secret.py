"""The course secret: what makes the hidden test inputs unknowable to anyone but the course staff.

Each student's hidden inputs come from HMAC-SHA256(secret, [course.yml's seed, student id, purpose]); the seed
and the kit are public (a fork, a Gradescope zip), the secret is not. It is made once per course
(`autograder secret`: 32 random bytes as hex) and kept beside course.yml, outside git:

    <course root>/.autograder/course_secret    mode 0600; .autograder/.gitignore ignores the folder itself

A process that grades reads it from $AUTOGRADER_COURSE_SECRET when that is set (Dask workers, CI), else from that
file (the instructor's machine; Gradescope, whose zip carries it). Only trusted processes hold it: a student's
sandbox gets an environment of its own and never the course folder, and results carry only its fingerprint (an
HMAC of a fixed text, which tells which secret graded a result and nothing about the secret).

The example class and the test suite use PUBLIC_EXAMPLE_SECRET, said so on every run that uses it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autograder.course import CourseConfigError

SECRET_ENV = "AUTOGRADER_COURSE_SECRET"
SECRET_DIR = ".autograder"
SECRET_FILE = "course_secret"
MIN_LENGTH = 32  # characters; `autograder secret` writes 64 hex digits (256 bits)
# Public on purpose: the example class (`make demo`) and the tests, whose hidden inputs need no secrecy. The
# Makefile spells it out too.
PUBLIC_EXAMPLE_SECRET = "public-example-secret-anyone-can-compute-these-inputs"
_FINGERPRINT_TEXT = b"autograder course secret fingerprint"


class CourseSecretError(CourseConfigError):
    """No usable course secret here (missing, unreadable, too short, or not the one the batch started with); the
    message says what to do. Never contains the secret."""


@dataclass(frozen=True)
class CourseSecret:
    key: bytes = field(repr=False)
    source: str  # where it was read: $AUTOGRADER_COURSE_SECRET or the file's path
    warning: str = ""  # e.g. a file others can read

    @property
    def fingerprint(self) -> str:
        """Names the secret without revealing it: the same on every machine that holds the same secret."""
        return hmac.new(self.key, _FINGERPRINT_TEXT, hashlib.sha256).hexdigest()[:16]

    @property
    def public(self) -> bool:
        return hmac.compare_digest(self.key, PUBLIC_EXAMPLE_SECRET.encode())

    def describe(self) -> str:
        if self.public:
            return (f"warning: the hidden inputs come from the kit's PUBLIC example secret ({self.source}): anyone "
                    "can compute them. Fine for the example class and the tests; for students make the course's "
                    "own with `autograder secret` (README: the course secret).")
        return (f"Hidden inputs: from the course secret in {self.source} (fingerprint {self.fingerprint})"
                + (f"; {self.warning}" if self.warning else ""))

    def rng(self, seed: int, student_id: str, *purpose) -> np.random.Generator:
        """The generator of one student's inputs for one purpose: the same for the same secret, seed, student and
        purpose (a regrade); unrelated otherwise, and not computable without the secret."""
        message = json.dumps([seed, student_id, *map(str, purpose)]).encode()  # a list: no ambiguous joins
        digest = hmac.new(self.key, message, hashlib.sha256).digest()
        return np.random.default_rng(int.from_bytes(digest, "little"))

    def __reduce__(self):
        raise TypeError("a course secret is not sent to other processes: each reads it from its environment or "
                        "the course folder")


def secret_path(root: Path) -> Path:
    return Path(root) / SECRET_DIR / SECRET_FILE


def _missing(root: Path) -> str:
    return (f"no course secret for the course in {root}. The hidden test inputs derive from it, so that the kit and "
            "a student id are not enough to compute them. Make it once with `autograder secret` (it is kept in "
            f"{secret_path(root)}, outside git; back it up), or copy it there from where this course was graded "
            f"before. On a Dask worker or in CI set {SECRET_ENV} instead. (The example class, `make demo`, uses "
            "the kit's public example secret.)")


def _checked(text: str, where: str) -> bytes:
    text = text.strip()
    if len(text) < MIN_LENGTH:
        raise CourseSecretError(f"the course secret in {where} has {len(text)} characters; it needs at least "
                                f"{MIN_LENGTH} (`autograder secret` makes one)")
    return text.encode()


def load_secret(root: Path, environ=os.environ) -> CourseSecret:
    """The course secret of the course in `root`: $AUTOGRADER_COURSE_SECRET if set (not empty), else
    root/.autograder/course_secret. Raises CourseSecretError saying how to make one."""
    value = environ.get(SECRET_ENV, "")
    if value.strip():
        return CourseSecret(_checked(value, f"${SECRET_ENV}"), f"${SECRET_ENV}")
    path = secret_path(root)
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CourseSecretError(_missing(Path(root))) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CourseSecretError(f"cannot read the course secret {path}: {type(exc).__name__}: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None
    loose = stat.S_IMODE(mode) & 0o077
    return CourseSecret(_checked(text, str(path)), str(path),
                        f"others can read it (mode {stat.S_IMODE(mode):o}): chmod 600 {path}" if loose else "")


def make_secret(root: Path) -> tuple[CourseSecret, bool]:
    """The course's secret file, made if missing (never replaced); returns (it, whether it was made now)."""
    path = secret_path(root)
    if path.exists():
        return load_secret(root, environ={}), False
    path.parent.mkdir(mode=0o700, exist_ok=True)
    ignore = path.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# The course secret: never committed (autograder/secret.py).\n*\n", encoding="utf-8")
    try:  # O_EXCL: two commands at once cannot both write a secret
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_secret(root, environ={}), False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secrets.token_hex(32) + "\n")
    return load_secret(root, environ={}), True


def secret_command(root: Path, environ=os.environ) -> str:
    """`autograder secret`: makes the course's secret if it has none, and says where it is and what to do."""
    secret, made = make_secret(root)
    lines = [f"{'Made' if made else 'The course secret is'} {secret.source} (fingerprint {secret.fingerprint})"
             + (": the course secret, mode 600, ignored by git." if made else "."),
             "Every student's hidden test inputs derive from it. Back it up (e.g. in the staff's password manager):",
             "without it a regrade uses other hidden inputs (correct work keeps its score, partly wrong work may",
             "not). `autograder bundle gradescope` puts it in the zip; for Dask workers:",
             f"  export {SECRET_ENV}=\"$(cat {secret.source})\""]
    if secret.warning:
        lines.append(f"warning: {secret.warning}")
    override = environ.get(SECRET_ENV, "").strip()
    if override:
        same = hmac.compare_digest(override.encode(), secret.key)
        lines.append(f"note: {SECRET_ENV} is set in this shell and is used instead of the file"
                     + (" (it holds the same secret)." if same else ", and it holds a DIFFERENT secret."))
    return "\n".join(lines)


def expect_fingerprint(secret: CourseSecret, fingerprint: str | None, where: str) -> CourseSecret:
    """The secret, if it is the one the batch started with (None: no expectation); else CourseSecretError."""
    if fingerprint is not None and not hmac.compare_digest(secret.fingerprint, fingerprint):
        raise CourseSecretError(f"{where} has another course secret ({secret.source}, fingerprint "
                                f"{secret.fingerprint}) than the one grading started with (fingerprint "
                                f"{fingerprint}): its students would get other hidden inputs. Give it the course's "
                                f"secret ({SECRET_ENV}, or the course's {SECRET_DIR}/{SECRET_FILE}).")
    return secret
