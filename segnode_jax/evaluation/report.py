"""What evaluation writes for people: titled input | ground truth | prediction images with a
class legend, ``results.json``, and the one-paragraph summary."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from segnode_jax import data


def labelled_panels(
    raw_image: np.ndarray,
    label: np.ndarray,
    preds: Sequence[np.ndarray],
    titles: Sequence[str],
    palette: np.ndarray,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """``input | ground truth | prediction(s)`` side by side at the label's resolution, each
    panel titled, with a colour legend of the classes that appear (uint8 RGB).

    Arguments:
      raw_image: the input image (resized to the label's size if needed).
      label: ground-truth train ids (255 = ignore, drawn black).
      preds: one or more predicted train-id maps of the label's size.
      titles: one title per prediction (the input and ground truth are titled for you).
      palette: ``(num_classes, 3)`` colours.
      class_names: names for the legend (None: no legend).
    """
    from PIL import Image, ImageDraw, ImageFont

    h, w = label.shape
    img = np.asarray(raw_image, np.uint8)
    if img.shape[:2] != (h, w):
        img = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))
    tiles = [img, data.colorize(label, palette)] + [data.colorize(p, palette) for p in preds]
    names = ["input", "ground truth", *titles]
    # Small images are shown enlarged so that titles and thin structures are readable.
    zoom = max(1, int(np.ceil(192 / max(h, 1))))
    tiles = [np.kron(t, np.ones((zoom, zoom, 1), np.uint8)) if zoom > 1 else t for t in tiles]
    th, tw = tiles[0].shape[:2]
    font = ImageFont.load_default(size=14)
    gap, head = 6, 22
    canvas = Image.new("RGB", (len(tiles) * tw + (len(tiles) - 1) * gap, th + head), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (tile, name) in enumerate(zip(tiles, names)):
        x = i * (tw + gap)
        canvas.paste(Image.fromarray(tile), (x, head))
        draw.text((x + 2, 3), name, fill="black", font=font)
    if class_names is not None:
        present = sorted({int(v) for t in (label, *preds) for v in np.unique(t) if int(v) < len(class_names)})
        legend = Image.new("RGB", (canvas.width, 22 * ((len(present) + 5) // 6) + 4), "white")
        ld = ImageDraw.Draw(legend)
        cell = max(canvas.width // 6, 90)
        for k, c in enumerate(present):
            x, y = (k % 6) * cell + 2, (k // 6) * 22 + 3
            ld.rectangle((x, y, x + 14, y + 14), fill=tuple(int(v) for v in palette[c]), outline="black")
            ld.text((x + 18, y), class_names[c], fill="black", font=font)
        full = Image.new("RGB", (canvas.width, canvas.height + legend.height), "white")
        full.paste(canvas, (0, 0))
        full.paste(legend, (0, canvas.height))
        canvas = full
    return np.asarray(canvas)


def composite(
    raw_image: np.ndarray,
    label: np.ndarray,
    pred: np.ndarray,
    palette: np.ndarray,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """``input | ground truth | prediction``, titled, with a class legend (uint8)."""
    return labelled_panels(raw_image, label, [pred], ["prediction"], palette, class_names)


def _write_visualization(out_dir: str, name: str, picture: np.ndarray) -> str:
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name.replace("/", "__") + ".png")
    Image.fromarray(picture).save(path)
    return path


def write_results(path: str, results: Mapping[str, Any]) -> str:
    """Writes ``results`` as indented JSON (atomically; process 0 of a multi-host run) and
    returns the path."""
    if jax.process_index() != 0:
        return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def summary(results: Mapping[str, Any]) -> str:
    """A few human-readable lines: mIoU, pixel accuracy, per-class IoU (a classifier: top-1 and
    top-5 accuracy, loss)."""
    if results.get("task") == "classification":
        lines = [
            f"top-1 {100 * results['top1']:.2f}  top-5 {100 * results['top5']:.2f}  loss {results['loss']:.4f}  "
            f"({results.get('num_images', '?')} images, {results.get('split', '?')})"
        ]
        if "mean_nfe" in results:
            lines.append(f"solver: mean NFE {results['mean_nfe']:.1f} per forward solve")
        return "\n".join(lines)
    lines = [
        f"mIoU {100 * results['miou']:.2f}  pixel accuracy {100 * results['pixel_accuracy']:.2f}  "
        f"({results.get('num_images', '?')} images, {results.get('split', '?')}, {results.get('mode', 'saved predictions')})"
    ]
    if "mean_nfe" in results:
        lines.append(f"solver: mean NFE {results['mean_nfe']:.1f} per forward solve")
    per = results.get("per_class_iou", {})
    width = max((len(n) for n in per), default=0)
    for name, v in per.items():
        lines.append(f"  {name:<{width}}  {'-' if v is None else f'{100 * v:.2f}'}")
    return "\n".join(lines)
