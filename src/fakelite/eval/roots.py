"""Which folder an evaluation scores when it is given a whole dataset root.

A dataset root in the ForenSynths/FaceSynth layout holds `train/`, `val/` and `test/`. Scoring every set under it
would put training images into the test mean (a 93 % detector reads 97 %), so a root that holds `train/` (or
`val/`) is evaluated on its `test/` folder, and refused when it has none. Any other folder is scored as given —
including a ForenSynths generator folder such as `test/progan`, whose LSUN class folders include one named `train`.
"""

from __future__ import annotations

from pathlib import Path

from fakelite.data.folders import CLASS_NAMES

TRAINING_SPLITS = ("train", "val")


class MixedSplitsError(FileNotFoundError):
    """ROOT holds training data and no `test/` folder to evaluate instead."""


def _class_folders_only(root: Path) -> bool:
    """True when every subfolder is a ForenSynths/LSUN class name: `test/progan` holds a class called `train`
    (a test set of trains), which is not a training split."""
    names = {p.name.lower() for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    return bool(names) and names <= CLASS_NAMES and "val" not in names and "test" not in names


def eval_root(root: str | Path) -> tuple[Path, str | None]:
    """(folder to score, note for the user or None).

    `root` holding `train/` (or `val/`) → `root/test` with a note saying so; no `test/` there →
    MixedSplitsError (a one-line message naming the folder). Otherwise `root` itself, no note.
    """
    root = Path(root)
    held = [s for s in TRAINING_SPLITS if (root / s).is_dir()]
    if not held or _class_folders_only(root):
        return root, None
    test = root / "test"
    if test.is_dir():
        return test, (f"{root} is a dataset root ({'/, '.join(held)}/ and test/): evaluating {test} only; "
                      "training and validation images are never scored")
    raise MixedSplitsError(f"{root}: holds {'/ and '.join(held)}/ but no test/ folder; refusing to score training "
                           "data: pass the folder of test sets itself (e.g. --data ROOT/test)")
