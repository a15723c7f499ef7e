"""`autograder bundle gradescope`: the zip to upload as a Gradescope "programming assignment" autograder.

The zip holds, at its top level:

    setup.sh          Gradescope runs it once, as root, when it builds the autograder image: bubblewrap,
                      Python 3.11, a virtualenv at /autograder/venv with the kit installed (editable) from source/
    run_autograder    run for every submission: `python -m autograder.gradescope_run` with that virtualenv
    source/           what the engine needs and nothing else: the autograder package (graders included),
                      solutions/<assignment>/ (the reference is loaded from it), the release <assignment>/ (the
                      canary grades it before each submission), course.yml, pyproject.toml, README.md, and
                      .autograder/course_secret (the course secret, mode 0600: the hidden inputs derive from it)

Gradescope extracts the zip into /autograder/source/ (and copies run_autograder to /autograder/run_autograder),
so on Gradescope the kit sits at /autograder/source/source/; both scripts find it relative to themselves.

The same inputs always give the same bytes: files are sorted, and every entry has a fixed date and fixed
permissions (0755 for the two scripts, 0600 for the course secret, 0644 otherwise). The zip itself is written 0600:
it holds the solutions and the course secret, so it goes to Gradescope (private to the staff) and nowhere else.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import zipfile
from pathlib import Path

from autograder import REPO_ROOT
from autograder.course import Course, CourseConfigError, load_course
from autograder.secret import SECRET_DIR, SECRET_FILE, load_secret

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold; any fixed date makes builds reproducible
KIT_DIR = "source"  # the kit's folder inside the zip
VENV = "/autograder/venv"
SKIPPED_DIRS = {"__pycache__", ".ipynb_checkpoints"}
SKIPPED_SUFFIXES = (".pyc", ".pyo", "~", ".swp", ".swo", ".orig", ".rej", ".tmp")
SAFE_ID = re.compile(r"[A-Za-z0-9_.-]+")
SECRET_ENTRY = f"{KIT_DIR}/{SECRET_DIR}/{SECRET_FILE}"


class BundleError(Exception):
    """The bundle cannot be built (missing solutions, unknown assignment, a symbolic link...); the message says why."""


def build_gradescope_bundle(course: Course, assignment_id: str, dest_zip: Path, root: Path = REPO_ROOT, *,
                            course_file: Path | None = None) -> Path:
    """Write the Gradescope autograder zip of `assignment_id` to `dest_zip` (atomically) and return its path.

    `root` is the checkout the kit is taken from (its autograder/ package, <solutions_dir>/<assignment>/,
    pyproject.toml and README.md); `course_file` is the course file, root/course.yml by default: it is bundled as
    source/course.yml and must describe the same course as `course`. The course secret is the course's (its
    folder's .autograder/course_secret, or $AUTOGRADER_COURSE_SECRET), bundled where gradescope_run reads it.
    Raises BundleError.
    """
    root = Path(root).resolve()
    course_file = Path(course_file) if course_file is not None else root / "course.yml"
    try:
        assignment = course.assignment(assignment_id)
    except CourseConfigError as exc:
        raise BundleError(str(exc)) from None
    if not SAFE_ID.fullmatch(assignment.id):
        raise BundleError(f"assignment id {assignment.id!r}: only letters, digits, '_', '.' and '-' can be bundled")
    try:
        if load_course(course_file) != course:
            raise BundleError(f"{course_file} does not describe the course being bundled; pass the course file "
                              "it was loaded from")
        from autograder.grade import GradeOptions, check_course

        # Gradescope would give every student an internal error: stop here instead, naming the function.
        check_course(GradeOptions(assignment, dest_zip, 1.0, "", course=course, root=course_file.parent))
    except CourseConfigError as exc:
        raise BundleError(str(exc)) from None

    files: dict[str, bytes] = {}  # name in the zip -> content
    for path in _package_files(root / "autograder"):
        files[f"{KIT_DIR}/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    if not any(name.startswith(f"{KIT_DIR}/autograder/graders/test_") for name in files):
        raise BundleError(f"no graders in {root / 'autograder' / 'graders'}")

    solutions = root / course.solutions_dir / assignment.id
    if not solutions.is_dir():
        raise BundleError(f"no solutions folder {solutions}: the reference is loaded from it")
    solution_files = _package_files(solutions)
    present = {p.name for p in solution_files if p.parent == solutions}
    missing = [nb for nb in assignment.notebooks if nb not in present]
    if missing:
        raise BundleError(f"{solutions} lacks {', '.join(missing)} (listed in {course_file.name})")
    for path in solution_files:
        files[f"{KIT_DIR}/{course.solutions_dir}/{assignment.id}/{path.relative_to(solutions).as_posix()}"] = \
            path.read_bytes()
    # The release too: before grading, the canary grades the untouched release (it must score 0).
    release = root / course.release_dir / assignment.id
    if not release.is_dir():
        raise BundleError(f"no release folder {release}: run `autograder release` (the canary grades it)")
    for path in _package_files(release):
        files[f"{KIT_DIR}/{course.release_dir}/{assignment.id}/{path.relative_to(release).as_posix()}"] = \
            path.read_bytes()

    files[f"{KIT_DIR}/course.yml"] = course_file.read_bytes()
    try:  # Gradescope reads it from the kit's folder (gradescope_run: the course root is the kit there)
        secret = load_secret(course_file.parent)
    except CourseConfigError as exc:
        raise BundleError(f"{exc}\nThe bundle carries the course secret, so that Gradescope grades with the same "
                          "hidden inputs as `autograder grade`.") from None
    files[SECRET_ENTRY] = secret.key + b"\n"
    for name in ("pyproject.toml", "README.md"):  # pip needs both to install the kit (README is its long description)
        path = root / name
        if not path.is_file():
            raise BundleError(f"{path} is missing: the bundle installs the kit from it")
        files[f"{KIT_DIR}/{name}"] = path.read_bytes()
    files["setup.sh"] = SETUP_SH.encode()
    files["run_autograder"] = RUN_AUTOGRADER.replace("@ASSIGNMENT@", shlex.quote(assignment.id)).encode()
    return _write_zip(files, Path(dest_zip), executable={"setup.sh", "run_autograder"}, private={SECRET_ENTRY})


def _package_files(folder: Path) -> list[Path]:
    """The regular files under `folder`, sorted; no caches, hidden files or editor droppings. A symbolic link
    is an error (its target might be anything, and a zip cannot hold it portably)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith(".")
                             and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith(SKIPPED_SUFFIXES):
                continue
            path = Path(dirpath) / name
            if path.is_symlink():
                raise BundleError(f"{path} is a symbolic link; the bundle holds regular files only")
            if path.is_file():
                found.append(path)
        for name in dirnames:
            if (Path(dirpath) / name).is_symlink():
                raise BundleError(f"{Path(dirpath) / name} is a symbolic link; the bundle holds regular files only")
    return sorted(found)


