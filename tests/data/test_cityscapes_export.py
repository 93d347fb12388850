"""Cityscapes test-server export and scoring in cityscapesScripts' naming, checked against
cityscapesScripts' own evaluator on the same folder."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
from data_fakes import CITIES, H, W, cityscapes_files, config, write_extracted
from PIL import Image

from segnode_jax import data, evaluation
from tests.conftest import REPO, run_cli


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory, rng):
    tmp = str(tmp_path_factory.mktemp("cs"))
    manual = write_extracted(os.path.join(tmp, "downloads"), cityscapes_files(rng))
    dcfg = config("cityscapes", tmp, manual_dir=manual)
    data.prepare(dcfg, progress=False)
    return dcfg, tmp


def _oracle(images):
    """A stand-in model: 19 class scores from the pixel values (predictions vary per pixel)."""
    c = jnp.arange(19, dtype=jnp.float32).reshape(1, 1, 1, 19)
    return -((images[..., :1] * 3.0 - (c - 9.0) / 3.0) ** 2)


def _run_config(dcfg):
    from segnode_jax.config import base_config

    cfg = base_config()
    cfg.data = dcfg
    cfg.model.num_classes = 19
    cfg.eval.batch_size = 2
    return cfg


def _cityscapes_scripts_miou(gt_root: str, pred_dir: str) -> float:
    """cityscapesScripts' evalPixelLevelSemanticLabeling on the folder, as its main() runs it."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    args = ev.args
    args.predictionPath, args.predictionWalk = pred_dir, None
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    gts = sorted(
        os.path.join(root, f)
        for root, _, files in os.walk(os.path.join(gt_root, "gtFine", "val"))
        for f in files
        if f.endswith("_gtFine_labelIds.png")
    )
    preds = [ev.getPrediction(args, gt) for gt in gts]
    result = ev.evaluateImgLists(preds, gts, args)
    return float(result["averageScoreClasses"])


def test_export_writes_server_files_and_scores_like_cityscapes_scripts(cityscapes, tmp_path):
    dcfg, tmp = cityscapes
    cfg = _run_config(dcfg)
    predictor = evaluation.Predictor.from_function(_oracle, batch_size=2)
    out = tmp_path / "submit"
    writer = evaluation.ExportWriter(dcfg, str(out))
    settings = evaluation.EvalSettings.from_config(cfg, split="val")
    ours = evaluation.evaluate_predictor(predictor, cfg, settings=settings, on_prediction=writer)
    zip_path = writer.finish()
    names = sorted(os.path.relpath(os.path.join(r, f), out) for r, _, fs in os.walk(out) for f in fs)
    assert names == [f"frankfurt/frankfurt_00000{i}_000019_leftImg8bit.png" for i in range(2)]
    valid = {
        lab.id
        for lab in __import__("cityscapesscripts.helpers.labels", fromlist=["labels"]).labels
        if 0 <= lab.trainId < 19
    }
    for name in names:
        ids = np.asarray(Image.open(out / name))
        assert ids.shape == (H, W) and set(np.unique(ids)) <= valid  # full resolution, labelIds
    with zipfile.ZipFile(zip_path) as z:
        assert sorted(z.namelist()) == names
    # Scored from the exported folder (found by cityscapesScripts' pattern): the same mIoU as
    # the evaluation that wrote it, and as cityscapesScripts' evaluator on the same folder.
    saved = evaluation.score_predictions(dcfg, str(out), split="val")
    assert 0.0 < saved["miou"] < 1.0  # a real mix of hits and misses
    assert saved["miou"] == pytest.approx(ours["miou"], abs=1e-12)
    assert saved["miou"] == pytest.approx(_cityscapes_scripts_miou(dcfg.manual_dir, str(out)), abs=1e-9)
    # Another tool's naming, flat and nested elsewhere, also found that way.
    other = tmp_path / "other" / "results"
    other.mkdir(parents=True)
    for name in names:
        stem = os.path.basename(name).replace("_leftImg8bit.png", "")
        shutil.copy(out / name, other / f"{stem}_pred_labelIds.png")
    assert evaluation.score_predictions(dcfg, str(tmp_path / "other"), split="val")["miou"] == pytest.approx(
        saved["miou"], abs=1e-12
    )
    # Two candidates for one image: an error naming both.
    shutil.copy(out / names[0], tmp_path / "other" / os.path.basename(names[0]))
    with pytest.raises(
        evaluation.PredictionError, match=r"two predictions match frankfurt/frankfurt_000000_000019.*and"
    ):
        evaluation.score_predictions(dcfg, str(tmp_path / "other"), split="val")
    # An export folder that holds files is refused, not overwritten.
    with pytest.raises(evaluation.ExportError, match="--overwrite"):
        evaluation.ExportWriter(dcfg, str(out))


