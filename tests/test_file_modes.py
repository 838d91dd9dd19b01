"""One file-mode policy: models and checkpoints get the mode of every other output (0666 minus the umask)."""

import os
import stat

import fakelite
from fakelite.models import create_model


def test_model_file_mode_matches_plain_outputs(tmp_path):
    old = os.umask(0o022)
    try:
        plain = tmp_path / "metrics.json"
        plain.write_text("{}")
        fakelite.save(create_model("npr_resnet23"), tmp_path / "model.fakelite")
        mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
        assert mode(tmp_path / "model.fakelite") == mode(plain) == 0o644
    finally:
        os.umask(old)