def _write_zip(files: dict[str, bytes], dest: Path, executable: set[str], private: set[str]) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as bundle:
            for name in sorted(files):
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                info.create_system = 3  # Unix: unzip then applies the permissions below
                mode = 0o100755 if name in executable else 0o100600 if name in private else 0o100644
                info.external_attr = mode << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                bundle.writestr(info, files[name], compresslevel=9)
        os.chmod(tmp, 0o600)  # it holds the course secret
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


TORCH_VERSION = "2.13.0"  # as pinned in pyproject.toml
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SETUP_SH = f"""\
#!/usr/bin/env bash
# Gradescope runs this once, as root, on its Ubuntu image when it builds the autograder (with network access).
# It extracts the bundle into /autograder/source/, so the kit (the bundle's source/ folder) is beside this file.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
KIT="$HERE/{KIT_DIR}"
VENV="${{AUTOGRADER_VENV:-{VENV}}}"

apt-get update -qq
# bubblewrap: the grading sandbox (without it, or where the container forbids namespaces, grading falls back to
# process isolation and every results.json says so). setpriv (util-linux) drops the student to nobody.
apt-get install -y -qq bubblewrap util-linux

# Python 3.11 (the kit requires >=3.11,<3.12): python3 itself where it is 3.11, else python3.11 from the Ubuntu
# archive (22.04) or, where the archive has none (24.04), from the deadsnakes PPA.
is311() {{ command -v "$1" >/dev/null 2>&1 && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; }}
if is311 python3; then
  apt-get install -y -qq python3-venv
  PYTHON=python3
else
  if ! apt-get install -y -qq python3.11 python3.11-venv; then
    apt-get install -y -qq software-properties-common
    add-apt-repository -y ppa:deadsnakes/ppa
    apt-get update -qq
    apt-get install -y -qq python3.11 python3.11-venv
  fi
  PYTHON=python3.11
fi
is311 "$PYTHON" || {{ echo "setup.sh: no Python 3.11 available" >&2; exit 1; }}

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
# torch's CPU-only build, pinned, from torch's CPU wheel index: the image stays small (no CUDA build of several GB;
# Gradescope has no GPU). Where that index cannot be reached, the kit's pin takes the package index's build below.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --index-url {TORCH_CPU_INDEX} \
  "torch=={TORCH_VERSION}+cpu" || echo "setup.sh: warning: torch's CPU-only build could not be installed" >&2
# The kit with its pinned dependencies (Gradescope has network access).
# Editable on purpose: (1) autograder.REPO_ROOT is then this kit folder, where course.yml and solutions/ (the
# reference) are; a regular install would copy the package into site-packages, away from them. (2) The sandbox
# refuses bubblewrap when the Python installation (shown read-only to students) contains the autograder package,
# so a regular install would silently lower the isolation to "process". run_autograder also puts the kit first on
# PYTHONPATH, so the bundled package is the one imported in any case.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$KIT"

"$VENV/bin/python" - "$KIT" <<'EOF'
import sys
from pathlib import Path

import autograder, numpy, torch
from autograder.sandbox import isolation_level

kit = Path(sys.argv[1]).resolve()
assert autograder.REPO_ROOT == kit, f"autograder is imported from {{autograder.REPO_ROOT}}, not from {{kit}}"
print(f"setup.sh: ready (torch {{torch.__version__}}, numpy {{numpy.__version__}}; isolation while building: "
      f"{{isolation_level()}})")
EOF
# Without bubblewrap each student runs as a uid of its own, which may read what every user may: the kit (its
# solutions, the course secret) is for root only; the virtualenv stays readable: the students' Python is there.
chmod -R go-rwx "$KIT"
"""

