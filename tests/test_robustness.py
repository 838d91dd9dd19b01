"""`fakelite robustness`: perturbation definitions, determinism, outputs, recipes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import fakelite
from fakelite.data import transforms as T
from fakelite.eval import robustness as rb


def _img(seed=0, h=64, w=48):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_perturbation_definitions():
    img = _img()
    assert set(rb.PERTURBATIONS) == {"jpeg", "blur", "rescale", "noise", "low_light", "occlusion", "wild"}
    assert [lv.value for lv in rb.PERTURBATIONS["jpeg"]] == [95, 75, 50, 30]
    assert [lv.value for lv in rb.PERTURBATIONS["blur"]] == [0.5, 1, 2, 3]
    assert [lv.value for lv in rb.PERTURBATIONS["rescale"]] == [0.5, 0.75, 1.5, 2]
    assert [lv.value for lv in rb.PERTURBATIONS["noise"]] == [2, 5, 10, 20]
    assert [lv.value for lv in rb.PERTURBATIONS["low_light"]] == [0.6, 0.4, 0.2]
    assert [lv.value for lv in rb.PERTURBATIONS["occlusion"]] == [10, 20, 30, 40]
    rng = np.random.default_rng(0)
    # rescale changes the size; the others keep it
    assert rb.PERTURBATIONS["rescale"][0].fn(img, rng).shape == (32, 24, 3)
    assert rb.PERTURBATIONS["rescale"][3].fn(img, rng).shape == (128, 96, 3)
    for p in ("jpeg", "blur", "noise", "low_light", "occlusion"):
        for lv in rb.PERTURBATIONS[p]:
            out = lv.fn(img, np.random.default_rng(1))
            assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img), (p, lv.label)
    # stronger blur removes more high-frequency energy; lower JPEG quality loses more
    hf = lambda a: np.abs(np.diff(a.astype(float), axis=1)).mean()  # noqa: E731
    blurred = [hf(lv.fn(img, rng)) for lv in rb.PERTURBATIONS["blur"]]
    assert blurred == sorted(blurred, reverse=True)
    err = [np.abs(lv.fn(img, rng).astype(float) - img).mean() for lv in rb.PERTURBATIONS["jpeg"]]
    assert err == sorted(err)


def test_low_light_formula():
    x = np.array([[[255, 128, 0]]], dtype=np.uint8).repeat(2, 0).repeat(2, 1)
    out = T.low_light_level(x, 0.4)  # 255 · (0.4 · x/255)^1.6
    expect = np.round(255 * (0.4 * np.array([255, 128, 0]) / 255) ** 1.6).astype(np.uint8)
    assert np.array_equal(out[0, 0], expect)
    assert np.array_equal(T.low_light_level(x, 1.0), x)  # b = 1: unchanged
    assert np.array_equal(T.low_light(x, 1.0), x)  # the old signature still works


def test_noise_and_occlusion_statistics():
    img = np.full((200, 200, 3), 128, np.uint8)
    noisy = T.gaussian_noise(img, 10, np.random.default_rng(0)).astype(float)
    assert abs(noisy.std() - 10) < 0.5 and abs(noisy.mean() - 128) < 0.5
    base = np.zeros((100, 100, 3), np.uint8)
    for frac in (0.1, 0.2, 0.3, 0.4):
        covered = (T.occlude(base, frac, np.random.default_rng(0)) == 128).all(2).mean()
        assert abs(covered - frac) < 0.02


def test_random_perturbations_seeded_per_image(tmp_path):
    img = _img(4)
    lv = rb.PERTURBATIONS["occlusion"][1]
    s = lambda seed, name: rb._image_seed(seed, "occlusion", 1, "set", tmp_path / name)  # noqa: E731
    same = [lv.fn(img, np.random.default_rng(s(0, "a.png"))) for _ in range(2)]
    assert np.array_equal(*same)
    assert not np.array_equal(same[0], lv.fn(img, np.random.default_rng(s(0, "b.png"))))  # per image
    assert not np.array_equal(same[0], lv.fn(img, np.random.default_rng(s(1, "a.png"))))  # per seed


def test_wild_combinations_compose():
    img = _img(3)
    lv = rb.PERTURBATIONS["wild"][0]  # 0.5× then JPEG 75
    expect = T.jpeg(T.rescale(img, 0.5), 75)
    assert np.array_equal(lv.fn(img, np.random.default_rng(0)), expect)


def test_deterministic_and_same_perturbation_for_every_model(tiny_data, tiny_fp_model):
    m = fakelite.load(tiny_fp_model[1])
    sets = rb.resolve_data(tiny_data)
    assert [s.name for s in sets] == ["gen_a", "gen_b"]  # a dataset root uses test/
    a = rb.run_robustness({"a": m, "b": fakelite.load(tiny_fp_model[1])}, sets, ["noise"], quiet=True)
    b = rb.run_robustness({"a": m}, sets, ["noise"], quiet=True)
    assert a["results"]["a"] == a["results"]["b"] == b["results"]["a"]
    row = a["results"]["a"]["clean"]
    assert row["mean"]["n"] == 32 and set(row["sets"]) == {"gen_a", "gen_b"}
    assert row["mean"]["auc"] == pytest.approx(np.mean([row["sets"][s]["auc"] for s in ("gen_a", "gen_b")]))


def test_clean_row_matches_eval(tiny_data, tiny_fp_model):
    from fakelite.eval.evaluate import evaluate

    m = fakelite.load(tiny_fp_model[1])
    r = rb.run_robustness({"m": m}, rb.resolve_data(tiny_data), ["jpeg"], quiet=True)
    e = evaluate(m, tiny_data / "test", quiet=True)
    for s in ("gen_a", "gen_b"):
        assert r["results"]["m"]["clean"]["sets"][s]["auc"] == pytest.approx(e["sets"][s]["auc"])
        assert r["results"]["m"]["clean"]["sets"][s]["acc"] == pytest.approx(e["sets"][s]["acc"])


def test_subsample_balanced_and_deterministic(tiny_data):
    sets = rb.resolve_data(tiny_data)
    a, b = rb.subsample(sets, 6, seed=0), rb.subsample(sets, 6, seed=0)
    assert [s.items for s in a] == [s.items for s in b]
    for s in a:
        assert len(s.items) == 6 and sum(y for _, y in s.items) == 3


def _app():
    from fakelite.commands.robust import robustness_command

    app = typer.Typer()
    app.command()(robustness_command)
    return app


def test_command_writes_table_json_and_charts(tiny_data, tiny_fp_model, tmp_path):
    import badinputs

    data = tmp_path / "data"
    shutil.copytree(tiny_data / "test", data)
    corpus = badinputs.make_corpus(data / "gen_a" / "1_fake", unreadable=False)
    n_bad = len(badinputs.bad_images(corpus))
    out = tmp_path / "out"
    res = CliRunner().invoke(_app(), ["--model", str(tiny_fp_model[1]), "--model", str(tiny_fp_model[1]),
                                      "--data", str(data), "--out", str(out), "--quiet",
                                      "-p", "low_light", "-p", "jpeg", "--per-set", "4"])
    assert res.exit_code == 0, res.output
    assert f"skipped {n_bad} unreadable file(s)" in res.output
    j = json.loads((out / "robustness.json").read_text())
    name = tiny_fp_model[0].name
    assert j["models"] == [name, f"{name}-2"] and j["quick"] is False and j["n_images"] == 32 + len(badinputs.odd_but_valid_images(corpus))
    assert list(j["perturbations"]) == ["low_light", "jpeg"]
    assert len(j["results"][name]["jpeg"]) == 4 and len(j["results"][name]["low_light"]) == 3
    assert len(j["skipped"]) == n_bad
    md = (out / "robustness.md").read_text()
    assert "## jpeg" in md and "| q30 |" in md and "AUC per test set" in md
    for p in ("jpeg", "low_light"):
        png = out / f"robustness_{p}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "jpeg" in res.output and "q30" in res.output


def test_command_errors_are_one_line(tiny_data, tmp_path):
    bad = tmp_path / "x.fakelite"
    bad.write_bytes(b"nope")
    r = CliRunner().invoke(_app(), ["--model", str(bad), "--data", str(tiny_data)])
    assert r.exit_code == 2 and str(bad) in r.output and "Traceback" not in r.output


def test_unknown_perturbation_is_clear(tiny_data, tiny_fp_model):
    r = CliRunner().invoke(_app(), ["--model", str(tiny_fp_model[1]), "--data", str(tiny_data), "-p", "fog",
                                    "--quiet"])
    assert r.exit_code == 2 and "unknown perturbation 'fog'" in r.output


@pytest.mark.parametrize("name", ["npr", "robust"])
def test_bundled_recipes(name):
    from fakelite.commands.common import parse_recipe
    from fakelite.train.loop import TrainConfig

    d = parse_recipe(name)
    cfg = TrainConfig.from_dict({**d["train"], "augment": d.get("augment")})
    assert cfg.lr == 2e-4 and cfg.batch_size == 32 and cfg.epochs == 50 and cfg.lr_milestones == (10, 20, 30, 40)
    assert cfg.augment.hflip == 0.5
    if name == "robust":
        a = cfg.augment
        assert min(a.blur_prob, a.jpeg_prob, a.noise_prob, a.dark_prob, a.occlude_prob, a.rescale_prob) > 0
        assert a.dark_brightness == (0.2, 1.0)
        # about half the images stay clean
        img = _img(5)
        clean = sum(np.array_equal(T.augment(img, a, np.random.default_rng(i))[:, ::1], img)
                    or np.array_equal(T.augment(img, a, np.random.default_rng(i)), img[:, ::-1]) for i in range(400))
        assert 0.35 < clean / 400 < 0.6
    else:
        assert not any((cfg.augment.blur_prob, cfg.augment.jpeg_prob))
