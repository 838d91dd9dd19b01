"""Load test of `fakelite serve` on loopback: a real uvicorn process, N requests at concurrency C.

Sends a mix of valid images (PNG, JPEG) and known-bad inputs (text named .jpg → 415, truncated JPEG → 422) and
checks every answer: the expected status, or 503 with Retry-After and error code "busy" when the server is
saturated. Anything else (5xx, wrong status, connection error) is an unexpected error. The server's RSS is
sampled from /proc during the run. Results go to a Markdown file (and optionally JSON).

Bounded: at most --requests requests and --max-seconds of wall time; loopback only.

Example:
    .venv/bin/python benchmarks/load_test.py --model runs/demo/fp/model.fakelite --requests 600 --concurrency 16 \
        --out docs/results/serve.md
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_one(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct child processes (uvicorn's workers under `--workers N`), from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the server process and its workers so far (from /proc/PID/stat)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mb(pid: int) -> float | None:
    """RSS of the server: the process plus its worker processes (MB)."""
    own = _rss_one(pid)
    if own is None:
        return None
    return own + sum(v for c in children(pid) if (v := _rss_one(c)) is not None)


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples = pid, every, []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            v = rss_mb(self.pid)
            if v is not None:
                self.samples.append((time.perf_counter(), v))
            self.stop.wait(self.every)


def payloads(size: int, seed: int = 0) -> list[tuple[str, bytes, int]]:
    """(name, bytes, expected status) — 80 % PNG, 10 % JPEG, 5 % text-as-JPEG (415), 5 % truncated JPEG (422)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, bytes, int]] = []
    for i in range(8):
        img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        png, jpg = io.BytesIO(), io.BytesIO()
        img.save(png, "PNG")
        img.save(jpg, "JPEG", quality=90)
        out += [(f"img{i}.png", png.getvalue(), 200)] * 8 + [(f"img{i}.jpg", jpg.getvalue(), 200)]
        if i < 4:
            out.append((f"text{i}.jpg", b"plain text, not an image\n" * 8, 415))
            out.append((f"trunc{i}.jpg", jpg.getvalue()[: len(jpg.getvalue()) // 3], 422))
    return out


async def run_load(url: str, n: int, concurrency: int, max_seconds: float, size: int, api_key: str | None) -> dict:
    items = payloads(size)
    rnd = random.Random(0)
    plan = [rnd.choice(items) for _ in range(n)]
    sem = asyncio.Semaphore(concurrency)
    rows: list[dict] = []
    headers = {"X-API-Key": api_key} if api_key else {}
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, headers=headers) as client:

        async def one(i: int, name: str, data: bytes, expect: int) -> None:
            async with sem:
                if time.perf_counter() > deadline:
                    rows.append({"i": i, "skipped": True})
                    return
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/detect", files={"file": (name, data, "application/octet-stream")})
                    dt = time.perf_counter() - t0
                    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                    ok = r.status_code == expect
                    busy_ok = (r.status_code == 503 and r.headers.get("retry-after", "").isdigit()
                               and body.get("error", {}).get("code") == "busy")
                    rows.append({"i": i, "status": r.status_code, "expect": expect, "s": dt, "ok": ok,
                                 "busy_ok": busy_ok, "bad_503": r.status_code == 503 and not busy_ok})
                except httpx.HTTPError as e:
                    rows.append({"i": i, "status": None, "expect": expect, "s": time.perf_counter() - t0,
                                 "ok": False, "busy_ok": False, "exc": type(e).__name__})

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, *p) for i, p in enumerate(plan)))
        wall = time.perf_counter() - t0
    done = [r for r in rows if not r.get("skipped")]
    unexpected = [r for r in done if not r["ok"] and not r["busy_ok"]]
    ok200 = [r["s"] for r in done if r["status"] == 200 and r["ok"]]
    all_lat = [r["s"] for r in done if r["status"] is not None]

    def pct(v: list[float], q: float) -> float | None:
        return round(1000 * float(np.percentile(v, q)), 1) if v else None

    by_status: dict[str, int] = {}
    for r in done:
        by_status[str(r["status"])] = by_status.get(str(r["status"]), 0) + 1
    return {
        "requests": len(done), "skipped_by_time_limit": len(rows) - len(done), "concurrency": concurrency,
        "wall_s": round(wall, 2), "by_status": dict(sorted(by_status.items())),
        "unexpected_errors": len(unexpected), "unexpected_examples": unexpected[:5],
        "busy_503": sum(r["busy_ok"] for r in done), "bad_503": sum(bool(r.get("bad_503")) for r in done),
        "latency_ms_200": {"p50": pct(ok200, 50), "p95": pct(ok200, 95), "p99": pct(ok200, 99),
                           "mean": round(1000 * statistics.fmean(ok200), 1) if ok200 else None},
        "latency_ms_all": {"p50": pct(all_lat, 50), "p95": pct(all_lat, 95)},
        "throughput_rps": round(len(done) / wall, 1), "throughput_200_rps": round(len(ok200) / wall, 1),
    }


