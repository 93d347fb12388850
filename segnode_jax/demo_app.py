"""The demo page (``python demo.py --ckpt RUN``): a local web page where a person drops in a
photo and sees the trained model's segmentation, its colour legend and the share of each
class, and, for a model that solves an ODE (SegNode), changes the solve (solver, steps or
tolerance, and the time t the state is solved to) and sees the prediction, NFE and
milliseconds change.

The page is a Gradio app (optional: ``bash scripts/install_demo.sh``); everything it shows
comes from :class:`DemoModel`, which tests and scripts call without a browser. Images go
through :class:`segnode_jax.segment.Segmenter`, the same path as ``predict.py``, so the page's
overlay equals ``predict.py``'s labels blended over the image (:func:`segment.overlay`).
"""

from __future__ import annotations

import collections
import dataclasses
import html
import os
import time
from typing import Any, Sequence

import numpy as np

from segnode_jax import data, ode, scoring, segment
from segnode_jax.data import street
from segnode_jax.errors import UserError
from segnode_jax.models import capabilities

# Uploads above this many pixels are refused (decoding one would take gigabytes); those with a
# longer side than ``max_side`` are shrunk for the model and shown at the shrunk size.
MAX_PIXELS = 50_000_000
DEFAULT_MAX_SIDE = 2048
# Gradio refuses larger uploads itself, with its own message on the page.
MAX_UPLOAD = "60mb"
FIXED_STEP_SOLVERS = tuple(name for name, s in ode.SOLVERS.items() if not s.adaptive)
ADAPTIVE_SOLVERS = tuple(name for name, s in ode.SOLVERS.items() if s.adaptive)
TOLERANCES = ("1e-1", "1e-2", "1e-3", "1e-4")
# Compiled settings kept (each solve setting compiles the model once).
KEEP_SEGMENTERS = 8


class DemoError(UserError):
    """An upload or a setting the demo cannot use; the page shows the message."""


@dataclasses.dataclass
class Result:
    """What the page shows for one image: the overlay (uint8 RGB), the label map, each class's
    share of the pixels, the solve that made it (None without an ODE), mean NFE, milliseconds
    (``compiled``: they include compiling the model for this setting or size) and notes."""

    overlay: np.ndarray
    labels: np.ndarray
    shares: dict[str, float]
    solve: str | None
    nfe: float | None
    milliseconds: float
    compiled: bool
    notes: list[str]

    def summary(self) -> str:
        """One line: solve, NFE and time."""
        parts = [f"{self.labels.shape[1]}x{self.labels.shape[0]} px"]
        if self.solve is not None:
            parts.append(f"solve `{self.solve}`")
        if self.nfe is not None:
            parts.append(f"NFE {self.nfe:g}")
        ms = f"{self.milliseconds:.0f} ms"
        parts.append(ms + (" (includes compiling this setting)" if self.compiled else ""))
        return " · ".join(parts)


