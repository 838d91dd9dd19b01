"""`fakelite scan`: score millions of files in a resumable batch job, on one machine or on a Ray cluster.

    run_scan(["archive/", "list.txt", "more/**/*.jpg"], "model.fakelite", "results/", workers=2)

Inputs (`expand_inputs`): folders (recursive, media suffixes, through `fakelite.deploy.detect.expand_paths`, the
walk `fakelite detect` uses), file lists (`.txt`/`.lst`: one path per line, `#` comments; `.csv`: the `path` column,
else the first one; relative entries are relative to the list's folder) and globs (`*`, `?`, `[...]`, `**`).

Each file is scored by `fakelite.deploy.detect.detect_file` — the same reader, face policy and video sampling as
`fakelite detect` — in a worker process that holds one Detector with one intra-op thread and decodes its own
files; N workers give N files in flight. With `use_ray=True` (or `$RAY_ADDRESS` set) the same per-file function
runs on Ray Data instead: the file list becomes a dataset, `map_batches` runs it on an actor pool of Detectors
(one CPU each), and the rows stream back to the driver, which commits them to the same store.

Results: one row per distinct file content (`fakelite.pipelines.scan_store.COLUMNS`), committed exactly once by the
driver (`ScanStore`). Before scoring, the driver skips every path whose committed row has the same size and
mtime; workers hash each remaining file (SHA-256) and skip content already committed; the store drops a second
result for the same content (a duplicate file elsewhere in the input). So a re-run after `kill -9` finishes the
job with every file's content scored once.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fakelite.artifact import ArtifactError
from fakelite.data.io import VIDEO_EXTS
from fakelite.deploy.detect import AGGREGATES, FACE_MODES, detect_file, expand_paths
from fakelite.deploy.faces import make_face_detector
from fakelite.deploy.runtime import Detector
from fakelite.pipelines.scan_store import COLUMNS, ScanStore, ScanStoreError, rows_to_table

LIST_SUFFIXES = {".txt", ".lst", ".csv"}
CRASH_TEST_ENV = "FAKELITE_SCAN_TEST_CRASH_ON"  # tests only: a worker segfaults on paths ending with this
_GLOB_CHARS = set("*?[")


class ScanError(ValueError):
    """A scan that cannot start (bad model, bad options, unusable --out); one line."""


@dataclass(frozen=True)
class ScanOptions:
    """The detection options of a scan (`detect_file`'s); recorded in the store's manifest."""

    faces: str = "auto"
    frames: int = 32
    every: int | None = None
    aggregate: str = "mean"
    all_faces: bool = False
    face_detector: str = "haar"
    face_resize: bool = False

    def validate(self) -> ScanOptions:
        if self.faces not in FACE_MODES:
            raise ScanError(f"faces must be one of {', '.join(FACE_MODES)}, not {self.faces!r}")
        if self.aggregate not in AGGREGATES:
            raise ScanError(f"aggregate must be mean or confident, not {self.aggregate!r}")
        if self.frames < 1 or (self.every is not None and self.every < 1):
            raise ScanError("frames and every must be >= 1")
        return self


# ------------------------------------------------------------------------------------------------ inputs
def _read_list(f: Path) -> list[str]:
    base = f.parent
    entries: list[str] = []
    with open(f, newline="", encoding="utf-8", errors="replace") as fh:
        if f.suffix.lower() == ".csv":
            rows = list(csv.reader(fh))
            if not rows:
                return []
            head = [c.strip().lower() for c in rows[0]]
            col = head.index("path") if "path" in head else 0
            body = rows[1:] if "path" in head else rows
            entries = [r[col].strip() for r in body if len(r) > col and r[col].strip()]
        else:
            entries = [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    return [e if os.path.isabs(e) else str(base / e) for e in entries]


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Files to scan (absolute, de-duplicated, in input order) and one-line errors for unusable inputs.

    Folders are walked by `expand_paths` (media suffixes only); list files (.txt/.lst/.csv) and globs are
    expanded first and their entries go through the same checks (existence, media suffix).
    """
    candidates: list[str] = []
    errors: list[str] = []
    for raw in map(str, inputs):
        p = Path(raw)
        if p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            try:
                candidates += _read_list(p)
            except OSError as e:
                errors.append(f"{p}: unreadable file list ({e.strerror or e})")
        elif not p.exists() and _GLOB_CHARS & set(raw):
            hits = sorted(glob.glob(raw, recursive=True))
            if not hits:
                errors.append(f"{raw}: no file matches this pattern")
            candidates += hits
        else:
            candidates.append(raw)
    files, bad = expand_paths(candidates)
    errors += [r["error"] if r["error"].startswith(r["path"]) else f"{r['path']}: {r['error']}" for r in bad]
    seen: set[str] = set()
    out: list[Path] = []
    for f in files:
        a = os.path.abspath(f)
        if a not in seen:
            seen.add(a)
            out.append(Path(a))
    return out, errors


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ------------------------------------------------------------------------------------------- the scorer
class FileScorer:
    """What one worker holds: one Detector (1 intra-op thread), one face detector, the options.

    `__call__(path)` returns the row for one file, or a row with `"_duplicate": True` when its content is in
    `skip_hashes` (already committed). It never raises for a bad file: the row carries the error.
    """

    def __init__(self, model: str, options: ScanOptions, model_sha256: str, skip_hashes: Iterable[str] = (),
                 backend: str = "auto", threads: int = 1):
        self.det = Detector.load(model, backend=backend, threads=threads)
        self.opts = options
        self.model_sha256 = model_sha256
        self.skip = set(skip_hashes)
        self.face_detector = make_face_detector(options.face_detector) if options.faces != "off" else "haar"
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, path: str | os.PathLike) -> dict[str, Any]:
        t0 = time.perf_counter()
        path = str(path)
        row: dict[str, Any] = {"path": path, "sha256": None, "size_bytes": None, "mtime_ns": None,
                               "kind": "video" if Path(path).suffix.lower() in VIDEO_EXTS else "image",
                               "threshold": self.det.threshold, "model_id": self.det.model_id,
                               "model_sha256": self.model_sha256, "worker": self.worker}
        try:
            st = os.stat(path)
            row["size_bytes"], row["mtime_ns"] = st.st_size, st.st_mtime_ns
            row["sha256"] = file_sha256(path)
        except OSError as e:
            row["error"] = f"{path}: cannot read ({e.strerror or e})"
        if row["sha256"] in self.skip:
            return {**row, "_duplicate": True}
        if row.get("error") is None:
            o = self.opts
            try:
                res = detect_file(self.det, path, faces=o.faces, frames=o.frames, every=o.every,
                                  aggregate=o.aggregate, all_faces=o.all_faces, face_detector=self.face_detector,
                                  face_resize=o.face_resize)
                row.update(_summarise(res))
            except Exception as e:  # noqa: BLE001 - a decoder bug on one untrusted file must not stop the batch
                msg = str(e).splitlines()[0][:200] if str(e) else ""
                row["error"] = f"{path}: unexpected error while scoring ({type(e).__name__}{': ' + msg if msg else ''})"
        row["seconds"] = time.perf_counter() - t0
        row["scanned_at"] = datetime.now(UTC)
        return row


