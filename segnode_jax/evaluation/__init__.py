"""Evaluation: mIoU, the inference modes, running a model over a split, scoring saved
predictions, and what is written for people.

* ``metrics``: confusion matrices and mIoU (mmsegmentation's rule), on device and on the host;
* ``inference``: whole / sliding-window / multi-scale+flip / HRNet's own test around any predict function;
* ``predictor``: the model as a jitted, batch-sharded prediction function on the local devices;
* ``runner``: :func:`evaluate` a model over a dataset split (several hosts sum their matrices);
* ``saved``: :func:`score_predictions` of a folder of label images;
* ``export``: :class:`ExportWriter`, a split's predictions as a benchmark server wants them;
* ``report``: titled prediction images, ``results.json``, the summary;
* ``trajectory``: SegNode's accuracy along the solve and across solvers (``evaluate.py
  --trajectory``; import ``segnode_jax.evaluation.trajectory``).

The names below are the public API; each lives in the module named above.
"""

from segnode_jax.evaluation.inference import (
    PredictFn,
    flip_back,
    hrnet_inference,
    hrnet_scaled_size,
    multiscale_inference,
    slide_inference,
    sliding_windows,
    softmax_np,
    whole_inference,
)
from segnode_jax.evaluation.metrics import (
    LABEL_CANVAS_MULTIPLE,
    confusion_matrix,
    confusion_matrix_np,
    metrics_from_confusion,
    score_batch,
)
from segnode_jax.evaluation.predictor import Predictor, local_mesh, predict_logits
from segnode_jax.evaluation.report import composite, labelled_panels, summary, write_results
from segnode_jax.evaluation.runner import evaluate, evaluate_predictor
from segnode_jax.evaluation.saved import PredictionError, score_predictions
from segnode_jax.evaluation.server_export import ExportError, ExportWriter
from segnode_jax.evaluation.settings import EvalSettings
from segnode_jax.labels import IGNORE_INDEX
from segnode_jax.resize import resize_bilinear_np

__all__ = [
    "IGNORE_INDEX",
    "LABEL_CANVAS_MULTIPLE",
    "EvalSettings",
    "ExportError",
    "ExportWriter",
    "PredictFn",
    "PredictionError",
    "Predictor",
    "composite",
    "confusion_matrix",
    "confusion_matrix_np",
    "evaluate",
    "evaluate_predictor",
    "flip_back",
    "hrnet_inference",
    "hrnet_scaled_size",
    "labelled_panels",
    "local_mesh",
    "metrics_from_confusion",
    "multiscale_inference",
    "predict_logits",
    "resize_bilinear_np",
    "score_batch",
    "score_predictions",
    "slide_inference",
    "sliding_windows",
    "softmax_np",
    "summary",
    "whole_inference",
    "write_results",
]
