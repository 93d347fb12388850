"""The benchmark commands the docs give are real: each ``python -m benchmarks.<name>`` names a
module that imports (run from the repository root, as the docs say), and running a benchmark by
its path says how to run it instead of failing inside an import.

The benchmarks themselves measure for minutes to hours and are not run here."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

import segnode_jax
from tests.conftest import REPO

DOCS = ["README.md", "benchmarks/README.md", *sorted(glob.glob("docs/*.md", root_dir=REPO))]
COMMAND = re.compile(r"python3? -m (benchmarks(?:\.\w+)+)")


def _documented_modules() -> set[str]:
    found = set()
    for doc in DOCS:
        with open(os.path.join(REPO, doc), encoding="utf-8") as f:
            found |= set(COMMAND.findall(f.read()))
    return found


def _benchmark_scripts() -> list[str]:
    return sorted(
        "benchmarks." + os.path.splitext(os.path.relpath(p, os.path.join(REPO, "benchmarks")))[0].replace(os.sep, ".")
        for p in glob.glob(os.path.join(REPO, "benchmarks", "**", "*.py"), recursive=True)
        if 'if __name__ == "__main__"' in open(p, encoding="utf-8").read()
    )


@pytest.mark.slow
def test_every_documented_benchmark_command_names_a_module_that_imports():
    documented = _documented_modules()
    scripts = _benchmark_scripts()
    assert {"benchmarks.table2", "benchmarks.parity", "benchmarks.main_job"} <= documented
    assert documented - {"benchmarks.torch_peer.make_fixture"} <= set(scripts), sorted(documented - set(scripts))
    # Importing needs no torch (vs_torch imports it when it runs); make_fixture needs torch at import.
    importable = [m for m in scripts if m != "benchmarks.torch_peer.make_fixture"]
    code = (
        "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nprint('ok', len(sys.argv) - 1)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *importable], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ok", str(len(importable))]


def test_a_benchmark_run_by_its_path_says_how_to_run_it():
    proc = subprocess.run(
        [sys.executable, os.path.join("benchmarks", "main_job.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: run the benchmarks as modules from the repository root: python -m benchmarks.main_job ..."
    ]
    assert proc.stdout == ""


def test_parity_reports_a_recipe_that_diverged_as_a_result():
    from benchmarks import parity

    solve = parity.main_job_solve()

    def run(model, recipe, seed, miou):
        failed = None if miou is not None else "training stopped at step 9: the loss is inf"
        return {
            "model": model,
            "setting": solve,
            "recipe": recipe,
            "seed": seed,
            "miou": miou,
            "failed": failed,
            "curve": [[50, 0.3], [100, miou]] if miou is not None else [],
            "train_nfe": 2.0,
            "eval_nfe": 2.0 if miou is not None else None,
            "trained": "2026-12-06 11:52 UTC",
        }

    runs = [run("segnode", "paper", 0, 0.57), run("segnode", "paper", 1, 0.59), run("unode", "shared", 0, 0.53)]
    runs += [run("unode", "shared_sgd", s, None) for s in range(3)]
    measured = {
        f"{m}|{solve}": {
            "params": 1000,
            "train_memory_bytes": 2**20,
            "train_step_seconds": 0.5,
            "infer_ms_per_image": 7.0,
        }
        for m in ("segnode", "unode")
    }
    rows = parity.summarise(runs, measured)
    diverged = next(r for r in rows if r["model"] == "unode" and r["recipe"] == "shared_sgd")
    assert (diverged["seeds"], diverged["failed"], diverged["miou_mean"], diverged["nfe"]) == (3, 3, None, None)
    assert parity.best_recipes(rows) == [
        {"model": "segnode", "recipe": "paper", "miou_mean": pytest.approx(0.58)},
        {"model": "unode", "recipe": "shared", "miou_mean": pytest.approx(0.53)},
    ]
    result = {
        "rows": rows,
        "runs": runs,
        "steps": 200,
        "seeds": 3,
        "remat_seeds": 0,
        "ode_peers": ["unode"],
        "machine": {"date": "2026-12-06 12:10 UTC", "cpu_count": 2, "backend": "cpu"},
        "shared_recipe": parity.SHARED_RECIPE,
        "shared_recipes": parity.SHARED_RECIPES,
    }
    table = parity.markdown(result)
    assert f"| unode | {solve} | shared_sgd | diverged (3/3 seeds) |" in table
    assert "Diverged: unode under `shared_sgd` (3/3 seeds)." in table
    assert "--shared_sgd" in table and "runs trained 2026-12-06 (6)" in table


@pytest.mark.slow
def test_camvid_parity_scales_the_papers_structures_to_table_2s_parameter_ratios():
    """One width factor for stem, layer1 and branches keeps SegNode at about a third of HRNetV2
    (Table 2: 0.33), and the three differ in nothing but the model."""
    from benchmarks import camvid_parity

    cfgs = {m: camvid_parity.run_config(m, "shared", 0) for m in camvid_parity.MODELS}
    params = {m: segnode_jax.count_params(c.model) for m, c in cfgs.items()}
    assert 0.30 < params["segnode"] / params["hrnetv2"] < 0.36, params
    assert (cfgs["segnode"].model.stem_width, cfgs["segnode"].model.layer1_planes, cfgs["segnode"].model.width) == (
        16,
        16,
        12,
    )
    from segnode_jax import training

    # Compared as training runs them (resolved: the optimiser recipe filled in), so that a
    # model's default recipe cannot slip in (it did: HRNetV2 trained with SGD 0.01, the
    # Baseline with AdamW 1e-4 under the "shared" recipe, 2026-12-07).
    plain = {m: training.resolve_config(c).to_dict() for m, c in cfgs.items()}
    for c in plain.values():
        c["model"].pop("name")
    assert plain["hrnetv2"] == plain["baseline"] == plain["segnode"]
    t = plain["segnode"]["train"]
    assert (t["optimizer"], t["learning_rate"], t["momentum"], t["weight_decay"]) == ("sgd", 0.1, 0.9, 1e-4)
    paper = camvid_parity.run_config("hrnetv2", "paper", 0)

    resolved = training.resolve_config(paper).train
    assert (resolved.optimizer, resolved.learning_rate, resolved.weight_decay) == ("sgd", 0.01, 5e-4)
    assert camvid_parity.plan(camvid_parity.SEEDS) == [
        ("hrnetv2", 0),
        ("baseline", 0),
        ("segnode", 0),
        ("hrnetv2", 1),
        ("baseline", 1),
        ("segnode", 1),
        ("segnode", 2),
    ]


def test_camvid_parity_keeps_finished_runs_in_the_repository_and_trains_only_the_rest(tmp_path, monkeypatch):
    # A later machine has no run folders: what was finished must come from the committed records.
    from benchmarks import camvid_parity, report
    from segnode_jax import training

    records = tmp_path / "records"
    finished = {"run": "segnode_shared_s0", "steps": 1500, "finished": True, "failed": None, "test_miou": 0.5}
    report.write_json_at(str(records / "segnode_shared_s0.json"), finished)
    report.write_json_at(
        str(records / "baseline_shared_s0.json"), {**finished, "run": "baseline_shared_s0", "steps": 500}
    )
    trained = []

    def fake_train(cfg, workdir):  # stands in for hours of training; only which runs reach it matters
        trained.append(os.path.basename(workdir))
        raise training.NonFiniteLossError("loss is nan at step 3")

    monkeypatch.setattr(training, "train_and_evaluate", fake_train)
    workdir = tmp_path / "runs"
    got = camvid_parity.train_one("segnode", "shared", 0, str(workdir), 1500, records=str(records))
    assert got == finished and trained == [] and not workdir.exists()
    # kept for 500 steps is not kept for 1500: trained; a failure is a result, recorded at once
    got = camvid_parity.train_one("baseline", "shared", 0, str(workdir), 1500, records=str(records))
    assert trained == ["baseline_shared_s0"] and got["failed"] == "loss is nan at step 3" and not got["finished"]
    again = json.loads((records / "baseline_shared_s0.json").read_text())
    assert again["failed"] == got["failed"] and again["steps"] == 1500
    assert camvid_parity.train_one("baseline", "shared", 0, str(workdir), 1500, records=str(records)) == again
    assert trained == ["baseline_shared_s0"]


def test_camvid_parity_reports_the_claim_and_unfinished_runs():
    from benchmarks import camvid_parity

    def run(model, seed, test, finished=True):
        return {
            "model": model,
            "recipe": "shared",
            "seed": seed,
            "run": f"{model}_shared_s{seed}",
            "finished": finished,
            "failed": None,
            "curve": [[500, test - 0.05], [1500, test + 0.1]],
            "val_miou": test + 0.1,
            "val_step": 1500,
            "test_miou": test if finished else None,
            "test_per_class_iou": None,
            "segments": [{"started": "2026-12-06 22:40 UTC", "seconds": 3600, "cpu": "AMD EPYC", "cpu_count": 2}],
        }

    runs = [
        run("hrnetv2", 0, 0.40),
        run("hrnetv2", 1, 0.42),
        run("baseline", 0, 0.41),
        run("baseline", 1, 0.0, False),
        run("segnode", 0, 0.38),
        run("segnode", 1, 0.385),
        run("segnode", 2, 0.39),
    ]
    measured = {
        "hrnetv2": {
            "params": 4.1e6,
            "train_memory_bytes": 900 * 2**20,
            "train_step_seconds": 2.0,
            "infer_ms_per_image": 30.0,
        },
        "baseline": {
            "params": 4.5e6,
            "train_memory_bytes": 800 * 2**20,
            "train_step_seconds": 1.8,
            "infer_ms_per_image": 25.0,
        },
        "segnode": {
            "params": 1.35e6,
            "train_memory_bytes": 300 * 2**20,
            "train_step_seconds": 0.5,
            "infer_ms_per_image": 9.0,
        },
    }
    rows = camvid_parity.summarise(runs, measured)
    claim = camvid_parity.claim(rows)
    assert claim["test_miou_gap"] == pytest.approx(0.385 - 0.41) and not claim["within_1_point"]
    assert claim["third_of_params"] and claim["under_half_memory"] and not claim["holds"]
    table = camvid_parity.markdown(
        {
            "machine": {"date": "2026-12-07", "cpu_count": 2, "cpu": "AMD EPYC"},
            "steps": 1500,
            "runs": runs,
            "rows": rows,
            "claim": claim,
        }
    )
    assert "| hrnetv2 | shared | 41.0 ± 1.4 (n=2) |" in table
    assert "| baseline | shared | 41.0 (n=1 of 2) |" in table
    assert "The claim does not hold here (shared recipe): SegNode's test mIoU is -2.5 points" in table
    assert "trained 2026-12-06 (7.0 h) on 2 cores of AMD EPYC" in table


def test_table2_compares_a_row_with_the_baseline_timed_in_its_own_process():
    from benchmarks import table2

    models = {
        "hrnetv2": {"infer_seconds": 0.036, "train_step_seconds": 0.40, "time_measured": "2026-12-06"},
        "baseline": {"infer_seconds": 0.023, "train_step_seconds": 0.30, "time_measured": "2026-12-06"},
        "segnode": {"infer_seconds": 0.097, "train_step_seconds": 31.0, "time_measured": "2026-12-06"},
        "segnode+ocr": {"infer_seconds": 0.173, "train_step_seconds": 39.5, "time_measured": "2026-12-02"},
    }
    refs = {
        "date": "2026-12-02",
        "hrnetv2": {"infer_seconds": 0.067, "train_step_seconds": 0.716},
        "baseline": {"infer_seconds": 0.043, "train_step_seconds": 0.456},
        "segnode": {"infer_seconds": 0.135, "train_step_seconds": 41.2},
    }
    r = table2.ratios(models, refs)
    assert r["segnode+ocr"]["train_time_vs_baseline"] == pytest.approx(39.5 / 0.456)
    assert r["segnode+ocr"]["infer_time_vs_hrnetv2"] == pytest.approx(0.173 / 0.067)
    # The table's own rows of the three are compared with each other, whatever the references.
    assert r["segnode"]["train_time_vs_baseline"] == pytest.approx(31.0 / 0.30)
    # Without references every row is compared with the table's rows.
    assert table2.ratios(models)["segnode+ocr"]["train_time_vs_baseline"] == pytest.approx(39.5 / 0.30)

    # Re-timing the three (and one variant) on a later day keeps their 2026-12-06 timings as the
    # references of the rows timed beside them then; the older day's references stay.
    models["segnode+euler_x2"] = {"infer_seconds": 0.01, "train_step_seconds": 0.13, "time_measured": "2026-12-06"}
    models["segnode+rk4x2"] = {"infer_seconds": 0.02, "train_step_seconds": 1.4, "time_measured": "2026-12-06"}
    kept = table2.keep_references(
        {"models": models, "time_references": refs}, [*table2.REFERENCE_ROWS, "segnode+rk4x2"], "2026-12-07"
    )
    assert [r["date"] for r in kept] == ["2026-12-02", "2026-12-06"]
    assert kept[1]["baseline"]["train_step_seconds"] == 0.30
    later = {
        **models,
        "hrnetv2": {"infer_seconds": 0.08, "train_step_seconds": 0.9, "time_measured": "2026-12-07"},
        "baseline": {"infer_seconds": 0.05, "train_step_seconds": 0.7, "time_measured": "2026-12-07"},
        "segnode+rk4x2": {"infer_seconds": 0.06, "train_step_seconds": 0.7, "time_measured": "2026-12-07"},
    }
    r = table2.ratios(later, kept)
    assert r["segnode+euler_x2"]["train_time_vs_baseline"] == pytest.approx(0.13 / 0.30)  # its own day's Baseline
    assert r["segnode+rk4x2"]["train_time_vs_baseline"] == pytest.approx(0.7 / 0.7)
    assert r["segnode+ocr"]["train_time_vs_baseline"] == pytest.approx(39.5 / 0.456)
    # Nothing left from that day (or the three not re-timed): no new references.
    assert len(table2.keep_references({"models": models, "time_references": refs}, list(models), "2026-12-07")) == 1
    assert (
        len(table2.keep_references({"models": models, "time_references": refs}, ["segnode+rk4x2"], "2026-12-07")) == 1
    )


def test_camvid_block_is_generated_from_the_run_files(tmp_path):
    """benchmarks.camvid reads a run's results (val, test, timing) and writes them, and only
    them, into its JSON and its README block; the published rows stay labelled as published."""
    import json

    from PIL import Image

    from benchmarks import camvid, report
    from segnode_jax import data
    from segnode_jax.config import base_config, config_to_json

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval_test" / "predictions").mkdir(parents=True)
    cfg = base_config()
    cfg.data = data.data_config("camvid")
    cfg.model.size, cfg.model.ode.solver, cfg.model.ode.num_steps, cfg.train.num_steps = "small", "euler", 2, 1234
    cfg.data.eval_size = (180, 240)
    (run / "config.json").write_text(config_to_json(cfg))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 500, "split": "val", "miou": 0.4}) + "\n")
    (run / "eval" / "results.json").write_text(json.dumps({"miou": 0.41, "pixel_accuracy": 0.8, "step": 500}))
    per_class = {name: 0.01 * i for i, name in enumerate(data.get_info(cfg.data).class_names)}
    (run / "eval_test" / "results.json").write_text(
        json.dumps({"miou": 0.3712, "pixel_accuracy": 0.75, "per_class_iou": per_class, "num_images": 233, "step": 500})
    )
    (run / "main_job.json").write_text(
        json.dumps({"seconds": 1625, "finished": "2026-12-06 20:00 UTC", "phases": {"train": 1500}})
    )
    for i in range(4):
        Image.new("RGB", (30, 10), (i * 60, 0, 0)).save(run / "eval_test" / "predictions" / f"f{i}.png")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- camvid-main-job:begin -->\nold\n<!-- camvid-main-job:end -->\nafter\n")
    old_results = report.RESULTS
    report.RESULTS = str(tmp_path / "results")
    try:
        result = camvid.main(["--workdir", str(run), "--readme", str(readme)])
    finally:
        report.RESULTS = old_results
    text = readme.read_text()
    assert "**Test mIoU 37.1**" in text and "(41.0 mIoU, step 500)" in text and "27 min 5 s" in text
    assert "1234 steps" in text and "`model.size=small`" in text and "old" not in text and text.endswith("after\n")
    assert "| ENet | 51.3 | none | 480x360 | Paszke et al. 2016 (ENet), Table 4 |" in text
    saved = json.load(open(tmp_path / "results" / "camvid_main_job.json"))
    assert (
        saved["test"]["miou"] == 0.3712
        and saved["seconds"] == 1625
        and result["machine"]["date"] == "2026-12-06 20:00 UTC"
    )
    assert Image.open(tmp_path / "results" / "camvid" / "main_job_test_predictions.png").size == (30, 30)


def test_solve_breakdown_counts_what_each_adjoint_differentiates():
    from benchmarks import solve_breakdown

    med = {"eval": 0.01, "vjp": 0.03, "a/forward": 0.4, "a/gradient": 2.0}
    counts = {"nfe": 40, "num_accepted_steps": 6, "num_rejected_steps": 1, "gradient_evaluations": 140}
    solve_breakdown.VARIANTS["a"] = ("a solve", {})
    try:
        back = solve_breakdown.breakdown("a", "backsolve", counts, med)
        ckpt = solve_breakdown.breakdown("a", "recursive_checkpoint", counts, med)
    finally:
        del solve_breakdown.VARIANTS["a"]
    # backsolve: every one of the 100 backward evaluations is a VJP of the field
    assert (back["backward_vjps"], back["backward_recomputed"]) == (100, 0)
    assert back["floor_seconds"] == pytest.approx(40 * 0.01 + 100 * 0.03)
    # recursive checkpointing: the 40 forward evaluations differentiated once, 60 recomputed
    assert (ckpt["backward_vjps"], ckpt["backward_recomputed"]) == (40, 60)
    assert ckpt["backward_loop_factor"] == pytest.approx(1.6 / (60 * 0.01 + 40 * 0.03))
    assert ckpt["forward_loop_factor"] == pytest.approx(1.0) and ckpt["gradient_over_floor"] == pytest.approx(2.0 / 2.2)


def _block(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert match, f"no generated block {name!r}"
    return match.group(1)


def test_every_generated_block_is_what_its_json_renders_to():
    """The README's and the results pages' generated blocks say what benchmarks/results/*.json
    say: each block equals its generator's rendering of the committed JSON (a hand edit, or a
    JSON rerun without regenerating, fails here), and each file holds exactly these blocks."""
    import json

    from benchmarks import camvid, conv_grads, main_job, onnx_speed, parity, report, solve_breakdown, table2, vs_torch

    def load(name):
        with open(os.path.join(report.RESULTS, name)) as f:
            return json.load(f)

    def picture(kind):
        return os.path.join(report.RESULTS, "camvid", f"{kind}_test_predictions.png")

    pages = {
        os.path.join(REPO, "README.md"): {
            "main-job": main_job.markdown(load("main_job.json")),
            "camvid-shipped": camvid.markdown(load("camvid_shipped.json"), picture("shipped")),
        },
        os.path.join(report.RESULTS, "camvid.md"): {
            "camvid-main-job": camvid.markdown(load("camvid_main_job.json"), picture("main_job")),
        },
        os.path.join(report.RESULTS, "table2.md"): {"table2-summary": table2.summary_markdown(load("table2.json"))},
        os.path.join(report.RESULTS, "vs_torch.md"): {"vs-torch": vs_torch.markdown(load(vs_torch.JSON))},
    }
    if os.path.exists(os.path.join(report.RESULTS, "camvid_parity.json")):
        from benchmarks import camvid_parity

        pages[os.path.join(report.RESULTS, "camvid_parity.md")] = {
            "camvid-parity": camvid_parity.markdown(load("camvid_parity.json"))
        }
    for path, expected in pages.items():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for block, rendered in expected.items():
            assert _block(text, block) == rendered.strip("\n"), (path, block)
        assert set(re.findall(r"<!-- ([\w-]+):begin -->", text)) == set(expected), path
    with open(os.path.join(REPO, "benchmarks", "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert _block(text, "parity") == parity.markdown(load("parity.json")).strip("\n")
    assert _block(text, "onnx-speed") == onnx_speed.markdown(load("onnx_speed.json")).strip("\n")
    assert _block(text, "conv-grads") == conv_grads.markdown(load("conv_grads.json")).strip("\n")
    assert _block(text, "solve-breakdown") == solve_breakdown.markdown(load("solve_breakdown.json")).strip("\n")