def start_server(model: Path, port: int, args: argparse.Namespace, workers: int = 1) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fakelite.serve", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--concurrency", str(args.server_concurrency), "--queue", str(args.server_queue),
           "--log-level", "warning", "--workers", str(workers)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.api_key:
        cmd += ["--api-key", args.api_key]
    # its own session: the kernel's autogroup scheduler then shares the CPU between the server and this client
    # like between two programs, instead of counting both as one session
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120, workers: int = 1,
               api_key: str | None = None) -> float:
    """Seconds until /readyz answers 200 and (several workers) every worker process exists and reports ready."""
    t0 = time.perf_counter()
    headers = {"X-API-Key": api_key} if api_key else {}
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early (code {proc.returncode}): {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200 and (workers == 1 or (
                    len(children(proc.pid)) >= workers
                    and "fakelite_model_ready 1.0" in httpx.get(url + "/metrics", headers=headers, timeout=2).text)):
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server not ready after {timeout:.0f} s")


def markdown(runs: list[dict], cmd: str) -> str:
    """One column per worker count."""
    r0 = runs[0]
    head = "| metric | " + " | ".join(f"{r['workers']} worker{'s' if r['workers'] > 1 else ''}" for r in runs) + " |"

    def row(name: str, fn) -> str:
        return f"| {name} | " + " | ".join(str(fn(r)) for r in runs) + " |"

    lines = [
        "# `fakelite serve` load test",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {r0['machine']}. Server: uvicorn with `--workers N`, each worker `--concurrency "
        f"{r0['server_concurrency']} --queue {r0['server_queue']}`" + (f" `--threads {r0['threads']}`" if r0["threads"] else "")
        + f"; model `{r0['model']}` ({r0['model_bytes'] / 1e6:.1f} MB); images {r0['image_size']}×{r0['image_size']}; "
        "loopback only. The worker counts ran one after the other in this one invocation.",
        "",
        "Request mix: 80 % PNG, 10 % JPEG (expect 200), 5 % text named .jpg (expect 415), 5 % truncated JPEG "
        "(expect 422). A 503 counts as correct only with `Retry-After` and error code `busy`.",
        "",
        head,
        "|---|" + "---|" * len(runs),
        row("requests (concurrency)", lambda r: f"{r['requests']} ({r['concurrency']})"),
        row("wall time", lambda r: f"{r['wall_s']} s"),
        row("status counts", lambda r: ", ".join(f"{k}: {v}" for k, v in r["by_status"].items())),
        row("**unexpected errors**", lambda r: f"**{r['unexpected_errors']}**"),
        row("503 busy (all with Retry-After) / malformed 503s", lambda r: f"{r['busy_503']} / {r['bad_503']}"),
        row("latency of 200s p50 / p95 / p99", lambda r: f"{r['latency_ms_200']['p50']} / "
            f"**{r['latency_ms_200']['p95']}** / {r['latency_ms_200']['p99']} ms"),
        row("latency of all answers p50 / p95", lambda r: f"{r['latency_ms_all']['p50']} / {r['latency_ms_all']['p95']} ms"),
        row("throughput, all answers / **200s**", lambda r: f"{r['throughput_rps']} / **{r['throughput_200_rps']}** req/s"),
        row("200s per second vs 1 worker", lambda r: f"×{r['throughput_200_rps'] / r0['throughput_200_rps']:.2f}"),
        row("server CPU during the run (all processes) / cores it got", lambda r: f"{r['server_cpu_s']} s / "
            f"{r['server_cpu_s'] / r['wall_s']:.2f}"),
        row("200s per server CPU-second", lambda r: f"{r['throughput_200_rps'] * r['wall_s'] / r['server_cpu_s']:.1f}"
            if r["server_cpu_s"] else "n/a"),
        row("server RSS (all processes) when ready, before the warm-up requests",
            lambda r: f"{r['rss_mb']['after_ready']} MB"),
        row("server RSS during the run: first / last / max (samples)", lambda r: f"{r['rss_mb']['first']} / "
            f"{r['rss_mb']['last']} / {r['rss_mb']['max']} MB ({r['rss_mb']['samples']})"),
        row("RSS flat (last ≤ first + 10 % + 16 MB)", lambda r: "yes" if r["rss_mb"]["flat"] else "NO"),
        row("time to ready (start → every worker ready)", lambda r: f"{r['ready_s']:.1f} s"),
        row("1-min load average after the run", lambda r: f"{r['load_after']:.1f}"),
        "",
        "Latency is measured by the client, from sending the request to reading the whole answer, so it includes "
        "waiting in the server's queue. RSS is the sum over the uvicorn process and its workers, read from /proc.",
    ] + (["", f"Model: {r0['note']}"] if r0.get("note") else [])
    return "\n".join(lines) + "\n"


def run_one(args: argparse.Namespace, workers: int) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args.model, port, args, workers)
    try:
        ready_s = wait_ready(url, proc, workers=workers, api_key=args.api_key)
        rss_ready = rss_mb(proc.pid)
        if args.warmup:  # first requests allocate lazily (thread pools, face detector, allocator arenas)
            asyncio.run(run_load(url, args.warmup * workers, min(args.concurrency, args.server_concurrency * workers),
                                 120, args.image_size, args.api_key))
        sampler = RssSampler(proc.pid)
        sampler.start()
        cpu0 = cpu_seconds(proc.pid)
        res = asyncio.run(run_load(url, args.requests, args.concurrency, args.max_seconds, args.image_size,
                                   args.api_key))
        res["server_cpu_s"] = round(cpu_seconds(proc.pid) - cpu0, 2)
        time.sleep(0.5)
        sampler.stop.set()
        sampler.join()
        metrics = httpx.get(url + "/metrics", headers={"X-API-Key": args.api_key} if args.api_key else {}).text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    vals = [v for _, v in sampler.samples]
    first, last = (vals[0], vals[-1]) if vals else (None, None)
    res["rss_series_mb"] = [round(v, 1) for v in vals[:: max(1, len(vals) // 40)]]
    res["rss_mb"] = {"samples": len(vals), "after_ready": round(rss_ready, 1) if rss_ready else None,
                     "first": round(first, 1) if vals else None,
                     "last": round(last, 1) if vals else None, "max": round(max(vals), 1) if vals else None,
                     "flat": bool(vals) and last <= first * 1.10 + 16}
    detect_200 = sum(float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines()
                     if ln.startswith("fakelite_http_requests_total{") and 'endpoint="/v1/detect"' in ln
                     and 'code="200"' in ln)
    res.update(workers=workers, ready_s=ready_s, warmup=args.warmup * workers, load_after=os.getloadavg()[0],
               metrics_detect_200=detect_200)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="a .fakelite file")
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", default="1", help="comma list of uvicorn worker counts to run one after the other")
    ap.add_argument("--max-seconds", type=float, default=300.0, help="stop sending after this long")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--server-concurrency", type=int, default=2)
    ap.add_argument("--server-queue", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="inference threads in the server (0: runtime default)")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--warmup", type=int, default=40, help="requests per worker sent (not counted) before RSS sampling")
    ap.add_argument("--out", type=Path, default=Path("docs/results/serve.md"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--note", default=None, help="a line about the model, written into the report")
    args = ap.parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"{args.model}: no such model file")
    counts = [int(w) for w in args.workers.split(",")]
    if args.requests < 1 or args.concurrency < 1 or min(counts) < 1:
        raise SystemExit("--requests, --concurrency and --workers must be >= 1")
    runs = []
    for w in counts:
        res = run_one(args, w)
        res.update(note=args.note, model=args.model.name, model_bytes=args.model.stat().st_size,
                   image_size=args.image_size, server_concurrency=args.server_concurrency,
                   server_queue=args.server_queue, threads=args.threads,
                   machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
                           "shared with other work (load average in the table)")
        runs.append(res)
        print(json.dumps({k: res[k] for k in ("workers", "requests", "by_status", "unexpected_errors", "busy_503",
                                              "bad_503", "latency_ms_200", "throughput_rps", "throughput_200_rps",
                                              "metrics_detect_200", "rss_mb")}, indent=2), flush=True)
    cmd = "python benchmarks/load_test.py " + " ".join(a if " " not in a else repr(a) for a in (argv or sys.argv[1:]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(runs, cmd))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    print(f"wrote {args.out}")
    ok = all(r["unexpected_errors"] == 0 and r["bad_503"] == 0 and r["rss_mb"]["flat"]
             and r["requests"] >= min(500, args.requests) for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