class DemoModel:
    """A trained model as the page uses it: an image file and a solve setting in, a :class:`Result` out.

    Arguments:
      ckpt: a training workdir, a checkpoint, or an exported model folder (``pretrained/camvid_small``).
      which: for a workdir, its ``best`` or ``latest`` checkpoint.
      max_side: longer uploads are shrunk to this side for the model.
    """

    def __init__(self, ckpt: str, which: str = "best", *, max_side: int = DEFAULT_MAX_SIDE):
        cfg, variables, _, description = scoring.load_model(ckpt, None, which)
        scoring.refuse_classifier(cfg, "demo.py")
        self.cfg, self.variables, self.description, self.ckpt = cfg, variables, description, ckpt
        self.info = data.get_info(cfg.data)
        self.palette = np.asarray(self.info.palette, np.uint8)
        self.max_side = int(max_side)
        self.solves_ode = capabilities(cfg.model).solves_ode
        self.trained_solve = ode.describe_solve(cfg.model.ode) if self.solves_ode else None
        self.t1 = float(cfg.model.ode.t1) if self.solves_ode else None
        self._segmenters: collections.OrderedDict[tuple, segment.Segmenter] = collections.OrderedDict()

    @property
    def class_names(self) -> Sequence[str]:
        return self.info.class_names

    def solve_spec(self, solver: str, steps: int, tolerance: str) -> str:
        """The ``--solver`` spec of the page's controls: ``rk4:2`` or ``dopri5@1e-2``."""
        if solver in FIXED_STEP_SOLVERS:
            if int(steps) < 1:
                raise DemoError(f"steps must be at least 1, got {steps}")
            return f"{solver}:{int(steps)}"
        if solver in ADAPTIVE_SOLVERS:
            return f"{solver}@{tolerance}"
        raise DemoError(f"unknown solver {solver!r}; use one of {', '.join(ode.SOLVERS)}")

    def _segmenter(self, spec: str | None, t: float | None) -> segment.Segmenter:
        key = (spec, t)
        if key in self._segmenters:
            self._segmenters.move_to_end(key)
            return self._segmenters[key]
        cfg = segment.with_solver(self.cfg, spec)
        if t is not None and self.t1 is not None and t != self.t1:
            if not 0.0 < t <= self.t1:
                raise DemoError(f"the solve time t must be in (0, {self.t1:g}], got {t:g}")
            cfg = cfg.copy_and_resolve_references()
            with cfg.unlocked():
                cfg.model.ode.t1 = float(t)
        # The run's own inference mode (whole / slide / multiscale), as predict.py uses it.
        seg = segment.Segmenter(self.variables, cfg)
        self._segmenters[key] = seg
        while len(self._segmenters) > KEEP_SEGMENTERS:
            self._segmenters.popitem(last=False)
        return seg

    def read(self, path: str) -> tuple[np.ndarray, list[str]]:
        """An upload as uint8 RGB, shrunk to ``max_side`` where longer, and notes on what was done.

        Raises:
          DemoError: not an image, or one too large to decode.
        """
        size = segment.image_size(path)
        if size is not None and size[0] * size[1] > MAX_PIXELS:
            raise DemoError(
                f"the image is {size[1]}x{size[0]} ({size[0] * size[1] / 1e6:.0f} megapixels); "
                f"the demo takes up to {MAX_PIXELS / 1e6:.0f}: shrink it first"
            )
        try:
            image = segment.read_image(path)
        except segment.UnreadableImage as e:
            raise DemoError(str(e).replace(path, os.path.basename(path))) from None
        notes = []
        h, w = image.shape[:2]
        if max(h, w) > self.max_side:
            from PIL import Image

            scale = self.max_side / max(h, w)
            new = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = np.asarray(Image.fromarray(image).resize(new, Image.Resampling.BILINEAR))
            notes.append(f"shrunk from {w}x{h} to {new[0]}x{new[1]} (--max_side {self.max_side})")
        return image, notes

    def run(self, path: str, spec: str | None = None, t: float | None = None) -> Result:
        """Segments the image file at ``path`` with SegNode's solve ``spec`` (default: the trained
        one) solved to time ``t`` (default: the trained ``t1``).

        Raises:
          DemoError: a bad upload or setting.
          segnode_jax.ODESolveError: the solve failed (too few steps for an adaptive solver).
        """
        if not self.solves_ode and (spec is not None or t is not None):
            raise DemoError(f"this model ({self.cfg.model.name}) does not solve an ODE: no solve to change")
        image, notes = self.read(path)
        try:
            seg = self._segmenter(spec, t)
        except segment.PredictError as e:
            raise DemoError(str(e)) from None
        start = time.perf_counter()
        (pred,) = seg.segment([image])
        ms = 1000 * (time.perf_counter() - start)
        color = data.colorize(pred.labels, self.palette)
        counts = np.bincount(pred.labels.ravel(), minlength=len(self.class_names))[: len(self.class_names)]
        shares = {name: float(c) / pred.labels.size for name, c in zip(self.class_names, counts)}
        solve = None
        if self.solves_ode:
            solve = ode.describe_solve(seg.cfg.model.ode) + f", t = {float(seg.cfg.model.ode.t1):g}"
        return Result(segment.overlay(image, color), pred.labels, shares, solve, pred.nfe, ms, pred.compiled, notes)

    def legend_html(self, shares: dict[str, float] | None = None) -> str:
        """The colour legend as an HTML table: swatch, class, share of the pixels (largest first)."""
        names = list(self.class_names)
        order = sorted(range(len(names)), key=lambda i: -(shares or {}).get(names[i], 0.0))
        rows = []
        cell = 'style="padding:1px 8px"'
        for i in order:
            r, g, b = (int(v) for v in self.palette[i])
            share = "" if shares is None else f"{100 * shares.get(names[i], 0.0):.1f}%"
            rows.append(
                f'<tr class="legend-row" data-class="{html.escape(names[i])}">'
                f'<td {cell}><span style="display:inline-block;width:1em;height:1em;background:rgb({r},{g},{b});'
                f'border:1px solid #888"></span></td><td {cell}>{html.escape(names[i])}</td>'
                f'<td class="share" {cell[:-1]};text-align:right">{share}</td></tr>'
            )
        head = f"<tr><th {cell}></th><th {cell}>class</th><th {cell}>share</th></tr>"
        return f'<table class="segnode-legend">{head}{"".join(rows)}</table>'


