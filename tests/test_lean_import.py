"""`import fakelite` and `import fakelite.cli` stay light: none of the heavy optional libraries load (a fast
`fakelite --help`, and a library that costs nothing until used)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("onnxruntime", "cv2", "sklearn", "matplotlib", "fastapi", "torch_pruning", "openvino", "ray", "av",
         "pyarrow")


def test_import_fakelite_and_cli_load_no_heavy_module() -> None:
    code = ("import sys, fakelite, fakelite.cli; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"loaded by `import fakelite, fakelite.cli`: {r.stdout.strip()}"