def test_test_split_export_names_every_test_image(cityscapes, tmp_path):
    dcfg, _ = cityscapes
    cfg = _run_config(dcfg)
    writer = evaluation.ExportWriter(dcfg, str(tmp_path / "test"))
    settings = evaluation.EvalSettings.from_config(cfg, split="test", mode="slide", crop=(16, 16))
    evaluation.evaluate_predictor(
        evaluation.Predictor.from_function(_oracle, batch_size=2), cfg, settings=settings, on_prediction=writer
    )
    writer.finish()
    city = CITIES["test"][0]
    assert sorted(writer.written) == [f"{city}/{city}_00000{i}_000019_leftImg8bit.png" for i in range(2)]
    assert os.path.isfile(str(tmp_path / "test") + ".zip")


# Labels of 6 classes only; the stand-in model predicts classes 0-7 only: classes 4-7 are predicted
# but absent from the labels (IoU 0), 10 and 11 labelled but never predicted (IoU 0), the other 9
# absent from both (left out of the mean). The rule cityscapesScripts applies, compared here.
LABELLED = (0, 1, 2, 3, 10, 11)
PREDICTED = 8


def _oracle_of_eight(images):
    scores = _oracle(images)
    return jnp.where(jnp.arange(19) < PREDICTED, scores, -1e9)


def test_absent_classes_score_like_cityscapes_scripts_through_evaluate_cli(tmp_path_factory, rng, tmp_path):
    tmp = str(tmp_path_factory.mktemp("cs_absent"))
    manual = write_extracted(os.path.join(tmp, "downloads"), cityscapes_files(rng, train_ids=LABELLED))
    dcfg = config("cityscapes", tmp, manual_dir=manual)
    data.prepare(dcfg, progress=False)
    cfg = _run_config(dcfg)
    out = tmp_path / "submit"
    writer = evaluation.ExportWriter(dcfg, str(out))
    settings = evaluation.EvalSettings.from_config(cfg, split="val")
    ours = evaluation.evaluate_predictor(
        evaluation.Predictor.from_function(_oracle_of_eight, batch_size=2), cfg, settings=settings, on_prediction=writer
    )
    writer.finish()
    confusion = np.asarray(ours["confusion_matrix"])
    labelled, predicted = confusion.sum(1) > 0, confusion.sum(0) > 0
    assert set(np.flatnonzero(labelled)) <= set(LABELLED) and set(np.flatnonzero(predicted)) <= set(range(PREDICTED))
    assert (predicted & ~labelled).any() and (labelled & ~predicted).any() and (~labelled & ~predicted).sum() >= 9
    # The saved folder scored through the real CLI: the same number as cityscapesScripts'.
    proc = run_cli(
        "evaluate.py",
        f"--predictions={out}",
        f"--config={os.path.join(REPO, 'configs', 'cityscapes.py')}",
        f"--config.data.data_dir={tmp}",
        f"--config.data.manual_dir={manual}",
        "--split=val",
        f"--output={tmp_path / 'scored'}",
    )
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "scored" / "results.json") as f:
        scored = json.load(f)
    reference = _cityscapes_scripts_miou(manual, str(out))
    assert 0.0 < reference < 1.0
    assert scored["miou"] == pytest.approx(reference, abs=1e-9)
    assert scored["miou"] == pytest.approx(ours["miou"], abs=1e-12)
    # The other rule (every class, absent ones 0) would differ: the comparison can tell them apart.
    assert abs(evaluation.metrics_from_confusion(confusion, miou_over="all")["miou"] - reference) > 1e-3
