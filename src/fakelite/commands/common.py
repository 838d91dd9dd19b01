"""Small helpers shared by the command functions: one-line errors, model loading, recipes."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
import yaml


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print a one-line error and exit (no traceback)."""
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(code)


def load_model_or_fail(path: Path):
    """Load a .fakelite file or a packaged model name (`default`, ...), or exit with its one-line error."""
    from fakelite.artifact import ArtifactError, load
    from fakelite.packaged import resolve_model

    try:
        return load(resolve_model(path))
    except ArtifactError as e:
        fail(str(e))


def resolve_model_or_fail(model: Path | str | None) -> Path:
    """--model argument → file: a packaged name (or None: `default`) becomes its installed path; one-line error
    when it is not installed."""
    from fakelite.artifact import ArtifactError
    from fakelite.packaged import resolve_model

    try:
        return resolve_model("default" if model is None else model)
    except ArtifactError as e:
        fail(str(e))


def scoring_overrides(model, policy: str | None, aggregate: str | None, topk: int | None = None,
                      max_tiles: int | None = None) -> None:
    """Apply --policy/--aggregate/--topk/--max-tiles to a loaded model or Detector (its `preprocess`), or exit
    with a one-line error for a bad name, or for a tile option that the effective policy (the given one, else the
    model's stored one) would ignore."""
    try:
        effective = policy or model.preprocess.policy
        given = [n for n, v in (("aggregate", aggregate), ("topk", topk), ("max_tiles", max_tiles)) if v is not None]
        if given and effective != "tiles" and policy is None:
            raise ValueError(f"{', '.join(given)} applies to the tiles policy only; this model scores by "
                             f"{effective!r} (one crop): add --policy tiles")
        if hasattr(model, "set_scoring"):
            model.set_scoring(policy, aggregate, topk, max_tiles)
        else:
            model.preprocess = model.preprocess.with_scoring(policy, aggregate, topk, max_tiles)
    except ValueError as e:
        fail(f"scoring options: {e}")


def parse_recipe(path: Path) -> dict:
    """Read a YAML recipe; bundled names (e.g. `npr`, `robust`) resolve to fakelite's recipes/ folder."""
    p = Path(path)
    if not p.exists():
        bundled = Path(__file__).resolve().parent.parent / "recipes" / f"{p.stem}.yaml"
        if bundled.exists():
            p = bundled
        else:
            fail(f"{path}: no such recipe file")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        fail(f"{p}: invalid YAML ({str(e).splitlines()[0]})")
    if not isinstance(d, dict):
        fail(f"{p}: a recipe must be a mapping of sections (train:, augment:)")
    return d
