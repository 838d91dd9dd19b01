"""The `fakelite train` run: resolve the training settings (the architecture's own recipe, under a YAML recipe's
`train:`/`augment:` sections, under the explicit settings), build the model (seeded), choose its crop from the
training images, and train it with `fakelite.train.loop.fit` into OUT (model.fakelite, metrics.json, curves.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fakelite.data.folders import labelled_images, split_dir
from fakelite.data.io import BadInput, load_rgb
from fakelite.models import create_model, get_entry
from fakelite.train.loop import TrainConfig, fit


class TrainSetupError(ValueError):
    """The run could not be set up (unknown architecture, bad settings, no training folder); one line, no traceback."""


def run_train(data: Path, arch: str, out: Path, *, recipe: dict[str, Any] | None = None,
              recipe_path: Path | None = None, epochs: int | None = None, batch_size: int | None = None,
              lr: float | None = None, seed: int = 0, max_steps: int | None = None, threads: int | None = None,
              quiet: bool = False, device: str | None = "cpu", crop: int | None = None, input: str | None = None,
              policy: str | None = None, aggregate: str | None = None, resume: bool = False,
              keep_checkpoint: bool = False) -> dict:
    """Train `arch` on DATA/train (validated on DATA/val) into OUT; returns fit's metrics.

    Settings: the architecture's recipe (`get_entry(arch).training`) < `recipe` (a parsed YAML recipe: its `train:`
    keys of TrainConfig and its `augment:` section) < the keyword settings that are not None. `crop` None: the
    model's crop capped by the size of the training images (NPR never resizes). `policy`/`aggregate`: the scoring
    policy stored in the model. `recipe_path` is recorded in the provenance.

    Raises TrainSetupError (one line) when the run cannot be set up; errors of the training itself propagate.
    """
    recipe = recipe or {}
    try:
        overrides = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                                max_steps_per_epoch=max_steps, threads=threads, quiet=quiet,
                                                device=device).items()
                     if v is not None}
        arch_defaults = get_entry(arch).training  # the architecture's own recipe, under the file's and the flags'
        cfg = TrainConfig.from_dict({**arch_defaults, **recipe.get("train", {}), **({"augment": recipe["augment"]} if "augment" in recipe else {}), **overrides})
        torch.manual_seed(seed)  # --seed fixes the initial weights too, not only data order and augmentation
        m = create_model(arch, **({"input": input} if input else {}))
        if crop is None:
            # the model's crop, capped by the size of the training images (no resize for NPR)
            items = labelled_images(split_dir(data, "train"))
            for p, _ in items[:8]:
                try:
                    h, w = load_rgb(p).shape[:2]
                    crop = min(m.preprocess.crop, h - h % 2, w - w % 2)
                    break
                except BadInput:
                    continue
        cfg.crop = crop
        m.preprocess = m.preprocess.with_scoring(policy, aggregate)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise TrainSetupError(str(e).strip("'\"")) from e
    return fit(m, data, out, cfg, resume=resume, provenance={"recipe": str(recipe_path) if recipe_path else None},
               keep_checkpoint=keep_checkpoint)
