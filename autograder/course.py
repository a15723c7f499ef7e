"""course.yml: the course, its assignments, points, limits, seeds and tolerances, loaded and validated. (The course
secret, which the hidden inputs derive from, is not in it: autograder/secret.py.)"""

from __future__ import annotations

from datetime import datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator,
                      model_validator)

from autograder import REPO_ROOT

COURSE_FILE_NAME = "course.yml"
DEFAULT_COURSE_FILE = REPO_ROOT / COURSE_FILE_NAME  # the kit's own course (tests, Gradescope's bundle)


class CourseConfigError(Exception):
    """course.yml is missing, is not YAML, or has a bad key or value; the message names it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    timeout_seconds: PositiveFloat = Field(description="wall-clock limit for grading one submission")
    call_timeout_seconds: PositiveFloat = Field(description="wall-clock limit for one call of a student function")
    cell_timeout_seconds: PositiveFloat = Field(description="wall-clock limit for loading one cell or file")
    memory_mb: PositiveInt = Field(description="memory student code may use beyond the preloaded libraries: per "
                                   "student in total where a cgroup can be made, else per process")
    output_kb: PositiveInt = Field(description="how much student stdout/stderr is kept")

    def sandbox_limits(self, timeout: float | None = None):
        """These limits as the sandbox takes them (the one place where course.yml's limits become SandboxLimits);
        `timeout`: the whole submission's wall-clock limit, if not timeout_seconds (it bounds CPU time too)."""
        from autograder.sandbox import SandboxLimits

        return SandboxLimits(call_timeout=self.call_timeout_seconds, unit_timeout=self.cell_timeout_seconds,
                             memory_mb=self.memory_mb, cpu_seconds=int(timeout or self.timeout_seconds) + 5,
                             output_bytes=self.output_kb * 1024)


class Tolerances(_Strict):
    rtol: PositiveFloat
    atol: float = Field(ge=0)


class LatePolicy(_Strict):
    """A share of the score taken off per started day after the due date (0: no penalty), up to all of it."""

    penalty_per_day: float = Field(0.0, ge=0, le=1, description="fraction of the score lost per started late day")
    grace_minutes: float = Field(0.0, ge=0, description="lateness forgiven, e.g. for upload time")


def _zone_name(name: str | None) -> str | None:
    """An IANA time zone name (Europe/Berlin, UTC), checked against the system's zone database."""
    if name is not None:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin or UTC)") from None
    return name


class Assignment(_Strict):
    id: str
    title: str
    notebooks: list[str] = Field(min_length=1)
    due: datetime = Field(description="due date; without a UTC offset it is in the time zone below")
    timezone: str | None = Field(None, description="IANA time zone of this assignment's dates and of nbgrader "
                                 "timestamps without a zone [default: the course's]")
    late_policy: LatePolicy = LatePolicy()
    limits: Limits
    seed: int = Field(description="public: with the course secret (autograder/secret.py, not in git) and the "
                      "student id, it gives each student's hidden test inputs; a new seed, new inputs for all")
    tolerances: Tolerances
    points: dict[str, PositiveFloat] = Field(description="autograded function -> points", min_length=1)
    preload: list[str] = Field(["numpy"], description="libraries imported once per grading worker, before any "
                               "student code, and shared by every student process forked from there")
    by_hand: list[str] = Field([], description="graded functions that must compute their gradients by hand, with "
                               "numpy: torch autograd raises an error while one of them runs (in grading and in the "
                               "self-check), and the outputs it produced score 0")

    _check_zone = field_validator("timezone")(_zone_name)

    @model_validator(mode="after")
    def _by_hand_functions_are_graded(self):
        unknown = [name for name in self.by_hand if name not in self.points]
        if unknown:
            raise ValueError(f"by_hand names functions that have no points: {', '.join(unknown)}")
        return self

    @property
    def zone(self) -> tzinfo:
        return ZoneInfo(self.timezone or "UTC")

    @property
    def max_score(self) -> float:
        return float(sum(self.points.values()))


class Course(_Strict):
    course_id: str
    title: str
    solutions_dir: str = "solutions"
    release_dir: str = "assignments"
    timezone: str = Field("UTC", description="IANA time zone (e.g. Europe/Berlin) of due dates written without a "
                          "UTC offset and of nbgrader timestamps without a zone; nbgrader's Exchange.timezone")
    assignments: list[Assignment] = Field(min_length=1)

    _check_zone = field_validator("timezone")(_zone_name)

    @model_validator(mode="after")
    def _dates_in_the_course_zone(self):
        """Each assignment gets the course's time zone unless it names its own, and a due date written without an
        offset is read in that zone (so `due: 2026-12-18T23:59:00` means 23:59 where the course is)."""
        fixed = []
        for a in self.assignments:
            a = a.model_copy(update={"timezone": a.timezone or self.timezone})
            if a.due.tzinfo is None:
                a = a.model_copy(update={"due": a.due.replace(tzinfo=a.zone)})
            fixed.append(a)
        object.__setattr__(self, "assignments", fixed)
        return self

    def assignment(self, assignment_id: str) -> Assignment:
        for assignment in self.assignments:
            if assignment.id == assignment_id:
                return assignment
        known = ", ".join(a.id for a in self.assignments)
        raise CourseConfigError(f"no assignment {assignment_id!r} in course.yml (it has: {known})")


def _describe(error: ValidationError, path: Path) -> str:
    lines = [f"{path}: invalid course configuration"]
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        lines.append(f"  {key}: {problem['msg']}")
    return "\n".join(lines)


def load_course(path: str | Path = DEFAULT_COURSE_FILE) -> Course:
    """Read and validate course.yml; raise CourseConfigError naming the bad key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CourseConfigError(f"{path}: file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CourseConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CourseConfigError(f"{path}: expected a mapping at the top level")
    try:
        return Course.model_validate(data)
    except ValidationError as exc:
        raise CourseConfigError(_describe(exc, path)) from None


def find_course_file(option: str | Path | None = None, start: Path | None = None) -> tuple[Path, str]:
    """The course file every command uses, and how it was found, as nbgrader and git find theirs: `option`
    (--course: a course.yml, or a folder holding one), else course.yml in the current folder or the nearest of its
    parents, else the kit's own checkout (said so: never silently). The folder holding it is the course root:
    solutions/, assignments/ and the gradebook paths in it are read from there."""
    if option is not None:
        path = Path(option)
        path = path / COURSE_FILE_NAME if path.is_dir() else path
        return path.resolve(), "--course"
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / COURSE_FILE_NAME).is_file():
            return folder / COURSE_FILE_NAME, f"found from {start}"
    return DEFAULT_COURSE_FILE, f"no {COURSE_FILE_NAME} in {start} or its parents: the kit's own"
