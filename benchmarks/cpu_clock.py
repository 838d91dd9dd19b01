"""Measure the core clock that benchmarks actually run at, for the int8-peak column (docs/deploy.md, GMAC/s).

/proc/cpuinfo in a VM reports the nominal clock; a core in turbo runs faster, and then "% of the int8 peak" can pass
100 %. This compiles a chain of dependent register doublings (`x = x + x`: each add needs the previous result, and
unlike add-immediate chains no renamer can fold them) with the system C compiler, runs it on one thread and divides
the adds by the thread's CPU time (CPU time, not wall time, so that other processes sharing the core do not lower the
figure). It assumes one dependent integer add per cycle (the latency of a register add on current x86 and Arm cores);
the loop counter runs beside the chain. The result is the single-thread turbo clock over about half a second; with
all cores busy the clock may be lower.

    python benchmarks/cpu_clock.py [--rounds 5] [--json F]
    FAKELITE_CPU_MHZ=$(python benchmarks/cpu_clock.py --print-mhz) fakelite bench ...   # peak at the measured clock

Needs a C compiler (cc/gcc/clang) and an x86-64 or AArch64 host; exits 2 with one line otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_ADD = {"x86_64": 'add %0, %0', "aarch64": 'add %0, %0, %0', "arm64": 'add %0, %0, %0'}

_SOURCE = r"""
#include <stdio.h>
#include <stdint.h>
#include <time.h>
int main(void) {
    /* x doubles to 0 after 64 adds and stays there: the dependency chain, not the value, sets the time */
    uint64_t x = 1; const uint64_t n = %(iters)dULL; struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (uint64_t i = 0; i < n; i++) {
        __asm__ volatile("%(add)s\n\t%(add)s\n\t%(add)s\n\t%(add)s" : "+r"(x));
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    printf("%%.1f\n", 4.0 * (double)n / s / 1e6);
    return 0;
}
"""


def measure(rounds: int = 5, iters: int = 500_000_000) -> dict:
    """Median over rounds of the dependent-add rate in MHz. Raises RuntimeError without a compiler or a known ISA."""
    add = _ADD.get(platform.machine())
    cc = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if add is None or cc is None:
        raise RuntimeError(f"cpu_clock: needs a C compiler and x86-64/AArch64 (machine {platform.machine()}, "
                           f"compiler {cc or 'none'})")
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "clk.c", Path(tmp) / "clk"
        src.write_text(_SOURCE % {"iters": iters, "add": add})
        built = subprocess.run([cc, "-O2", str(src), "-o", str(exe)], capture_output=True, text=True)
        if built.returncode != 0:
            raise RuntimeError(f"cpu_clock: {cc} failed: {(built.stderr.strip().splitlines() or ['?'])[0]}")
        mhz = [float(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)
               for _ in range(rounds)]
    from fakelite.deploy.host import reported_host

    info = reported_host()  # what the host reports, never the FAKELITE_CPU_MHZ override
    return {"measured_mhz": round(statistics.median(mhz), 1), "rounds_mhz": mhz, "reported_mhz": info.get("mhz"),
            "reported_source": info.get("mhz_source"), "cpu": info.get("cpu"), "flags": info.get("flags")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--print-mhz", action="store_true", help="print only the measured MHz (for FAKELITE_CPU_MHZ)")
    args = ap.parse_args()
    try:
        r = measure(args.rounds)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(str(e).splitlines()[0], file=sys.stderr)
        sys.exit(2)
    if args.print_mhz:
        print(r["measured_mhz"])
        return
    ratio = r["measured_mhz"] / r["reported_mhz"] if r["reported_mhz"] else float("nan")
    print(f"{r['cpu']}: measured {r['measured_mhz']:.0f} MHz (rounds {', '.join(f'{m:.0f}' for m in r['rounds_mhz'])}), "
          f"reported {r['reported_mhz']} MHz ({r['reported_source']}): {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