def handle(model: DemoModel, path: str | None, solver: str | None, steps: int, tolerance: str, t: float | None):
    """The page's one event: ``(overlay or None, legend HTML, status markdown)``. Every failure
    becomes a message on the page; the server keeps serving."""
    if not path:
        return None, model.legend_html(), "Drop an image above, or pick an example."
    try:
        spec = model.solve_spec(solver, steps, tolerance) if model.solves_ode and solver else None
        if spec == model.trained_solve:
            spec = None
        result = model.run(path, spec, t if model.solves_ode else None)
    except (UserError, ode.ODESolveError) as e:
        return None, model.legend_html(), f"**error:** {html.escape(str(e))}"
    except Exception as e:  # noqa: BLE001 - the page reports anything else too, and stays up
        return None, model.legend_html(), f"**error:** unexpected {type(e).__name__}: {html.escape(str(e))}"
    status = result.summary()
    if result.notes:
        status += "  \n" + "; ".join(result.notes)
    return result.overlay, model.legend_html(result.shares), status


def example_images(specs: Sequence[str] | None, folder: str, size: tuple[int, int], count: int = 3) -> list[str]:
    """The page's example images: the files named by ``specs`` (files, folders, globs; the first
    ``count``), or else ``count`` synthetic street scenes written to ``folder``."""
    if specs:
        found = segment.find_inputs(specs)
        return [item.path for item in found[:count]]
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        image, _ = street.render(seed=7, split="test", index=i, size=size)
        path = os.path.join(folder, f"street_scene_{i}.png")
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def build_page(model: DemoModel, examples: Sequence[str]) -> Any:
    """The Gradio page (``gradio.Blocks``) around ``model``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr  # optional and slow to import: only the demo needs it

    solvers = list(ode.SOLVERS)
    ode_cfg = model.cfg.model.ode if model.solves_ode else None
    with gr.Blocks(title="segnode-jax demo", analytics_enabled=False) as page:
        gr.Markdown(
            f"## segnode-jax — {html.escape(model.cfg.model.name)} on {html.escape(model.cfg.data.name)}\n"
            f"Model `{html.escape(model.ckpt)}` ({len(model.class_names)} classes). Drop a photo (any size); "
            "it is segmented on this machine."
        )
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image (drop or pick)", type="filepath", elem_id="upload")
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[upload], label="Examples")
                with gr.Group(visible=model.solves_ode):
                    gr.Markdown(
                        f"**The ODE solve** (trained with `{model.trained_solve}` to t = {model.t1:g}): "
                        "fewer evaluations are faster; the prediction exists at every time t."
                        if model.solves_ode
                        else ""
                    )
                    solver = gr.Dropdown(
                        solvers, value=ode_cfg.solver if ode_cfg else None, label="solver", elem_id="solver"
                    )
                    steps = gr.Slider(
                        1, 8, step=1, value=int(ode_cfg.num_steps or 2) if ode_cfg else 2, label="steps (fixed-step)"
                    )
                    tolerance = gr.Dropdown(list(TOLERANCES), value="1e-2", label="tolerance (adaptive)")
                    t = gr.Slider(
                        0.05,
                        model.t1 or 1.0,
                        step=0.05,
                        value=model.t1 or 1.0,
                        label="solve to time t",
                        elem_id="time",
                    )
                button = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column(scale=2):
                result = gr.Image(
                    label="Segmentation over the image", format="png", interactive=False, elem_id="overlay"
                )
                status = gr.Markdown("Drop an image, or pick an example.", elem_id="status")
                legend = gr.HTML(model.legend_html(), elem_id="legend")
        inputs = [upload, solver, steps, tolerance, t]
        outputs = [result, legend, status]

        def event(*args):
            return handle(model, *args)

        upload.change(event, inputs, outputs)
        button.click(event, inputs, outputs)
        # Sliders act when let go, dropdowns when changed by the person (not by an example).
        for slider in (steps, t):
            slider.release(event, inputs, outputs)
        for dropdown in (solver, tolerance):
            dropdown.input(event, inputs, outputs)
    return page


def serve(model: DemoModel, examples: Sequence[str], *, host: str, port: int, block: bool = True):
    """Starts the page on ``http://host:port``; with ``block`` it serves until interrupted."""
    page = build_page(model, examples)
    page.queue(default_concurrency_limit=1)
    page.launch(
        server_name=host,
        server_port=port,
        show_error=True,
        max_file_size=MAX_UPLOAD,
        ssr_mode=False,
        prevent_thread_lock=not block,
        allowed_paths=[os.path.dirname(os.path.abspath(p)) for p in examples],
        footer_links=[],
    )
    return page
