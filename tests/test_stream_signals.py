"""`fakelite stream` ended by SIGINT (Ctrl-C) or SIGTERM: clean exit, summary printed, JSON log written."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fakelite.deploy.signals import stop_on_signals

SRC = str(Path(__file__).resolve().parent.parent / "src")


def _clip(path: Path, n: int = 600, fps: float = 10.0, size: int = 64) -> Path:
    cv2 = pytest.importorskip("cv2")
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    rng = np.random.default_rng(0)
    for _ in range(n):
        vw.write(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    vw.release()
    return path


def _catches_sigterm(pid: int) -> bool:
    """True once the process has a SIGTERM handler (Python has none by default: run_stream installed it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to see when the loop runs")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stream_signal_writes_summary_and_log(tiny_fp_model, tmp_path, sig):
    clip = _clip(tmp_path / "clip.mp4")
    log = tmp_path / "log.json"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen([sys.executable, "-m", "fakelite", "stream", "--model", str(tiny_fp_model[1]), "--source",
                          str(clip), "--no-display", "--json", str(log), "--threads", "1"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not _catches_sigterm(p.pid):
            assert p.poll() is None and time.time() < deadline, "stream ended before its loop started"
            time.sleep(0.05)
        time.sleep(0.5)  # a few frames (10 fps clip read in real time)
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "frames processed" in out and f"stopped by {sig.name}" in err
    s = json.loads(log.read_text())
    assert s["stopped_by"] == sig.name and s["processed"] == len(s["frames"]) and s["processed"] < 600


def test_stop_on_signals_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            if stop.is_set():
                break
            time.sleep(0.01)
        assert stop.is_set() and stop.signal_name == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) == before  # a second signal acts as before
    assert signal.getsignal(signal.SIGTERM) == before
