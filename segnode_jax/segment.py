"""Segmenting your own images: what ``predict.py`` does, and :func:`predict` (``segnode_jax.predict``).

    labels = segnode_jax.predict(variables, image, cfg)              # (H, W) int32 train ids
    labels, probs = segnode_jax.predict(variables, [a, b], cfg, probabilities=True)

Images are uint8 RGB at any size. They are normalised and (where the dataset evaluates at a
fixed size, LIP) resized as in evaluation, run with the run's ``eval`` settings (``whole``,
``slide`` or ``multiscale``; same-size images share a batch in ``whole`` mode) and the labels
come back at each image's own size. SegNode's solve can be swapped for a faster one at
inference time (``solver="rk4:1"``, the format of ``evaluate.py --trajectory``'s
recommendation).
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import os
import sys
import time
from typing import Any, Iterator, Sequence

import numpy as np

from segnode_jax import data, evaluation, ode
from segnode_jax.data.transforms import normalize
from segnode_jax.errors import RunError, UserError
from segnode_jax.evaluation import report
from segnode_jax.evaluation.inference import canvas_groups, infer, pad_value, padded_batch, softmax_np
from segnode_jax.models import capabilities, ode_model_names
from segnode_jax.ode import SOLVERS
from segnode_jax.resize import resize_bilinear_np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")
FORMATS = ("train_ids", "dataset")
SUMMARY_NAME = "predictions.json"
# Output sub-folders: label PNGs, colour PNGs (class palette), overlays on the input.
LABELS_DIR, COLOR_DIR, OVERLAY_DIR = "labels", "color", "overlay"


class PredictError(UserError):
    """Bad input to prediction (no images, an output that would be overwritten, a bad
    ``--solver``); the message names the fix."""


class UnreadableImage(UserError):
    """One input is not an image that can be read; prediction skips it."""


class SkippedInputs(RunError):
    """Prediction finished but some inputs could not be read (listed in the summary)."""


# ---------------------------------------------------------------------------------------
# Inputs


@dataclasses.dataclass(frozen=True)
class InputImage:
    """An input file and the name its outputs get (its path relative to the folder or glob
    it was found through, without extension)."""

    path: str
    name: str


def _stem(path: str) -> str:
    return os.path.splitext(path)[0]


def _is_image_name(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def find_inputs(specs: Sequence[str]) -> list[InputImage]:
    """The files named by ``specs``: image files (any file named explicitly is tried), folders
    (their image files, recursively) and globs (``"photos/**/*.jpg"``).

    Raises:
      PredictError: a spec matches nothing, no image at all, or two inputs would write the
        same output name.
    """
    found: list[InputImage] = []
    for spec in specs:
        if os.path.isdir(spec):
            matches = []
            for root, dirs, files in os.walk(spec):
                dirs.sort()
                matches += [os.path.join(root, f) for f in sorted(files) if _is_image_name(f)]
            if not matches:
                raise PredictError(f"--input {spec}: the folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            found += [InputImage(p, _stem(os.path.relpath(p, spec))) for p in matches]
        elif os.path.isfile(spec):
            found.append(InputImage(spec, _stem(os.path.basename(spec))))
        elif glob.has_magic(spec):
            matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not matches:
                raise PredictError(f"--input {spec}: the pattern matches no file")
            parts = spec.replace(os.sep, "/").split("/")
            fixed = []
            for part in parts:
                if glob.has_magic(part):
                    break
                fixed.append(part)
            base = "/".join(fixed) or "."
            found += [InputImage(p, _stem(os.path.relpath(p, base))) for p in matches]
        else:
            raise PredictError(f"--input {spec}: no such file or folder")
    by_name: dict[str, str] = {}
    for item in found:
        other = by_name.setdefault(item.name, item.path)
        if other != item.path:
            raise PredictError(
                f"{other} and {item.path} would both be written as '{item.name}'; "
                "predict them into separate --output folders (or rename one)"
            )
    unique = list(dict.fromkeys(found))
    return unique


def read_image(path: str) -> np.ndarray:
    """An image file as uint8 RGB ``(H, W, 3)`` (EXIF orientation applied; grey, palette,
    alpha and 16-bit images converted).

    Raises:
      UnreadableImage: not an image (or a damaged one).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(img, np.float64)
                top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
                arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=-1)
            return np.asarray(img.convert("RGB"), np.uint8)
    except UnidentifiedImageError:
        raise UnreadableImage(f"{path}: not an image file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"{path}: cannot be read as an image ({e})") from None


def image_size(path: str) -> tuple[int, int] | None:
    """``(height, width)`` as :func:`read_image` returns it, from the file header (nothing
    decoded); None if the file cannot be opened."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
            # EXIF orientations 5-8 turn the picture by 90 degrees.
            return (w, h) if img.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (h, w)
    except Exception:  # noqa: BLE001 - any failure: read_image reports it with its reason
        return None


# ---------------------------------------------------------------------------------------
# The model as a function of images


def with_solver(cfg, spec: str | None):
    """A copy of ``cfg`` whose SegNode solve is ``spec`` (``"rk4:1"``, ``"dopri5@1e-2"``,
    ``"dopri5"``); ``cfg`` itself when ``spec`` is None.

    Raises:
      PredictError: a bad spec, or a model without an ODE.
    """
    if spec is None:
        return cfg

    if not capabilities(cfg.model).solves_ode:
        raise PredictError(
            f"--solver only applies to models that solve an ODE ({', '.join(ode_model_names())}); "
            f"this run's model is {cfg.model.name}"
        )
    try:
        over = ode.solver_spec_overrides(spec, cfg.model.ode)
    except ode.SolverSpecError:
        raise PredictError(
            f"--solver {spec!r} is not 'solver:steps' (e.g. rk4:1, euler:3) or 'solver@tol' (e.g. dopri5@1e-2)"
        ) from None

    if over["solver"] not in SOLVERS:
        raise PredictError(f"--solver {spec!r}: unknown solver {over['solver']!r}; use one of {', '.join(SOLVERS)}")
    out = copy.deepcopy(cfg)
    with out.unlocked():
        for k, v in over.items():
            out.model.ode[k] = v
    return out


@dataclasses.dataclass
class Prediction:
    """One image's result: train-id labels ``(H, W)`` int32 at the image's size, class
    probabilities ``(H, W, C)`` (when asked), seconds (its share of its batch) and the
    solver's mean NFE over its forward solves (None for models without ODE); ``compiled``:
    its time includes compiling the model for a new input shape."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    seconds: float
    nfe: float | None
    compiled: bool = False


class Segmenter:
    """A trained model on this host's devices as ``uint8 images -> label maps``.

    Arguments:
      variables: ``{"params", "batch_stats"}``.
      cfg: the run config (``model``, ``data`` for normalisation and classes, ``eval`` for the
        inference mode, window, scales).
      mode: ``whole`` | ``slide`` | ``multiscale`` | ``hrnet`` (default ``cfg.eval.mode``).
      batch_size: images (whole) or windows (slide) per forward pass (default ``cfg.eval.batch_size``).
    """

    def __init__(self, variables, cfg, *, mode: str | None = None, batch_size: int | None = None):

        self.cfg = cfg
        self.settings = evaluation.EvalSettings.from_config(cfg, mode=mode, batch_size=batch_size)
        self.info = data.get_info(cfg.data)
        self.mean = np.asarray(cfg.data.mean, np.float32)
        self.std = np.asarray(cfg.data.std, np.float32)
        self.eval_size = self.info.eval_size
        self.predictor = evaluation.Predictor.for_model(
            variables, cfg.model, batch_size=self.settings.batch_size, per_image_solve=self.settings.per_image_solve
        )

    @property
    def batch_size(self) -> int:
        return self.predictor.batch_size

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB -> the normalised float32 image the model sees (resized to the dataset's
        evaluation size where it has one)."""
        from PIL import Image

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise PredictError(f"an image must be (H, W, 3) RGB, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise PredictError(f"images must be uint8 RGB (0..255), got {image.dtype}")
        if self.eval_size and image.shape[:2] != self.eval_size:
            height, width = self.eval_size
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
        return normalize(image, mean=self.mean, std=self.std)

    def _finish(self, scores: np.ndarray, size: tuple[int, int], probabilities: bool, *, are_probs: bool):

        if scores.shape[:2] != tuple(size):
            scores = resize_bilinear_np(scores, size)
        labels = np.argmax(scores, axis=-1).astype(np.int32)
        probs = None
        if probabilities:
            probs = (scores if are_probs else softmax_np(scores)).astype(np.float32)
        return labels, probs

    def _nfe(self, mark: int) -> float | None:
        if not self.predictor.is_ode:
            return None
        nfe = self.predictor.nfe_since(mark)
        return float(nfe.mean()) if nfe.size else None

    def segment(self, images: Sequence[np.ndarray], *, probabilities: bool = False) -> list[Prediction]:
        """Segments images given in one call (``whole`` mode: consecutive images of one size
        share a forward pass)."""

        s = self.settings
        fill = pad_value(self.cfg.data)
        inputs = [self.model_input(im) for im in images]
        sizes = [tuple(np.asarray(im).shape[:2]) for im in images]
        out: list[Prediction | None] = [None] * len(inputs)
        with ode.solver_errors(self.cfg.model.get("ode")):
            if s.mode == "whole":
                # Images of one canvas share a forward pass (sorted by size so that they meet).
                order = sorted(range(len(inputs)), key=lambda i: inputs[i].shape[:2])
                for group in canvas_groups(order, lambda i: inputs[i].shape, self.batch_size, s.pad_multiple):
                    batch = padded_batch([inputs[i] for i in group], s.pad_multiple, fill)
                    mark, shapes, t = self.predictor.nfe_mark(), self.predictor.num_shapes, time.perf_counter()
                    logits = np.asarray(self.predictor.device_call(batch))
                    seconds = (time.perf_counter() - t) / len(group)
                    compiled = self.predictor.num_shapes > shapes
                    nfe = self.predictor.nfe_since(mark) if self.predictor.is_ode else None
                    for k, i in enumerate(group):
                        h, w = inputs[i].shape[:2]
                        labels, probs = self._finish(logits[k, :h, :w], sizes[i], probabilities, are_probs=False)
                        out[i] = Prediction(labels, probs, seconds, None if nfe is None else float(nfe[k]), compiled)
            else:
                for i, x in enumerate(inputs):
                    mark, shapes, t = self.predictor.nfe_mark(), self.predictor.num_shapes, time.perf_counter()
                    scores, are_probs = infer(self.predictor, x, s, fill=fill, flip_pairs=self.info.flip_pairs)
                    seconds = time.perf_counter() - t
                    labels, probs = self._finish(scores, sizes[i], probabilities, are_probs=are_probs)
                    out[i] = Prediction(labels, probs, seconds, self._nfe(mark), self.predictor.num_shapes > shapes)
        return out  # type: ignore[return-value]


def predict(
    variables,
    images,
    cfg,
    *,
    probabilities: bool = False,
    mode: str | None = None,
    solver: str | None = None,
    batch_size: int | None = None,
):
    """Segments images with a trained model (``segnode_jax.predict``).

    Arguments:
      variables: ``{"params", "batch_stats"}`` (e.g. ``checkpoints.load_variables(workdir)``).
      images: one uint8 RGB image ``(H, W, 3)``, a list of them (any sizes), or ``(N, H, W, 3)``.
      cfg: the run config (``segnode_jax.config.load_run_config(workdir)`` or a configs/ file).
      probabilities: also return the class probabilities.
      mode: ``whole`` | ``slide`` | ``multiscale`` | ``hrnet`` (default ``cfg.eval.mode``).
      solver: SegNode's solve for this call, e.g. ``"rk4:1"`` (default: the config's).
      batch_size: images or windows per forward pass.

    Returns:
      Train-id label maps (int32, each at its image's size), shaped like ``images``: ``(H, W)``,
      a list, or ``(N, H, W)``; with ``probabilities=True`` a pair ``(labels, probabilities)``
      (float32, ``(..., C)``).

    Raises:
      PredictError: bad images or settings.
      segnode_jax.ODESolveError: an ODE solve failed.
    """
    single = isinstance(images, np.ndarray) and images.ndim == 3
    stacked = isinstance(images, np.ndarray) and images.ndim == 4
    batch = [images] if single else list(images)
    results = Segmenter(variables, with_solver(cfg, solver), mode=mode, batch_size=batch_size).segment(
        batch, probabilities=probabilities
    )
    labels = [r.labels for r in results]
    probs = [r.probabilities for r in results]
    if single:
        return (labels[0], probs[0]) if probabilities else labels[0]
    if stacked:
        labels_out = np.stack(labels)
        return (labels_out, np.stack([p for p in probs if p is not None])) if probabilities else labels_out
    return (labels, probs) if probabilities else labels


# ---------------------------------------------------------------------------------------
# predict.py: folders of files in, label / colour / overlay images and a summary out


def check_output(out_dir: str, overwrite: bool) -> None:
    """Refuses to write into a folder that already holds files, unless ``overwrite``."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise PredictError(f"--output {out_dir} is a file; choose a folder")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise PredictError(
            f"--output {out_dir} already holds files; pass --overwrite to replace the predictions in it, "
            "or choose another folder"
        )


