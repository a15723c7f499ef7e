"""On demand (not part of the tests): `autograder grade` on a large class, its throughput and its memory over time.

    .venv/bin/python benchmarks/bench_scale.py [--students 1000] [--jobs 2] [--keep] [--workdir DIR]

What it does:

1. Builds 10 distinct notebook submissions with `autograder build-class` (the reference, the notebook variant
   v_notebook_magics without its `!pip install` cell, seven mutants of tests/submissions/mutants.yml submitted as
   notebooks, spread over the five parts, and an untouched release stub), then copies them round-robin to reach
   --students folders (default 1,000).
2. Runs `autograder grade DIR --out OUT --jobs N` once. Every 0.5 s it samples the resident memory (RSS, psutil)
   of the process tree and counts the students graded so far (OUT/*/results.json):
     grader tree: the `autograder grade` process and its descendants that run a Python of this virtualenv (the
                  worker pool, multiprocessing's resource tracker), excluding sandboxed student processes: those
                  that are bwrap, run as uid 65534 (nobody), or descend from a bwrap;
     everything:  the whole tree, student processes included.
   RSS sums count memory shared between processes (numpy, torch libraries) once per process, so they are upper
   bounds of the real use; what matters here is whether they grow with the number of students graded.
3. Prints the wall time, throughput, the peak grader memory overall and within each quarter of the run (by
   students graded: 0-25%, 25-50%, 50-75%, 75-100%), the number of results.json files (must equal --students) and
   the score distribution (full / zero / other), also per distinct submission (its copies should agree).

The kit benchmarked is the `autograder` package this interpreter imports (normally /work/main; set PYTHONPATH to a
clone to benchmark a stable copy); the grader runs in the work directory, not in the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import psutil
import yaml

import autograder
from common import option_parser, run_in_work_folder  # benchmarks/common.py, next to this script

KIT = autograder.REPO_ROOT
PYTHON = sys.executable
VENV = Path(sys.prefix).resolve()
NOBODY = 65534
SAMPLE_SECONDS = 0.5
MUTANTS = ["m_no_carried_gradient", "m_tanh_grad_from_preactivation", "m_norms_direct_only", "m_clip_no_eps",
           "m_tbptt_stops_one_step_late", "m_one_hot_int_dtype", "m_ratio_ignores_k2"]


def distinct_spec() -> dict:
    """The ten distinct submissions, all six notebooks (no .py files)."""
    mutants = yaml.safe_load((KIT / "tests/submissions/mutants.yml").read_text())["students"]
    variants = yaml.safe_load((KIT / "tests/submissions/variants.yml").read_text())["students"]
    students = {"reference": {"from": "solutions"}}
    magics = {k: v for k, v in variants["v_notebook_magics"].items() if k != "expect"}
    magics["add_cells"] = [c for c in magics.get("add_cells", []) if "pip install" not in c["source"]]
    students["v_notebook_magics"] = magics
    for name in MUTANTS:
        students[name] = {k: v for k, v in mutants[name].items() if k not in ("expect", "as_python")}
    students["stub"] = {"from": "release"}
    return {"students": students}


def build_submissions(work: Path, n: int) -> tuple[Path, dict[str, str]]:
    """Builds the distinct submissions and copies them to n student folders; returns the folder and
    {student: the distinct submission it copies}."""
    spec = distinct_spec()
    spec_file = work / "distinct.yml"
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    distinct = work / "distinct"
    log = work / "build-class.log"
    with open(log, "w") as out:
        code = subprocess.run([PYTHON, "-m", "autograder", "build-class", str(spec_file), str(distinct), "--course",
                               str(KIT / "course.yml")], cwd=work, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"build-class failed ({code}):\n{log.read_text()[-3000:]}")
    bases = list(spec["students"])
    submissions = work / "submissions"
    origin = {}
    for i in range(n):
        base = bases[i % len(bases)]
        student = f"s{i:05d}_{base}"
        shutil.copytree(distinct / base, submissions / student)
        origin[student] = base
    return submissions, origin


# ------------------------------------------------------------------------------------------------ sampling -------


def is_venv_python(cmdline: list[str]) -> bool:
    if not cmdline:
        return False
    exe = Path(cmdline[0])
    if not exe.name.startswith("python"):
        return False
    try:
        return exe.resolve() == Path(PYTHON).resolve() or str(exe.absolute()).startswith(str(VENV))
    except OSError:
        return False


def sample(root: psutil.Process) -> tuple[int, int, int]:
    """(grader tree RSS, main process RSS, everything RSS) in bytes."""
    info = {}
    try:
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0, 0
    for proc in procs:
        try:
            with proc.oneshot():
                info[proc.pid] = (proc.ppid(), proc.name(), proc.uids().real, proc.cmdline(), proc.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue

    def sandboxed(pid: int) -> bool:
        while pid in info and pid != root.pid:
            ppid, name, uid, _, _ = info[pid]
            if name == "bwrap" or uid == NOBODY:
                return True
            pid = ppid
        return False

    grader = main = everything = 0
    for pid, (_, _, _, cmdline, rss) in info.items():
        everything += rss
        if pid == root.pid:
            main = rss
            grader += rss
        elif not sandboxed(pid) and is_venv_python(cmdline):
            grader += rss
    return grader, main, everything


def count_results(out: Path) -> int:
    if not out.is_dir():
        return 0
    return sum(1 for entry in os.scandir(out) if entry.is_dir() and os.path.exists(os.path.join(entry.path,
                                                                                                  "results.json")))


def mib(n: float) -> str:
    return f"{n / 2**20:8.1f}"


def main() -> None:
    parser = option_parser(__doc__.splitlines()[0], students=1000)
    args = parser.parse_args()
    if args.students < 1:
        parser.error("--students must be at least 1")
    run_in_work_folder(args, "bench-scale-", benchmark)


def benchmark(args, work: Path) -> None:
    load_start = os.getloadavg()
    print(f"Machine: nproc {len(os.sched_getaffinity(0))}, load average {' '.join(f'{x:.2f}' for x in load_start)}; "
          f"python {sys.version.split()[0]}; kit {KIT}")
    t = time.perf_counter()
    submissions, origin = build_submissions(work, args.students)
    print(f"Built {len(set(origin.values()))} distinct submissions, copied to {len(origin)} student folders in "
          f"{time.perf_counter() - t:.1f} s")

    out = work / "out"
    log = work / "grade.log"
    argv = [PYTHON, "-m", "autograder", "grade", str(submissions), "--out", str(out), "--jobs", str(args.jobs),
            "--course", str(KIT / "course.yml")]
    print(f"Running: {' '.join(argv)}  (log {log})", flush=True)
    samples = []  # (seconds, graded, grader rss, main rss, everything rss)
    start = time.perf_counter()
    with open(log, "w") as log_file:
        proc = subprocess.Popen(argv, cwd=work, stdout=log_file, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        next_report = 0.1
        while proc.poll() is None:
            grader, main_rss, everything = sample(root)
            graded = count_results(out)
            if grader:
                samples.append((time.perf_counter() - start, graded, grader, main_rss, everything))
            if graded >= next_report * args.students:
                print(f"  {time.perf_counter() - start:7.0f} s: {graded} graded, grader tree {mib(grader).strip()} "
                      f"MiB", flush=True)
                next_report += 0.1
            time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"autograder grade exited with {proc.returncode}:\n{log.read_text()[-3000:]}")

    documents = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/results.json"))}
    n = args.students
    print()
    print(f"Graded {len(documents)} submissions in {wall:.1f} s with --jobs {args.jobs}: "
          f"{len(documents) / wall:.3f} submissions/s, {wall / max(1, len(documents)):.2f} s per submission")
    exec_times = sorted(d["execution_time"] for d in documents.values() if "execution_time" in d)
    if exec_times:
        print(f"results.json execution_time: median {exec_times[len(exec_times) // 2]:.2f} s, "
              f"max {exec_times[-1]:.2f} s")
    print(f"Memory samples: {len(samples)} (every {SAMPLE_SECONDS} s); RSS in MiB")
    if samples:
        peak = max(samples, key=lambda s: s[2])
        print(f"Peak grader tree {mib(peak[2]).strip()} MiB (at {peak[0]:.0f} s, {peak[1]} graded); peak main process "
              f"{mib(max(s[3] for s in samples)).strip()} MiB; peak everything "
              f"{mib(max(s[4] for s in samples)).strip()} MiB")
        print(f"{'quarter (graded)':>20}  {'samples':>7}  {'time (s)':>15}  {'grader tree':>11}  {'main':>8}  "
              f"{'everything':>10}")
        quarters = defaultdict(list)
        for s in samples:
            quarters[min(3, s[1] * 4 // n)].append(s)
        for q in range(4):
            label = f"{q * 25}-{(q + 1) * 25}% ({q * n // 4}-{(q + 1) * n // 4})"
            rows = quarters.get(q, [])
            if not rows:
                print(f"{label:>20}  {0:>7}  {'-':>15}")
                continue
            span = f"{rows[0][0]:.0f}-{rows[-1][0]:.0f}"
            print(f"{label:>20}  {len(rows):>7}  {span:>15}  {mib(max(r[2] for r in rows)):>11}  "
                  f"{mib(max(r[3] for r in rows)):>8}  {mib(max(r[4] for r in rows)):>10}")

    full = sum(1 for d in documents.values() if d["score"] >= d["max_score"] - 1e-9)
    zero = sum(1 for d in documents.values() if d["score"] == 0)
    print(f"results.json files: {count_results(out)} (expected {n}: {'OK' if count_results(out) == n else 'MISSING'})")
    print(f"Scores: {full} full, {zero} zero, {len(documents) - full - zero} other")
    per_base = defaultdict(Counter)
    for student, d in documents.items():
        per_base[origin.get(student, "?")][f"{d['score']:g}/{d['max_score']:g}"] += 1
    for base, scores in per_base.items():
        print(f"  {base:>30}: " + ", ".join(f"{score} x{count}" for score, count in sorted(scores.items())))
    isolations = sorted({(d.get("extra_data") or {}).get("isolation", "unknown") for d in documents.values()})
    load_end = os.getloadavg()
    print(f"Isolation: {', '.join(isolations)}; load average at start {' '.join(f'{x:.2f}' for x in load_start)}, "
          f"at end {' '.join(f'{x:.2f}' for x in load_end)}")


if __name__ == "__main__":
    main()
