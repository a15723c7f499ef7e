"""Where submissions are graded: worker processes on this machine (`_grade_locally`), or a Dask distributed cluster
(`_grade_on_dask`); both run the canaries first, and grade again on its own a submission that hit a time limit
while others were graded. Each worker grades with `grade.grade_one`."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path

from autograder.files import remove_tree, write_atomic
from autograder.grade import GradeOptions, _Canaries, _grade_in_worker
from autograder.results import RESULTS_FILE, crash_document, student_dir

_warm_parent_trouble: str | None = None  # why workers are spawned instead, if the fork server could not start


def start_warm_parent(assignment, solutions_dir: Path, workers: int):
    """Starts the fork server that local grading workers are forked from (warm_parent.py), in the background: it
    imports and loads while this process reads the course and the submissions (`autograder grade` calls this as
    soon as it has read course.yml). Safe to call again. Returns the multiprocessing context for the workers:
    "spawn" (each worker starts cold, as before) where the fork server cannot start (e.g. TMPDIR so long that its
    socket's path is too long for AF_UNIX)."""
    global _warm_parent_trouble
    from multiprocessing import forkserver

    if _warm_parent_trouble is None:
        plan = json.dumps({"preload": list(assignment.preload), "zygotes": workers,
                           "assignment": assignment.id, "solutions": str(solutions_dir)})
        before = os.environ.get("AUTOGRADER_WARM_PARENT")
        try:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["autograder.warm_parent"])
            os.environ["AUTOGRADER_WARM_PARENT"] = plan  # the fork server starts with this environment
            forkserver.ensure_running()
            return context
        except Exception as exc:
            _warm_parent_trouble = f"{type(exc).__name__}: {exc}"
            print(f"note: each grading worker imports the libraries itself, without a warm parent "
                  f"({_warm_parent_trouble}); grading is correct but starts slower", file=sys.stderr)
        finally:
            if before is None:
                os.environ.pop("AUTOGRADER_WARM_PARENT", None)
            else:
                os.environ["AUTOGRADER_WARM_PARENT"] = before
    return multiprocessing.get_context("spawn")


