"""What the grading benchmarks share: their common options and the work folder they run in."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from autograder.secret import PUBLIC_EXAMPLE_SECRET, SECRET_ENV


def option_parser(description: str, students: int) -> argparse.ArgumentParser:
    """--students, --jobs, --keep and --workdir; a benchmark adds its own options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--students", type=int, default=students, help=f"class size (default {students})")
    parser.add_argument("--jobs", type=int, default=2, help="`autograder grade --jobs` (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--workdir", type=Path, help="work here (created; kept) instead of a temporary directory")
    return parser


def run_in_work_folder(args, prefix: str, benchmark) -> None:
    """benchmark(args, work) in --workdir, or in a temporary folder removed afterwards unless --keep."""
    work = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(SECRET_ENV, PUBLIC_EXAMPLE_SECRET)  # synthetic classes: the public example secret will do
    try:
        benchmark(args, work)
    finally:
        if args.keep or args.workdir:
            print(f"\nWork directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
