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
    from fakelite.artifact import ArtifactError, load

    try:
        return load(path)
    except ArtifactError as e:
        fail(str(e))


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
