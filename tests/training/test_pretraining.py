"""ImageNet pretraining end to end on a tiny fake ILSVRC2012 (the real archive layout): a tiny
SegNode classifier learns well above chance, evaluate reports the same top-1 as an independent
count, the run resumes exactly, and its backbone initialises a segmentation run."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest

import segnode_jax
from segnode_jax import checkpoints, data, scoring, training, weights
from segnode_jax.training import ConfigError
from tests.conftest import REPO, read_jsonl, train_losses
from tests.data import data_fakes as F

STEPS = 40
CHANCE = 1 / len(F.FAKE_WNIDS)


def small_model(cfg):
    """configs/tiny.py's widths, SegNode's field solved by Euler x2 written out (cheap to compile)."""
    tiny = segnode_jax.load_config(os.path.join(REPO, "configs", "tiny.py"))
    task, num_classes = cfg.model.task, cfg.model.get("num_classes")
    cfg.model = tiny.model
    cfg.model.task = task
    with cfg.model.ignore_type():
        cfg.model.num_classes = num_classes
    cfg.model.classification.head_channels = (4, 4, 4, 4)
    cfg.model.classification.features = 16
    cfg.model.ode.solver, cfg.model.ode.num_steps, cfg.model.ode.adjoint = "euler", 2, "unrolled"
    return cfg


def pretrain_config(tmp):
    cfg = small_model(segnode_jax.load_config(os.path.join(REPO, "configs", "imagenet.py")))
    d = cfg.data
    d.manual_dir, d.data_dir = str(tmp / "raw"), str(tmp / "tfds")
    d.crop_size, d.eval_resize, d.num_workers = (32, 32), 36, 0
    t = cfg.train
    t.batch_size, t.num_epochs, t.num_steps = 8, None, STEPS
    t.learning_rate = 0.1
    t.lr_decay_at = (0.6, 0.9)
    t.log_every_steps, t.checkpoint_every_steps, t.eval_every_steps = 5, 20, 20
    t.progress_bar = False
    cfg.eval.batch_size = 8
    return cfg


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    F.write_imagenet(str(tmp / "raw"), np.random.default_rng(7), per_class=10, n_val=20)
    cfg = pretrain_config(tmp)
    data.prepare(cfg.data, progress=False)
    data.resolve_num_classes(cfg)  # None in configs/imagenet.py: the dataset's (4)
    workdir = str(tmp / "run")
    result = training.train_and_evaluate(cfg, workdir)
    return tmp, cfg, workdir, result


@pytest.mark.slow
def test_a_tiny_segnode_classifier_learns_and_evaluate_counts_the_same_top1(pretrained):
    tmp, cfg, workdir, result = pretrained
    assert result["step"] == STEPS
    assert result["val"]["num_images"] == 20
    assert result["val"]["top1"] >= 0.75 > 2 * CHANCE, result["val"]
    assert result["best"]["top1"] == max(result["val"]["top1"], result["best"]["top1"])
    # The training loss over the last 10 steps (the logged interval means of steps 31-35 and 36-40),
    # well under chance (log 4). Not the single batches at the log steps: every 5th step is the last
    # batch of an epoch of 40 images, and on an AMD EPYC host those three batches (steps 30-40)
    # sat at 1.4-1.6 while the intervals around them averaged 0.83-1.04.
    means = {
        int(r["step"]): float(r["loss_mean"])
        for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
        if r.get("split", "train") == "train" and "loss_mean" in r
    }
    assert np.mean([means[s] for s in (35, 40)]) < 0.7 * np.log(len(F.FAKE_WNIDS)), means
    res, out = scoring.evaluate_checkpoint(workdir, progress=False)
    assert json.load(open(os.path.join(out, "results.json")))["top1"] == res["top1"] == result["val"]["top1"]
    assert res["mean_nfe"] == 2  # Euler x2 written out: two evaluations of the field
    # An independent count: the model applied image by image, the argmax against the labels.
    variables = checkpoints.load_variables(workdir)
    hits, top5 = 0, 0
    for ex in data.eval_dataset(cfg.data):
        logits, _ = segnode_jax.apply(variables, ex["image"][None], cfg.model)
        order = np.argsort(-np.asarray(logits)[0])
        hits += int(order[0] == ex["label"])
        top5 += int(ex["label"] in order[:5])
    assert res["top1"] == pytest.approx(hits / 20) and res["top5"] == pytest.approx(top5 / 20)


@pytest.mark.slow
def test_pretraining_resumes_exactly(pretrained, tmp_path, capsys):
    tmp, cfg, workdir, _ = pretrained
    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", str(STEPS)))
    capsys.readouterr()
    training.train_and_evaluate(cfg, resumed)
    assert f"resuming {resumed} from step 20" in capsys.readouterr().err
    a, b = train_losses(workdir), train_losses(resumed)
    assert sorted(b) == sorted(a) == list(range(5, STEPS + 1, 5))  # logged every 5 steps
    for step in (25, 30, 35, 40):
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), step
    # The final validation of the resumed run equals the uninterrupted one's.
    vals = [
        [r for r in read_jsonl(os.path.join(w, "metrics.jsonl")) if r.get("split") == "val" and r["step"] == STEPS]
        for w in (workdir, resumed)
    ]
    assert vals[0][-1]["top1"] == vals[1][-1]["top1"] and vals[0][-1]["loss"] == pytest.approx(
        vals[1][-1]["loss"], rel=1e-6
    )


def segmentation_config(tmp, pretrained_workdir, **model):
    cfg = small_model(segnode_jax.load_config(os.path.join(REPO, "configs", "tiny.py")))
    cfg.model.task = "segmentation"
    with cfg.model.ignore_type():
        cfg.model.num_classes = 5
    for k, v in model.items():
        cfg.model[k] = v
    cfg.data.data_dir = str(tmp / "seg_data")
    # One step at a negligible learning rate: the saved weights are the initial ones (to 1e-9).
    cfg.train.num_steps, cfg.train.learning_rate = 1, 1e-12
    cfg.train.eval_every_steps = 0
    cfg.init_from = pretrained_workdir
    return cfg


@pytest.mark.slow
def test_the_pretrained_backbone_initialises_segmentation_and_the_head_stays_fresh(pretrained, tmp_path, capsys):
    _, _, workdir, _ = pretrained
    cfg = segmentation_config(tmp_path, workdir)
    capsys.readouterr()
    training.train_and_evaluate(cfg, str(tmp_path / "seg"))
    err = capsys.readouterr().err
    assert "a pretrained classifier; using its backbone, not its classification head" in err, err
    pre = weights.flatten(checkpoints.load_variables(workdir)["params"])
    seg = weights.flatten(checkpoints.load_variables(str(tmp_path / "seg"))["params"])
    backbone = [p for p in seg if not p.startswith("head/")]
    assert backbone and all(np.allclose(seg[p], pre[p], rtol=0, atol=1e-9) for p in backbone)
    # The classifier's head has other variables than the segmentation head: none was taken.
    assert not any(p in pre for p in seg if p.startswith("head/") and p.endswith("kernel") and "classifier" in p)
    fresh = jax.device_get(segnode_jax.init(cfg.model, jax.random.key(int(cfg.seed)), (1, 32, 32, 3))["params"])
    fresh = weights.flatten(fresh)
    heads = [p for p in seg if p.startswith("head/")]
    assert heads and all(np.allclose(seg[p], fresh[p], rtol=0, atol=1e-9) for p in heads)
    assert not all(np.allclose(seg[p], fresh[p], rtol=0, atol=1e-9) for p in backbone)


def test_a_backbone_of_another_width_is_refused_naming_the_setting(pretrained, tmp_path):
    _, _, workdir, _ = pretrained
    cfg = segmentation_config(tmp_path, workdir, width=8)
    with pytest.raises(ConfigError, match=r"model.width=4.*--config.model.width=4"):
        training.train_and_evaluate(cfg, str(tmp_path / "wide"))


def test_a_model_and_a_dataset_of_different_tasks_are_refused(pretrained, tmp_path):
    _, pre_cfg, _, _ = pretrained
    seg = segmentation_config(tmp_path, None)
    seg.model.task = "classification"
    with pytest.raises(ConfigError, match="classification dataset.*configs/imagenet.py"):
        training.resolve_config(seg)
    cls = pre_cfg.copy_and_resolve_references()
    cls.model.task = "segmentation"
    with pytest.raises(ConfigError, match="--config.model.task=classification"):
        training.resolve_config(cls)


@pytest.mark.slow
def test_evaluate_cli_reports_top1_and_refuses_segmentation_only_tools(pretrained):
    from tests.conftest import run_cli

    _, _, workdir, result = pretrained
    proc = run_cli("evaluate.py", f"--ckpt={workdir}", "--trajectory")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "classifier" in errors[0], proc.stderr[-2000:]
    proc = run_cli("evaluate.py", f"--ckpt={workdir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"top-1 {100 * result['val']['top1']:.2f}" in proc.stdout, proc.stdout