def _summarise(res: dict[str, Any]) -> dict[str, Any]:
    frames = res.get("frames") or []
    n_faces = len(res.get("faces") or []) + sum(len(f.get("faces") or []) for f in frames)
    video = res.get("kind") == "video"
    return {"kind": res.get("kind"), "score": res.get("score"), "label": res.get("label"),
            "input": res.get("input"), "faces": n_faces,
            "frames_sampled": res.get("frames_sampled", len(frames)) if video else None,
            "frames_with_face": res.get("frames_with_face") if video else None,
            "note": res.get("note"), "error": res.get("error"),
            "detail": json.dumps(res, sort_keys=True, default=str)}


# ------------------------------------------------------------------------------------ local worker pool
_WORKER: FileScorer | None = None


def _pool_init(model: str, options: ScanOptions, model_sha256: str, skip: frozenset[str], backend: str) -> None:
    global _WORKER
    _die_with_parent()
    _one_thread()
    _WORKER = FileScorer(model, options, model_sha256, skip, backend=backend, threads=1)


def _pool_score(path: str) -> dict[str, Any]:
    assert _WORKER is not None
    crash_on = os.environ.get(CRASH_TEST_ENV)
    if crash_on and path.endswith(crash_on):  # tests only: stands for a decoder that segfaults on this file
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)
    return _WORKER(path)


def _one_thread() -> None:
    """One compute thread per worker process: N workers on N cores, no oversubscription (torch's intra-op pool
    is set by Detector.load(threads=1); OpenCV's face detector and resizes have a pool of their own)."""
    import cv2

    cv2.setNumThreads(1)


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the scan's driver dies (kill -9 of the driver leaves no orphans)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
    except (OSError, AttributeError):
        pass


