"""The paper's Baseline network (sec. 3.1, Fig. 2).

HRNetV2 up to stage 3, the transition to 4 branches, then the 4-branch module repeated
``baseline.num_modules`` times in series, each repetition a residual unit at module level:
``h <- h + M(h)`` per branch. Its modules are built from pre-activation ("BN, ReLU, conv")
BasicBlocks, as Fig. 2 describes, with BatchNorm; the head is HRNetV2's (or the OCR head, ``model.head="ocr"``). Trained like HRNetV2.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from segnode_jax.models.hrnet import (
    HRModule,
    fuse_upsampling,
    hrnet_head_outputs,
    hrnet_stages,
    make_stem,
    outer_norm,
    transition,
    widths_of,
)
from segnode_jax.models.layers import dtype_of


class Baseline(nn.Module):
    """Returns ``(logits, aux)``: float32 logits at the input size, ``aux["features"]``."""

    cfg: Any

    @nn.compact
    def __call__(self, images, train: bool = False):
        cfg = self.cfg
        dtype = dtype_of(cfg.dtype)
        widths = widths_of(cfg)
        norm = outer_norm(cfg)
        b = cfg.baseline
        x = make_stem(cfg, dtype)(images, train)
        xs = hrnet_stages(x, cfg, stage_modules=b.stage_modules, stage_blocks=b.stage_blocks, train=train, dtype=dtype)
        n = len(b.stage_modules) + 1
        xs = transition(xs, widths[:n], widths, prefix=f"transition{n}", norm=norm, train=train, dtype=dtype)
        xs = tuple(xs)
        for r in range(int(b.num_modules)):
            module = HRModule(
                widths,
                int(b.blocks_per_branch),
                norm=norm,
                preact=True,
                align_corners=bool(cfg.align_corners),
                dtype=dtype,
                upsampling=fuse_upsampling(cfg),
                name=f"repeat_{r}",
            )
            delta = module(xs, train)
            xs = tuple(h + d.astype(h.dtype) for h, d in zip(xs, delta))
        return hrnet_head_outputs(cfg, xs, images.shape[1:3], train, dtype)
