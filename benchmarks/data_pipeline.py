"""Throughput of the training input pipeline at Cityscapes scale (not a test).

Builds a synthetic dataset of 1024x2048 images (Cityscapes' frame size, PNG like Cityscapes'
leftImg8bit) in a temporary data dir, then times the HRNet Cityscapes training pipeline
(decode -> random scale 0.5-2.0 of the 2048 long side -> pad -> 512x1024 crop -> flip ->
normalise -> batch) for several grain worker counts. Prints a table and writes
benchmarks/results/data_pipeline.json and .md.

    python -m benchmarks.data_pipeline [--images 24] [--batch_size 4] [--batches 15] [--workers 0 1 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

if not __package__:  # run by path: the imports below need the repository root, which `python -m` puts on the path
    print(
        "error: run the benchmarks as modules from the repository root: python -m benchmarks.data_pipeline ...",
        file=sys.stderr,
    )
    sys.exit(2)

from segnode_jax import data  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _dcfg(data_dir: str, n: int):
    dcfg = data.data_config("synthetic")
    dcfg.data_dir = data_dir
    dcfg.image_size = (1024, 2048)
    dcfg.num_train, dcfg.num_val, dcfg.num_classes = n, 1, 6
    # The Cityscapes training recipe (data_config("cityscapes")).
    cs = data.data_config("cityscapes")
    dcfg.crop_size, dcfg.base_size = tuple(cs.crop_size), cs.base_size
    dcfg.scale_range, dcfg.scale_step, dcfg.flip = tuple(cs.scale_range), cs.scale_step, cs.flip
    return dcfg


def _time_iterator(dcfg, *, batch_size: int, batches: int, workers: int) -> dict:
    t0 = time.perf_counter()
    it = data.train_iterator(dcfg, batch_size=batch_size, seed=0, shard_index=0, shard_count=1, worker_count=workers)
    first = next(it)
    startup = time.perf_counter() - t0
    assert first["image"].shape == (batch_size, 512, 1024, 3)
    next(it)  # warm-up
    t1 = time.perf_counter()
    for _ in range(batches):
        next(it)
    elapsed = time.perf_counter() - t1
    if workers:
        it.close()
    return {
        "workers": workers,
        "images_per_s": batches * batch_size / elapsed,
        "ms_per_batch": 1000 * elapsed / batches,
        "startup_s": startup,
    }


def _decode_rate(dcfg, n: int = 8) -> float:
    from PIL import Image

    builder = data.ensure_prepared(dcfg)
    src = builder.as_data_source(split="train")  # pyright: ignore[reportCallIssue]  # signature hidden by tfds_logging
    recs = [src[i] for i in range(min(n, len(src)))]
    t = time.perf_counter()
    for r in recs:
        np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB"))
    return len(recs) / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--batches", type=int, default=15)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--keep", help="data dir to keep the generated dataset in (default: temporary)")
    args = p.parse_args()

    data_dir = args.keep or tempfile.mkdtemp(prefix="segnode_bench_")
    try:
        dcfg = _dcfg(data_dir, args.images)
        t = time.perf_counter()
        builder = data.ensure_prepared(dcfg)
        prep = time.perf_counter() - t
        src = builder.as_data_source(split="train")  # pyright: ignore[reportCallIssue]  # signature hidden by tfds_logging
        mean_png_mb = float(np.mean([len(src[i]["image"]) for i in range(len(src))]) / 2**20)
        decode = _decode_rate(dcfg)
        rows = [_time_iterator(dcfg, batch_size=args.batch_size, batches=args.batches, workers=w) for w in args.workers]
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    result = {
        "what": "training pipeline images/s: 1024x2048 PNG -> HRNet Cityscapes augmentation -> 512x1024 crops",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "images": args.images,
        "batch_size": args.batch_size,
        "timed_batches": args.batches,
        "mean_png_mb": round(mean_png_mb, 2),
        "png_decode_images_per_s": round(decode, 2),
        "prepare_s": round(prep, 1),
        "runs": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows],
    }
    lines = [
        "# Data pipeline throughput",
        "",
        f"{result['what']}; {result['machine']['cpus']} CPU cores, Python {result['machine']['python']}.",
        f"Synthetic 1024x2048 PNGs (mean {result['mean_png_mb']} MiB; noisier than Cityscapes' ~2 MiB), "
        f"batch {args.batch_size}, {args.batches} timed batches after one warm-up batch.",
        f"PNG decode alone: {result['png_decode_images_per_s']} images/s (one thread).",
        "",
        "| grain workers | images/s | ms/batch | start-up (s) |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['workers']} | {r['images_per_s']:.2f} | {r['ms_per_batch']:.0f} | {r['startup_s']:.1f} |" for r in rows
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "data_pipeline.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(os.path.join(RESULTS, "data_pipeline.md"), "w") as f:
        f.write(table)


if __name__ == "__main__":
    main()