RUN_AUTOGRADER = f"""\
#!/usr/bin/env bash
# Gradescope runs this for every submission (from /autograder/run_autograder): the student's files are in
# /autograder/submission/, the result goes to /autograder/results/results.json. It grades with the same engine
# and sandbox as `autograder grade` (see autograder/gradescope_run.py).
set -uo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
KIT="$ROOT/source/{KIT_DIR}"      # Gradescope extracts the bundle into $ROOT/source/
[ -d "$KIT/autograder" ] || KIT="$ROOT/{KIT_DIR}"
PYTHON="${{AUTOGRADER_PYTHON:-{VENV}/bin/python}}"
# Uncomment to give every submission 0 with a message rather than grade without bubblewrap:
# export AUTOGRADER_ISOLATION=bubblewrap
export AUTOGRADER_ROOT="$ROOT"
mkdir -p "$ROOT/results"
rm -f "$ROOT/results/results.json"
cd "$KIT" && PYTHONPATH="$KIT" PYTHONNOUSERSITE=1 "$PYTHON" -m autograder.gradescope_run --assignment @ASSIGNMENT@
status=$?
if [ ! -s "$ROOT/results/results.json" ]; then
  # Python itself could not start or died: Gradescope shows nothing without a results file.
  printf '%s\\n' '{{"score": 0, "output": "The autograder could not run (internal error, not your code). Your score is 0 for now; please tell your instructor.", "visibility": "visible", "stdout_visibility": "hidden", "tests": []}}' \\
    > "$ROOT/results/results.json"
fi
echo "run_autograder: gradescope_run exited with status $status"
exit 0
"""
