"""Resolved evaluation settings (:class:`EvalSettings`, from ``cfg.eval`` and ``cfg.data``) and
the sum over hosts: what the segmentation runner and the classification evaluation share."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from segnode_jax.config import EVAL_MODES
from segnode_jax.errors import ConfigError
from segnode_jax.evaluation.inference import HRNET_RULES
from segnode_jax.evaluation.metrics import MIOU_OVER


def _pair(values) -> tuple[int, int]:
    """``(height, width)`` from a config's 2-sequence."""
    h, w = (int(v) for v in values)
    return h, w


@dataclasses.dataclass
class EvalSettings:
    """Resolved evaluation settings (from ``cfg.eval`` and ``cfg.data``)."""

    mode: str = "whole"
    split: str = "val"
    batch_size: int | None = None
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    multiscale_base: str = "slide"
    pad_multiple: int = 1
    per_image_solve: bool = True
    num_images: int | None = None
    num_visualizations: int = 0
    # mode="hrnet": HRNet's test (segnode_jax.evaluation.inference.hrnet_inference).
    hrnet_rule: str = "base"
    base_size: int | None = None
    # "present": mIoU over the classes present in labels or predictions (mmsegmentation);
    # "all": over every class, an absent one counting 0 (HRNet's reported numbers).
    miou_over: str = "present"

    @classmethod
    def from_config(cls, cfg, **overrides) -> "EvalSettings":
        """From ``cfg.eval`` with ``cfg.data`` defaults; keyword overrides win when not None."""

        e, d = cfg.eval, cfg.data
        out = cls(
            mode=e.mode,
            split=e.get("split") or d.eval_split,
            batch_size=e.get("batch_size"),
            crop=_pair(e.get("crop_size") or d.crop_size),
            stride=_pair(e.stride) if e.get("stride") else None,
            scales=tuple(float(s) for s in (e.get("scales") or d.eval_scales)),
            flip=bool(d.eval_flip if e.get("flip") is None else e.flip),
            multiscale_base=e.get("multiscale_base", "slide"),
            pad_multiple=int(e.get("pad_multiple", 1) or 1),
            per_image_solve=bool(e.get("per_image_solve", True)),
            num_images=e.get("num_images"),
            num_visualizations=int(e.get("num_visualizations", 0)),
            hrnet_rule=str(d.get("hrnet_test_rule", "base")),
            base_size=int(d.base_size) if d.get("base_size") else None,
            miou_over=str(e.get("miou_over", "present")),
        )
        for k, v in overrides.items():
            if v is not None:
                setattr(out, k, v)
        # mode=hrnet (from the config or from --mode): HRNet's TEST.IMAGE_SIZE windows.
        if out.mode == "hrnet" and not e.get("crop_size") and overrides.get("crop") is None and d.get("test_crop_size"):
            out.crop = _pair(d.test_crop_size)
        if out.mode not in EVAL_MODES:
            raise ConfigError(f"invalid eval.mode={out.mode!r}; use one of {', '.join(EVAL_MODES)}")
        if out.multiscale_base not in ("whole", "slide"):
            raise ConfigError(f"invalid eval.multiscale_base={out.multiscale_base!r}; use 'whole' or 'slide'")
        if out.miou_over not in MIOU_OVER:
            raise ConfigError(f"invalid eval.miou_over={out.miou_over!r}; use one of {', '.join(MIOU_OVER)}")
        if out.hrnet_rule not in HRNET_RULES:
            raise ConfigError(f"invalid data.hrnet_test_rule={out.hrnet_rule!r}; use one of {', '.join(HRNET_RULES)}")
        return out


def sum_over_hosts(x: np.ndarray) -> np.ndarray:
    """``x`` summed over the hosts of a multi-host run (``x`` itself on one host)."""
    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x)).sum(axis=0)
