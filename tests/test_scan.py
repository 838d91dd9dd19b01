"""`fakelite scan`: inputs, the Parquet store, kill -9 + resume = exactly the uninterrupted result, Ray = local."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pa = pytest.importorskip("pyarrow", reason="pyarrow is in the `scan` extra (make test installs it)")

from fakelite.pipelines.scan import ScanOptions, expand_inputs, run_scan  # noqa: E402
from fakelite.pipelines.scan_store import VOLATILE, ScanStore, ScanStoreError, read_results  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _model(tmp: Path) -> Path:
    from conftest import randomize_bn

    import fakelite

    torch.manual_seed(0)
    m = randomize_bn(fakelite.create_model("npr_resnet23").eval())
    return fakelite.save(m, tmp / "scan.fakelite")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """40 small PNG/JPEG files in nested folders, one duplicate (same bytes, other name), one corrupt file."""
    root = tmp_path_factory.mktemp("scan_corpus")
    model = _model(root)
    rng = np.random.default_rng(0)
    data = root / "data"
    for i in range(40):
        d = data / f"batch{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(rng.integers(0, 256, (40 + i % 7, 48, 3), dtype=np.uint8))
        img.save(d / f"img{i:03d}.{'png' if i % 4 else 'jpg'}")
    (data / "batch0" / "copy_of_img001.png").write_bytes((data / "batch1" / "img001.png").read_bytes())
    (data / "batch2" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return model, data


def _comparable(out: Path) -> dict[str, dict]:
    t = read_results(out)
    rows = t.drop_columns(list(VOLATILE)).to_pylist()
    keys = [r["sha256"] for r in rows]
    assert len(keys) == len(set(keys)), "a content hash is stored twice"
    return {r["sha256"]: r for r in rows}


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    model, data = corpus
    out = tmp_path_factory.mktemp("scan_ref") / "res"
    s = run_scan([data], model, out, workers=1)
    return out, s


def test_expand_inputs_folders_lists_globs(corpus, tmp_path):
    _, data = corpus
    lst = tmp_path / "files.txt"
    lst.write_text(f"# a comment\n{data / 'batch0' / 'img000.jpg'}\n\n{data / 'batch1' / 'img001.png'}\nmissing.png\n")
    csvf = tmp_path / "files.csv"
    csvf.write_text("id,path\n1,{}\n2,{}\n".format(data / "batch2" / "img002.png", data / "batch0" / "img000.jpg"))
    files, errors = expand_inputs([lst, csvf, str(data / "batch1" / "*.png"), str(tmp_path / "nothing*.png"),
                                   tmp_path / "nope", data / "batch0"])
    names = [f.name for f in files]
    assert names[:3] == ["img000.jpg", "img001.png", "img002.png"]  # input order, duplicates removed
    assert len(names) == len(set(map(str, files)))
    assert all(f.is_absolute() for f in files)
    assert "copy_of_img001.png" in names and "img003.png" in names
    assert any("missing.png" in e and "no such file" in e for e in errors)
    assert any("nothing*.png" in e and "no file matches" in e for e in errors)
    assert any(e.startswith(str(tmp_path / "nope")) for e in errors)


def test_reference_scan_rows(corpus, reference):
    _, data = corpus
    out, s = reference
    rows = _comparable(out)
    n_files = len(list(data.rglob("*.*")))
    assert s["files"] == n_files == 42
    assert s["duplicates"] == 1 and s["scored"] == 41 and s["errors"] == 1 and len(rows) == 41
    bad = [r for r in rows.values() if r["error"]]
    assert len(bad) == 1 and bad[0]["path"].endswith("broken.jpg") and bad[0]["score"] is None
    assert "broken.jpg" in bad[0]["error"]
    good = [r for r in rows.values() if not r["error"]]
    assert all(r["kind"] == "image" and r["model_sha256"] and r["model_id"] for r in good)
    assert all(r["label"] == ("fake" if r["score"] >= r["threshold"] else "real") for r in good)
    assert len({round(r["score"], 6) for r in good}) > 10  # real, varied scores
    t = read_results(out)
    assert t.column("seconds").null_count == 0 and t.column("scanned_at").null_count == 0
    # the same command again scores nothing and stores nothing
    s2 = run_scan([data], corpus[0], out, workers=1)
    assert s2["already_done"] == 41 and s2["scored"] == 0 and s2["to_scan"] == 1  # the duplicate is rehashed
    assert s2["duplicates"] == 1 and read_results(out).num_rows == 41


def test_a_different_model_or_options_refuse_the_folder(corpus, reference, tmp_path):
    model, data = corpus
    out, _ = reference
    with pytest.raises(ScanStoreError, match="different scan"):
        run_scan([data], model, out, ScanOptions(faces="off"), workers=1)
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(ScanStoreError, match="not a fakelite scan folder"):
        ScanStore(tmp_path, {"model_sha256": "0", "options": {}})


def _parts(out: Path) -> int:
    return len(list(out.glob("part-*.parquet")))


def test_kill_9_mid_scan_then_resume_equals_uninterrupted_run(corpus, reference, tmp_path):
    model, data = corpus
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "fakelite", "scan", str(data), "--model", str(model), "--out", str(out),
           "--workers", "2", "--commit-rows", "3", "--quiet"]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    killed_at = []
    for want_parts in (1, 5):  # kill twice: after the first commit, then again part-way through the rest
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.monotonic()
        while _parts(out) < want_parts and proc.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.01)
        assert proc.poll() is None, f"the scan finished before it could be killed: {proc.stderr.read()[-500:]}"
        children = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        killed_at.append(_parts(out))
        _wait_gone(children)  # workers die with their driver (PR_SET_PDEATHSIG): no orphan keeps scoring
    assert read_results(out).num_rows < 41, "nothing was left to resume"
    s = run_scan([data], model, out, workers=2, commit_rows=3)
    assert s["scored"] > 0
    ref_rows, rows = _comparable(reference[0]), _comparable(out)
    assert rows.keys() == ref_rows.keys()  # no gaps, no duplicates
    for k, r in rows.items():
        want = ref_rows[k]
        for col in r:
            if col in ("path", "detail"):  # the duplicate's content may be stored under either of its names
                continue
            assert r[col] == want[col] or (col == "score" and abs(r[col] - want[col]) < 1e-9), (col, r, want)
    paths = {r["path"] for r in rows.values()}
    assert len(paths) == 41


def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [int(x) for x in out.split()]


def _wait_gone(pids: list[int], timeout: float = 20) -> None:
    t0 = time.monotonic()
    for p in pids:
        while time.monotonic() - t0 < timeout:
            try:
                os.kill(p, 0)
                with open(f"/proc/{p}/stat") as f:
                    if f.read().split(")")[-1].split()[0] == "Z":
                        break
            except (ProcessLookupError, FileNotFoundError):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"worker {p} outlived its killed driver")


def test_ray_local_cluster_equals_local_run(corpus, reference, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is in the `scan` extra (make test installs it)")
    model, data = corpus
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": SRC}})
    except Exception as e:  # noqa: BLE001 - any reason a local head cannot start here
        pytest.skip(f"a local Ray head could not start on this machine: {str(e).splitlines()[0]}")
    try:
        s = run_scan([data], model, tmp_path / "ray", workers=2, use_ray=True)
    finally:
        ray.shutdown()
    assert s["engine"] == "ray" and s["scored"] == 41 and s["duplicates"] == 1
    ref_rows, rows = _comparable(reference[0]), _comparable(tmp_path / "ray")
    assert rows.keys() == ref_rows.keys()
    for k, r in rows.items():
        want = ref_rows[k]
        assert {c: v for c, v in r.items() if c not in ("path", "detail", "score")} == \
            {c: v for c, v in want.items() if c not in ("path", "detail", "score")}
        assert r["score"] == want["score"] or abs(r["score"] - want["score"]) < 1e-9


def test_video_rows_summarise_frames_and_faces(corpus, tmp_path):
    from fakelite.deploy.samples import FetchError, fetch

    try:
        clip = fetch("single_face.mp4")
    except FetchError as e:
        pytest.skip(f"cannot fetch the sample clip single_face.mp4: {e}")
    vids = tmp_path / "vids"
    vids.mkdir()
    (vids / "clip.mp4").write_bytes(clip.read_bytes())
    (vids / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really")
    s = run_scan([vids], corpus[0], tmp_path / "res", ScanOptions(frames=4), workers=1)
    assert s["scored"] == 2 and s["errors"] == 1
    rows = {Path(r["path"]).name: r for r in read_results(tmp_path / "res").to_pylist()}
    v = rows["clip.mp4"]
    assert v["kind"] == "video" and v["frames_sampled"] == 4 and 1 <= v["frames_with_face"] <= 4
    assert v["faces"] >= v["frames_with_face"] and v["score"] is not None and v["error"] is None
    assert len(json.loads(v["detail"])["frames"]) == 4
    assert rows["broken.mp4"]["kind"] == "video" and "broken.mp4" in rows["broken.mp4"]["error"]


def test_a_worker_crash_on_one_file_costs_that_file_only(corpus, tmp_path, monkeypatch):
    """A native crash (here: SIGSEGV raised by a test hook) kills a worker: the file that did it is isolated and
    gets an error row, every other file is scored, nothing is stored twice."""
    from fakelite.pipelines.scan import CRASH_TEST_ENV

    model, data = corpus
    files = sorted((data / "batch1").glob("*.png"))[:5]
    monkeypatch.setenv(CRASH_TEST_ENV, files[2].name)
    s = run_scan(files, model, tmp_path / "res", workers=2)
    rows = {Path(r["path"]).name: r for r in read_results(tmp_path / "res").to_pylist()}
    assert s["scored"] == 5 and s["errors"] == 1 and len(rows) == 5
    bad = rows[files[2].name]
    assert "crashed" in bad["error"] and bad["sha256"] and bad["score"] is None
    assert all(r["score"] is not None for n, r in rows.items() if n != files[2].name)


def test_a_second_writer_on_the_same_folder_is_refused(tmp_path):
    store = ScanStore(tmp_path / "r", {"model_sha256": "0", "options": {}})
    with pytest.raises(ScanStoreError, match="another scan is writing"):
        ScanStore(tmp_path / "r", {"model_sha256": "0", "options": {}})
    store.close()
    ScanStore(tmp_path / "r", {"model_sha256": "0", "options": {}}).close()  # free again once closed