def crashed_row(path: str, model_id: str, model_sha256: str, threshold: float) -> dict[str, Any]:
    """The row of a file on which a worker process died (a native crash in a decoder): an error, not a gap."""
    row: dict[str, Any] = {"path": path, "kind": "video" if Path(path).suffix.lower() in VIDEO_EXTS else "image",
                           "model_id": model_id, "model_sha256": model_sha256, "threshold": threshold,
                           "error": f"{path}: the worker process crashed on this file (native crash); skipped",
                           "scanned_at": datetime.now(UTC), "worker": f"{socket.gethostname()}:driver"}
    try:
        st = os.stat(path)
        row.update(size_bytes=st.st_size, mtime_ns=st.st_mtime_ns, sha256=file_sha256(path))
    except OSError:
        pass
    return row


def _local_rows(todo: list[str], model: str, options: ScanOptions, model_sha256: str, skip: frozenset[str],
                workers: int, backend: str, crash_row: Callable[[str], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Rows from `workers` spawned processes, at most 2 files in flight per worker.

    A worker that dies (segfault, OOM kill) breaks the pool: the files that were in flight are then retried one at
    a time in a fresh pool, so the one that kills a worker on its own gets `crash_row(path)` and the rest are
    scored normally. Five such files in a row stop the scan (something is wrong with the workers, not the files).
    """
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")  # never fork a process that holds torch's thread pools
    pending, suspects = deque(todo), deque()
    crashes_in_a_row = 0
    while pending or suspects:
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pool_init,
                                   initargs=(model, options, model_sha256, skip, backend))
        inflight: dict[Future, str] = {}
        lost: list[str] = []
        try:
            while (pending or suspects or inflight) and not lost:
                if suspects:  # isolate: one suspect at a time, nothing else in flight
                    if not inflight:
                        p = suspects.popleft()
                        inflight[pool.submit(_pool_score, p)] = p
                else:
                    while pending and len(inflight) < 2 * workers:
                        p = pending.popleft()
                        inflight[pool.submit(_pool_score, p)] = p
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for f in done:
                    p = inflight.pop(f)
                    exc = f.exception()
                    if exc is None:
                        crashes_in_a_row = 0
                        yield f.result()
                    elif isinstance(exc, BrokenProcessPool):
                        lost.append(p)
                    else:
                        raise exc
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if not lost:
            continue
        lost += inflight.values()  # every file in flight when the worker died is a suspect
        if len(lost) == 1:  # it was alone: it is the one
            crashes_in_a_row += 1
            if crashes_in_a_row >= 5:
                raise ScanError(f"scan workers crashed on {crashes_in_a_row} files in a row (last: {lost[0]}); "
                                "stopping")
            yield crash_row(lost[0])
        else:
            suspects.extend(lost)


# -------------------------------------------------------------------------------------------------- Ray
class RayScorer:
    """Ray Data actor: one FileScorer; `__call__(batch)` maps a pyarrow batch of paths to result rows."""

    def __init__(self, model: str, options: dict[str, Any], model_sha256: str, skip: list[str], backend: str):
        _one_thread()
        self.scorer = FileScorer(model, ScanOptions(**options), model_sha256, skip, backend=backend, threads=1)

    def __call__(self, batch):
        import pyarrow as pa

        rows = [self.scorer(p) for p in batch.column("path").to_pylist()]
        table = rows_to_table(rows)
        dup = pa.array([bool(r.get("_duplicate")) for r in rows], pa.bool_())
        assert table.num_columns == len(COLUMNS)
        return table.append_column("_duplicate", dup)


def ray_connect(num_cpus: int | None = None) -> None:
    """Join the cluster named by $RAY_ADDRESS, or start a local one (`ray.init()`); no-op when connected."""
    import ray

    if ray.is_initialized():
        return
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **kw)
    else:
        ray.init(num_cpus=num_cpus, **kw)


def _ray_rows(todo: list[str], model: str, options: ScanOptions, model_sha256: str, skip: frozenset[str],
              workers: int, backend: str, batch_size: int = 4) -> Iterator[dict[str, Any]]:
    import ray.data

    ray_connect()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ds = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=max(1, min(len(todo), 4 * workers)))
    ds = ds.map_batches(RayScorer, batch_size=batch_size, batch_format="pyarrow", num_cpus=1,
                        compute=ray.data.ActorPoolStrategy(size=workers),
                        fn_constructor_kwargs={"model": model, "options": asdict(options),
                                               "model_sha256": model_sha256, "skip": sorted(skip),
                                               "backend": backend})
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        yield from batch.to_pylist()


# ------------------------------------------------------------------------------------------------- driver
def run_scan(inputs: Iterable[str | os.PathLike], model: str | os.PathLike, out: str | os.PathLike,
             options: ScanOptions | None = None, workers: int = 1, use_ray: bool | None = None,
             backend: str = "auto", commit_rows: int = 256, commit_seconds: float = 10.0,
             progress: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Scan `inputs` with `model` into the results folder `out`; resumable, exactly once per file content.

    workers: scoring processes (local) or Ray actors. use_ray: None → Ray when $RAY_ADDRESS is set.
    commit_rows / commit_seconds: a part file is committed after this many rows or seconds (what a kill can
    lose and redo). progress(done, total, files_per_s) is called after every file when given.
    Returns the summary dict (counts, label counts, errors by message, rate in files/s, wall seconds).
    Raises ScanError / ScanStoreError (one line) when the scan cannot start.
    """
    options = (options or ScanOptions()).validate()
    if workers < 1:
        raise ScanError("--workers must be >= 1")
    use_ray = bool(os.environ.get("RAY_ADDRESS")) if use_ray is None else use_ray
    model = str(Path(model).resolve())
    try:
        det = Detector.load(model, backend=backend, threads=1)  # checks the model once, here, with one line
    except (ArtifactError, RuntimeError) as e:
        raise ScanError(str(e)) from None
    model_sha = file_sha256(model)
    t0 = time.perf_counter()
    files, input_errors = expand_inputs(inputs)
    store = ScanStore(out, {"model_id": det.model_id, "model_sha256": model_sha, "options": asdict(options)},
                      commit_rows=commit_rows, commit_seconds=commit_seconds)
    model_id, threshold = det.model_id, det.threshold
    del det
    todo: list[str] = []
    already = 0
    for f in files:
        try:
            st = f.stat()
            done = store.is_done(str(f), st.st_size, st.st_mtime_ns)
        except OSError:
            done = False  # the worker reports it
        if done:
            already += 1
        else:
            todo.append(str(f))
    skip = frozenset(k for k in store.keys if not k.startswith("unreadable:"))
    counts = {"scored": 0, "duplicates": 0}
    errors: dict[str, int] = {}
    labels: dict[str, int] = {}
    t_first: float | None = None
    t_last = 0.0
    if todo:
        if use_ray:
            rows = _ray_rows(todo, model, options, model_sha, skip, workers, backend)
        else:
            rows = _local_rows(todo, model, options, model_sha, skip, workers, backend,
                               lambda p: crashed_row(p, model_id, model_sha, threshold))
        try:
            for i, row in enumerate(rows, 1):
                now = t_last = time.perf_counter()
                t_first = t_first or now
                dup = bool(row.pop("_duplicate", False))
                if dup or not store.add(row):
                    counts["duplicates"] += 1
                else:
                    counts["scored"] += 1
                    if row.get("error"):
                        msg = str(row["error"]).split(": ", 1)[-1]
                        errors[msg] = errors.get(msg, 0) + 1
                    else:
                        lab = row.get("label") or "no score"
                        labels[lab] = labels.get(lab, 0) + 1
                if progress is not None:
                    progress(i, len(todo), (i - 1) / (now - t_first) if now > t_first else 0.0)
        finally:
            store.close()  # commits the last rows, releases the folder's lock
    store.close()
    wall = time.perf_counter() - t0
    n = counts["scored"] + counts["duplicates"]
    return {
        "out": str(store.root), "files": len(files), "already_done": already, "to_scan": len(todo),
        "scored": counts["scored"], "duplicates": counts["duplicates"],
        "errors": sum(errors.values()), "errors_by_reason": dict(sorted(errors.items(), key=lambda kv: -kv[1])),
        "labels": labels, "input_errors": input_errors, "rows_in_store": store.committed_before + store.committed,
        "parts_written": store.parts_written, "workers": workers, "engine": "ray" if use_ray else "local",
        "wall_s": round(wall, 3),
        # steady rate: files after the first result / time since it (excludes worker start-up and model load)
        "files_per_s": round((n - 1) / (t_last - t_first), 3) if t_first and n > 1 and t_last > t_first else None,
    }


__all__ = ["FileScorer", "RayScorer", "ScanError", "ScanOptions", "ScanStoreError", "crashed_row", "expand_inputs",
           "file_sha256", "ray_connect", "run_scan"]