def _save_atomic(array: np.ndarray, path: str, **kwargs) -> None:
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    base, ext = os.path.splitext(path)
    tmp = f"{base}.partial{ext}"
    Image.fromarray(array).save(tmp, **kwargs)
    os.replace(tmp, path)


def overlay(image: np.ndarray, color: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The colour labels blended over the input (uint8)."""
    return (image.astype(np.float32) * (1 - alpha) + color.astype(np.float32) * alpha + 0.5).astype(np.uint8)


def write_outputs(
    out_dir: str, name: str, image: np.ndarray, labels: np.ndarray, info, *, fmt: str = "train_ids", dcfg=None
) -> dict[str, str]:
    """``labels/<name>.png`` (train ids, or with ``fmt="dataset"`` the dataset's own ids),
    ``color/<name>.png`` and ``overlay/<name>.jpg``; returns their paths."""

    if fmt == "dataset":
        if dcfg is None:
            raise ValueError("fmt='dataset' needs the dataset's config (dcfg) for its ids")
        ids = data.train_ids_to_dataset_ids(dcfg, labels)
    else:
        ids = labels.astype(np.uint8)
    color = data.colorize(labels, info.palette)
    paths = {
        "labels": os.path.join(out_dir, LABELS_DIR, name + ".png"),
        "color": os.path.join(out_dir, COLOR_DIR, name + ".png"),
        "overlay": os.path.join(out_dir, OVERLAY_DIR, name + ".jpg"),
    }
    _save_atomic(ids, paths["labels"])
    _save_atomic(color, paths["color"])
    _save_atomic(overlay(image, color), paths["overlay"], quality=90)
    return paths


def _batches(items: list[InputImage], segmenter: Segmenter) -> Iterator[list[InputImage]]:
    """Inputs in batches of one size (whole mode; sorted by size from the file headers, so
    that each size compiles once) or one at a time (slide / multiscale)."""
    if segmenter.settings.mode != "whole":
        for item in items:
            yield [item]
        return
    keyed = sorted(items, key=lambda it: image_size(it.path) or (0, 0))
    group: list[InputImage] = []
    size = None
    for item in keyed:
        s = image_size(item.path)
        if group and (s != size or len(group) == segmenter.batch_size):
            yield group
            group = []
        group.append(item)
        size = s
    if group:
        yield group


def _read_images(group, skipped: list[dict[str, str]]) -> tuple[list[np.ndarray], list]:
    """The images of ``group`` that can be read, and their items; each one that cannot is
    reported on one line and added to ``skipped``."""
    from tqdm import tqdm

    images, readable = [], []
    for item in group:
        try:
            images.append(read_image(item.path))
            readable.append(item)
        except UnreadableImage as e:
            tqdm.write(f"skipped: {e}", file=sys.stderr)
            skipped.append({"input": item.path, "reason": str(e)})
    return images, readable


def _record(item, image: np.ndarray, res, paths, names: Sequence[str]) -> dict[str, Any]:
    """One image's entry of ``predictions.json``."""
    counts = np.bincount(res.labels.ravel(), minlength=len(names))
    return {
        "input": item.path,
        "name": item.name,
        "outputs": paths,
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "seconds": round(res.seconds, 4),
        "includes_compilation": res.compiled,
        "nfe": res.nfe,
        "pixels_per_class": {names[int(c)]: int(counts[c]) for c in np.flatnonzero(counts)},
    }


def predict_files(
    variables,
    cfg,
    inputs: Sequence[str],
    out_dir: str,
    *,
    mode: str | None = None,
    solver: str | None = None,
    fmt: str = "train_ids",
    overwrite: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``predict.py``: segments the image files named by ``inputs`` into ``out_dir``.

    Writes per image the outputs of :func:`write_outputs` and, at the end, ``predictions.json``
    (per image: input, outputs, size, seconds, NFE, pixels per class; the inputs that could not
    be read and why). An unreadable input is reported on one line and skipped.

    Returns:
      The summary.

    Raises:
      PredictError: no inputs, a bad format/solver, or ``out_dir`` holds files and not ``overwrite``.
      SkippedInputs: after everything else was written, if some inputs could not be read.
      segnode_jax.ODESolveError: an ODE solve failed.
    """
    from tqdm import tqdm

    if fmt not in FORMATS:
        raise PredictError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    items = find_inputs(inputs)
    check_output(out_dir, overwrite)
    cfg = with_solver(cfg, solver)
    segmenter = Segmenter(variables, cfg, mode=mode, batch_size=batch_size)
    names = segmenter.info.class_names
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    start = time.time()
    bar = tqdm(total=len(items), desc=f"predict ({segmenter.settings.mode})", unit="img", disable=not progress)
    for group in _batches(items, segmenter):
        images, readable = _read_images(group, skipped)
        if images:
            for item, image, res in zip(readable, images, segmenter.segment(images)):
                paths = write_outputs(out_dir, item.name, image, res.labels, segmenter.info, fmt=fmt, dcfg=cfg.data)
                records.append(_record(item, image, res, paths, names))
        bar.update(len(group))
    bar.close()
    order = {item.path: k for k, item in enumerate(items)}
    records.sort(key=lambda r: order[r["input"]])
    summary = {
        **(metadata or {}),
        "model": cfg.model.name,
        "dataset": cfg.data.name,
        "mode": segmenter.settings.mode,
        "solver": ode.describe_solve(cfg.model.ode) if capabilities(cfg.model).solves_ode else None,
        "format": fmt,
        "label_values": "train ids (0..%d)" % (len(names) - 1) if fmt == "train_ids" else f"{cfg.data.name} ids",
        "class_names": list(names),
        "num_images": len(records),
        "seconds": round(time.time() - start, 3),
        "images": records,
        "skipped": skipped,
    }
    path = report.write_results(os.path.join(out_dir, SUMMARY_NAME), summary)
    if skipped:
        listed = "; ".join(s["input"] for s in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        raise SkippedInputs(
            f"{len(skipped)} of {len(items)} inputs could not be read and were skipped ({listed}); "
            f"the other {len(records)} predictions are in {out_dir} (the list is in {path})"
        )
    return summary