def stop_warm_parent() -> None:
    """Ends the fork server, so that the next run (in this process: the tests) starts one with the environment
    and code of that moment, not those of this run."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()  # the standard library's own way to stop it (used by its tests)


def _grade_locally(pending: list, options: GradeOptions, jobs: int, finished, canaries: "_Canaries | None") -> None:
    """Worker processes on this machine, forked from the warm parent (warm_parent.py: the imports and the reference,
    nothing of this process's state); each grades students one after another, with its own grader session and
    warm sandbox. The canaries go first, to the same workers."""
    context = start_warm_parent(options.assignment, options.solutions_dir, max(1, jobs))
    try:
        _grade_in_pool(pending, options, jobs, finished, canaries, context)
    finally:
        stop_warm_parent()


def _grade_in_pool(pending: list, options: GradeOptions, jobs: int, finished, canaries: "_Canaries | None",
                   context) -> None:
    remaining = {sub.student: sub for sub in pending}
    attempts = {sub.student: 0 for sub in pending}
    alone: set[str] = set()  # hit a time limit while others were graded too: graded again, on their own, at the end
    while remaining:
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context,
                                                      initializer=_start_worker, initargs=(options,))
        held: dict = {}  # future -> holding folder: graded beside the canaries, kept out of OUT until they pass
        holdings: list[Path] = []
        try:
            if canaries is not None:
                held = _grade_beside_canaries(pool, list(remaining.values())[:max(1, jobs)], options, canaries,
                                              holdings)
                canaries = None  # once per batch: every local worker runs in the same environment
            beside = {student for student, _ in held.values()}
            futures = {pool.submit(_grade_in_worker, s.student, str(s.folder), options): s.student
                       for s in remaining.values() if s.student not in alone | beside}
            futures.update({future: student for future, (student, _) in held.items()})
            try:
                for future in concurrent.futures.as_completed(futures):
                    student = futures.pop(future)  # a done future holds its whole document: let it go
                    holding = held.pop(future, (None, None))[1]
                    document = _result(future, student, options if holding is None
                                       else dataclasses.replace(options, out=holding))
                    if jobs > 1 and document["extra_data"].get("timed_out"):
                        alone.add(student)  # maybe a classmate's load, not its own code: no timeout charged yet
                        continue
                    if holding is not None:
                        _move_into(student_dir(holding, student), student_dir(options.out, student))
                    remaining.pop(student, None)
                    finished(student, document)
                for student in sorted(alone & set(remaining)):  # one at a time: nothing else is graded meanwhile
                    run = pool.submit(_grade_in_worker, student, str(remaining[student].folder), options, True)
                    document = _result(run, student, options)
                    remaining.pop(student)
                    finished(student, document)
            except concurrent.futures.process.BrokenProcessPool:
                # A worker died (it should not: student code runs in its own sandbox). Retry who is left in a
                # fresh pool; after two failed attempts a student gets an error result rather than stopping the batch.
                for student in list(remaining):
                    attempts[student] += 1
                    if attempts[student] >= 2:
                        finished(student, crash_document(student, options, "the grading worker died twice"))
                        remaining.pop(student)
            finally:
                for holding in holdings:
                    remove_tree(holding)  # emptied by the move, or a held result that does not count
        except KeyboardInterrupt:
            _stop(pool)  # Ctrl-C: queued students are dropped, not graded first (a plain shutdown would wait)
            for holding in holdings:
                remove_tree(holding)  # the workers are gone: nothing writes there any more
            raise
        except BaseException:  # the canaries failed, or a bug of ours: no more grading, workers end cleanly
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


def _grade_beside_canaries(pool, first: list, options: GradeOptions, canaries: "_Canaries",
                           holdings: list[Path]) -> dict:
    """Submits the canaries and, beside them, the first students (so no worker waits for the verdict), whose
    results go to a holding folder in OUT until the canaries have passed. Returns {future: (student, holding
    folder)}; raises CanaryFailed (after removing the held results) if the canaries fail."""
    runs, held = {}, {}
    canary_queue, student_queue = list(canaries.folders.items()), list(first)
    while canary_queue or student_queue:  # interleaved (canary, student, canary, ...): idle workers take a student
        if canary_queue:
            name, folder = canary_queue.pop(0)
            runs[name] = pool.submit(_grade_in_worker, name, str(folder), canaries.options)
        if student_queue:
            sub = student_queue.pop(0)
            holding = Path(tempfile.mkdtemp(prefix=".held-", dir=options.out))  # same file system: a rename moves it
            holdings.append(holding)  # the caller removes them at the end (and on Ctrl-C)
            held[pool.submit(_grade_in_worker, sub.student, str(sub.folder),
                             dataclasses.replace(options, out=holding))] = (sub.student, holding)
    try:
        canaries.check({name: run.result() for name, run in runs.items()})
    except Exception:  # the canaries failed (Ctrl-C is the caller's: it ends the workers at once)
        for future in held:
            future.cancel()
        concurrent.futures.wait(list(held))  # nothing of theirs must be written after this
        for holding in holdings:
            remove_tree(holding)
        raise
    return held


def _move_into(source: Path, target: Path) -> None:
    """A student's finished folder into OUT, replacing what an earlier run left there, by one rename."""
    if not source.is_dir():  # grade_one and crash_document always write it: a bug of ours, say so
        print(f"warning: {source} is missing; {target.name}'s files were not written", file=sys.stderr)
        return
    if target.exists() or target.is_symlink():
        remove_tree(target)
    os.replace(source, target)



def _stop(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Drops the queued work and ends the workers now (their sandboxes die with them); a student being graded
    leaves no result, as results.json is written last and atomically. Python 3.11 has no public call to end a
    pool's workers (3.14 adds terminate_workers), hence its process table."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()


def _start_worker(options: GradeOptions) -> None:
    """Runs once in each local grading worker, so that its slow starts overlap instead of following one another
    for its first submission: a zygote imports the course's libraries in its sandbox (in the background) while this
    process collects the graders (in the session's thread) and loads the reference."""
    import atexit
    from multiprocessing import util

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the batch process's to handle: it stops the workers
    # A forked worker ends with os._exit, which skips atexit: run its handlers as a spawned worker's exit did (they
    # close this worker's zygotes and grader session, and remove their scratch folders).
    util.Finalize(None, atexit._run_exitfuncs, exitpriority=0)
    import autograder.grade as grading

    grading._close_in_background = True  # while the next student is read (see grade._close)
    util.Finalize(None, grading._finish_closing, exitpriority=10)  # before the zygotes are stopped
    try:
        from autograder.grade import GRADERS_DIR, reference_for
        from autograder.pytest_plugin import session_for
        from autograder.sandbox import start_early

        start_early(tuple(options.assignment.preload))
        session_for(str(GRADERS_DIR), dict(options.assignment.points))
        reference_for(options)
    except Exception:  # nothing is lost: the first submission starts whatever is missing, and reports failures
        pass


def _result(future, student: str, options: GradeOptions) -> dict:
    """A grading future's document; a crash of ours becomes an error result (a dead worker is the caller's)."""
    try:
        return future.result()
    except concurrent.futures.process.BrokenProcessPool:
        raise
    except Exception:
        return crash_document(student, options, traceback.format_exc())


def pack_folder(folder: Path) -> list[tuple[str, str, bytes]]:
    """A student's folder as data, to send to another machine: (relative path, "dir"/"file"/"link"/"hardlink",
    content); symbolic links stay links (never followed) and a hard link is sent as one without its content (never
    read: see submission.HARD_LINK_NOTE), so a remote grader sees what a local one sees."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = base / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                entries.append((rel, "link", os.readlink(path).encode()))
            elif path.is_dir():
                entries.append((rel, "dir", b""))
            elif path.is_file() and path.lstat().st_nlink > 1:
                entries.append((rel, "hardlink", b""))
            elif path.is_file():
                entries.append((rel, "file", path.read_bytes()))
    return entries


def _within(rel: str) -> bool:
    """Whether a relative path from elsewhere stays inside the folder it is joined to."""
    return not Path(rel).is_absolute() and ".." not in Path(rel).parts


def unpack_folder(entries: list[tuple[str, str, bytes]], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for rel, kind, data in entries:
        path = dest / rel
        if not _within(rel):
            raise ValueError(f"refusing to unpack {rel!r} outside the folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            path.mkdir(exist_ok=True)
        elif kind == "link":
            os.symlink(data.decode(), path)
        elif kind == "hardlink":  # an empty file with a second name beside `dest`: refused as the original was
            other = Path(tempfile.mkdtemp(prefix=".hardlinks-", dir=dest.parent)) / "other"
            other.touch()
            os.link(other, path)
        else:
            path.write_bytes(data)


def grade_remote(student: str, entries: list, inner: str, options: GradeOptions,
                 alone: bool = False) -> dict[str, bytes]:
    """Runs on a Dask worker: grades a student sent as data and returns their output files as data (the worker
    needs the kit installed, not a file system shared with the instructor's machine)."""
    with tempfile.TemporaryDirectory(prefix="vg-remote-") as scratch:
        entry = Path(scratch) / "submissions" / student
        unpack_folder(entries, entry)
        out = Path(scratch) / "out"
        from autograder.sandbox import isolation_level

        here = dataclasses.replace(_on_this_worker(options), out=out, isolation=isolation_level())
        _grade_in_worker(student, str(entry / inner), here, alone)
        folder = student_dir(out, student)
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _on_this_worker(options: GradeOptions) -> GradeOptions:
    """The options as a Dask worker uses them: its own isolation, and the course root sent by the client if this
    machine has it at the same path, else the worker's own checkout (cloned at the same commit, as the README
    says; its canaries then prove that its reference gives the known scores)."""
    if options.root is not None and not (options.solutions_dir / options.assignment.id).is_dir():
        return dataclasses.replace(options, root=None)
    return options


def _write_remote_results(out_dir: Path, files: dict[str, bytes]) -> dict:
    for name in sorted(files, key=lambda n: n == RESULTS_FILE):  # results.json last, as locally
        if _within(name):
            write_atomic(out_dir / name, files[name])
    return json.loads(files[RESULTS_FILE])


def canaries_remote(options: GradeOptions) -> dict[str, dict]:
    """Runs on a Dask worker: grades the canaries built from the worker's own checkout, in that worker (its own
    environment, sandbox and limits); returns their results documents. First checks that the worker has the
    client's course secret ($AUTOGRADER_COURSE_SECRET, or the course folder's): CourseSecretError if not."""
    import socket

    from autograder.grade import course_secret
    from autograder.sandbox import isolation_level

    canaries = _Canaries(dataclasses.replace(_on_this_worker(options), isolation=isolation_level()))
    try:
        course_secret(canaries.options, f"the Dask worker on {socket.gethostname()}")  # none, or not the client's
        return {name: _grade_in_worker(name, str(folder), canaries.options)
                for name, folder in canaries.folders.items()}
    finally:
        shutil.rmtree(canaries.scratch, ignore_errors=True)


class DaskUnavailable(Exception):
    """The Dask scheduler cannot be used: `usage` True for an address that is malformed or does not answer (exit 2),
    False for a scheduler with no worker within the time allowed (exit 3). The message says which and what to do."""

    def __init__(self, message: str, usage: bool):
        super().__init__(message)
        self.usage = usage


def _connect(scheduler: str, cluster, timeout: float):
    """A Dask client with at least one worker, or DaskUnavailable within about `timeout` seconds (Dask itself would
    retry a wrong address for 30 s and then print its traceback, and wait for a worker forever)."""
    from distributed import Client

    try:
        client = Client(cluster if cluster is not None else scheduler, timeout=f"{timeout}s")
    except (ValueError, TypeError) as exc:
        raise DaskUnavailable(f"{scheduler!r} is not a Dask scheduler address ({exc}); e.g. tcp://10.0.0.5:8786, or "
                              "'local' for a cluster on this machine", usage=True) from None
    except (OSError, TimeoutError) as exc:
        raise DaskUnavailable(f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:g} s "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no answer'}). "
                              "Check the address (e.g. tcp://10.0.0.5:8786) and that `dask scheduler` runs there.",
                              usage=True) from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError) as exc:
        client.close()
        raise DaskUnavailable(f"the Dask scheduler at {scheduler} has no worker: none joined within {timeout:g} s "
                              f"(--dask-timeout). Start workers with `.venv/bin/dask worker {scheduler} --nthreads 1`."
                              f" ({type(exc).__name__})", usage=False) from None
    return client


def _grade_on_dask(root: Path, pending: list, options: GradeOptions, scheduler: str, jobs: int, finished,
                   canaries: "_Canaries | None", timeout: float = 60.0) -> None:
    """Submissions spread over a Dask distributed cluster (`scheduler`: its address, or "local" for a LocalCluster
    of `jobs` processes here). Each worker process keeps its own grader session and warm sandbox, as a local
    worker does; at most a few submissions per worker are in flight, so memory stays flat for large classes.
    Every worker first grades the canaries in its own environment; a worker that fails them takes no
    submissions, and if every worker fails, CanaryFailed says why."""
    from distributed import LocalCluster, as_completed

    cluster = LocalCluster(n_workers=max(1, jobs), threads_per_worker=1, processes=True,
                           dashboard_address=None) if scheduler == "local" else None
    try:
        with _connect(scheduler, cluster, timeout) as client:
            addresses = sorted(client.scheduler_info().get("workers", {}))
            good = _dask_workers_passing_canaries(client, addresses, options, canaries) if canaries else addresses
            waiting = iter(pending)
            running = as_completed()
            students = {}
            by_name = {sub.student: sub for sub in pending}
            alone = []  # hit a time limit while others were graded too: graded again, on their own, at the end

            def submit(sub, regrade: bool = False):
                entry = root / sub.student  # the whole student folder: nbgrader's timestamp.txt sits above
                return client.submit(grade_remote, sub.student, pack_folder(entry), str(sub.folder.relative_to(entry)),
                                     options, regrade, pure=False, key=f"grade-{sub.student}-{os.urandom(4).hex()}",
                                     workers=good or None, allow_other_workers=False)

            def submit_next():
                sub = next(waiting, None)
                if sub is not None:
                    future = submit(sub)
                    students[future.key] = sub.student
                    running.add(future)

            def collect(future, student: str) -> dict:
                try:
                    return _write_remote_results(student_dir(options.out, student), future.result())
                except Exception:  # a worker lost twice (KilledWorker), a broken result: an error result, go on
                    return crash_document(student, options, traceback.format_exc())
                finally:
                    future.release()

            for _ in range(4 * max(1, len(good))):
                submit_next()
            try:
                for future in running:
                    student = students.pop(future.key)
                    document = collect(future, student)
                    if (len(good) > 1 or jobs > 1) and document["extra_data"].get("timed_out"):
                        alone.append(student)
                    else:
                        finished(student, document)
                    submit_next()
                for student in alone:  # one at a time: nothing else is graded meanwhile
                    finished(student, collect(submit(by_name[student], regrade=True), student))
            except KeyboardInterrupt:  # Ctrl-C: what is in flight is cancelled on the workers, not waited for
                client.cancel(list(running.futures), force=True)
                raise
    finally:
        if cluster is not None:
            cluster.close()


def _dask_workers_passing_canaries(client, addresses: list[str], options: GradeOptions,
                                   canaries: "_Canaries") -> list[str]:
    """The workers whose canaries got their known scores; raises CanaryFailed when there is none."""
    from autograder.canary import CanaryFailed

    runs = {address: client.submit(canaries_remote, options, pure=False, workers=[address],
                                   allow_other_workers=False, key=f"canary-{os.urandom(4).hex()}")
            for address in addresses}
    good, failures = [], []
    for address, run in runs.items():
        try:
            canaries.check(run.result(), where=f"worker {address}")
            good.append(address)
        except CanaryFailed as exc:
            failures.append(str(exc))
            print(f"warning: Dask worker {address} failed the canary and takes no submissions:\n{exc}",
                  file=sys.stderr)
        except Exception as exc:  # the worker could not even run it (lost, no kit): it takes no submissions
            failures.append(f"worker {address}: {type(exc).__name__}: {exc}")
    if not good:
        canaries.failed = True
        raise CanaryFailed("\n".join(failures) if failures else "the Dask cluster has no workers")
    canaries.failed = False
    return good
