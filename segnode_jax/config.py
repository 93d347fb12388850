"""Configuration: the defaults every config file starts from, and loading config files.

Every file in ``configs/`` exposes ``get_config()`` returning an ``ml_collections.ConfigDict``
built on :func:`base_config`. The model section (``cfg.model``) holds everything a network
needs (architecture, normalisation, the ODE solver); ``segnode_jax.init/apply/count_params``
take it directly.

Paper readings (see ``docs/reproduction.md``): HRNetV2-W48 is the official network; the
Baseline repeats the 4-branch module ``baseline.num_modules=6`` times with
``baseline.blocks_per_branch=2`` BasicBlocks per branch; SegNode's vector field is
``segnode.modules_per_field=2`` modules with ``segnode.blocks_per_branch=2``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
from typing import Any

from ml_collections import config_dict

from segnode_jax.errors import ConfigError, UserError

placeholder = config_dict.placeholder

# Model names come from segnode_jax.models.model_names(), solvers and adjoints from
# segnode_jax.ode.SOLVERS / ADJOINTS (the registries).


def snapshot(cfg) -> config_dict.FrozenConfigDict:
    """An immutable, hashable copy of ``cfg`` as it is *now*.

    ``FrozenConfigDict(cfg)`` alone is not a snapshot: it keeps a reference to the mutable
    config and hashes and compares by it, so a later ``cfg.x = y`` silently changes a frozen
    copy made earlier (and a cache keyed by it returns stale compiled functions). The values
    are copied here (field references resolved), so equal snapshots mean equal settings.
    """
    if isinstance(cfg, config_dict.FrozenConfigDict):
        cfg = cfg.as_configdict()
    if isinstance(cfg, config_dict.ConfigDict):
        cfg = cfg.to_dict()
    return config_dict.FrozenConfigDict(copy.deepcopy(cfg))


def apply_overrides(cfg: config_dict.ConfigDict, overrides) -> config_dict.ConfigDict:
    """Sets dotted fields in place, like ``--config.a.b=value`` does: ``{"model.width": 8}``.

    A value of another type than the field's default is accepted (``ignore_type``), so that
    e.g. an optional field can be set to None. Returns ``cfg``.

    Raises:
      KeyError: a path that is not in the config (the message names it).
    """
    for key, value in dict(overrides).items():
        node: Any = cfg  # a ConfigDict, whose item types pyright cannot know
        *parents, leaf = key.split(".")
        for part in parents:
            if part not in node:
                raise KeyError(f"the config has no field {key!r} (no {part!r})")
            node = node[part]
        with node.ignore_type():
            node[leaf] = value
    return cfg


def ode_config() -> config_dict.ConfigDict:
    """Settings of SegNode's ODE solve (``cfg.model.ode``)."""
    return config_dict.ConfigDict(
        dict(
            # Integration interval [t0, t1] of the neural ODE.
            t0=0.0,
            t1=1.0,
            # dopri5 (paper: torchdiffeq's default RK) | tsit5 | heun: embedded error estimates,
            # adaptive steps unless `num_steps` is set. euler | rk4: need `num_steps`.
            solver="dopri5",
            rtol=1e-3,
            atol=1e-3,
            # Initial step for adaptive solvers; None lets diffrax pick it (2 extra evaluations).
            dt0=placeholder(float),
            # Step-size floor for adaptive solvers; None = no floor (a collapse then shows up
            # as `max_steps` reached).
            dtmin=placeholder(float),
            # None: adaptive steps. An int: that many equal steps over [t0, t1].
            num_steps=placeholder(int),
            max_steps=128,
            # backsolve: the adjoint method (paper), O(1) memory in the number of steps.
            # recursive_checkpoint: discretise-then-optimise with binomial checkpointing.
            # direct: plain backprop through every step (most memory; for reference).
            # unrolled: fixed steps written out without a loop, plain backprop (exact
            # gradients; memory grows with the evaluations, use remat.field; fastest on CPUs).
            adjoint="backsolve",
            # recursive_checkpoint: solver states kept for the backward pass (None: diffrax's
            # rule, 15 for max_steps=128). Solves of at most that many steps recompute nothing;
            # each state left out saves one copy of the 4-map state and the solver's own.
            checkpoints=placeholder(int),
            # How the adaptive controller measures the scaled error of the tuple state: "rms"
            # (diffrax's: the RMS over all elements, dominated by branch 0) | "max_rms"
            # (torchdiffeq's, the paper's solver library: the largest per-branch RMS, so every
            # branch meets the tolerance). benchmarks/README.md has the measurements and why
            # rms stays the default for now.
            error_norm="rms",
            # Use diffrax's adjoint seminorm (Kidger et al. 2021) on the backward solve:
            # parameter cotangents do not drive step sizes -> fewer backward steps.
            adjoint_seminorm=True,
            # Backsolve: solve the adjoint ODE for the cotangent divided by its RMS and rescale
            # (exact), so that atol does not depend on the loss scale (batch, image size).
            adjoint_normalise=True,
            # Tolerances of the backward (adjoint) solve; None = the forward's rtol/atol.
            # Gradients for SGD need less accuracy than the forward pass (see docs/architecture.md).
            adjoint_rtol=placeholder(float),
            adjoint_atol=placeholder(float),
            # Extra output times inside [t0, t1] for trajectory analysis (paper sec. 4.8).
            # Empty: only the final state. With times, `aux["ode"]` holds `ts` and the
            # logits decoded at each of them, `trajectory_logits`.
            saveat=(),
            # What a failed solve does: "raise" (an ODESolveError naming the field to change) |
            # "nan" (NaN in the state and the result code in aux["ode"]["result"]; the training
            # step and jax.export set it: a callback that raises cannot run there).
            on_failure="raise",
            # Count every vector-field evaluation on the host, forward and backward solves
            # (ode.counting_evaluations); a measuring tool: one host callback per evaluation.
            count_evaluations=False,
        )
    )


def model_config() -> config_dict.ConfigDict:
    """Architecture defaults (``cfg.model``): W48, the paper's readings of Table 2."""
    return config_dict.ConfigDict(
        dict(
            name="segnode",
            num_classes=19,
            # A named network size (MODEL_SIZES below: w48, w32, w18, small, tiny); None = the
            # fields as they are. It sets the widths of stem, layer1 and branches (and SegNode's
            # field depth) together; a field you also set to something other than its W48
            # default keeps your value.
            size=placeholder(str),
            # HRNet width: branch widths are (w, 2w, 4w, 8w); W18 / W32 / W48.
            width=48,
            stem_width=64,
            # layer1: Bottlenecks with `layer1_planes` planes (output 4x planes).
            layer1_blocks=4,
            layer1_planes=64,
            bn_momentum=0.9,  # PyTorch momentum 0.1
            bn_eps=1e-5,
            # Bilinear resizes with half-pixel centres (PyTorch align_corners=False).
            align_corners=False,
            # Compute dtype of convolutions ("float32" | "bfloat16"); parameters stay float32.
            dtype="float32",
            # HRNetV2: modules and BasicBlocks per branch of stages 2, 3, 4 (official W18/32/48).
            hrnet=dict(stage_modules=(1, 4, 3), stage_blocks=(4, 4, 4)),
            # Baseline (paper sec. 3.1): HRNetV2 up to stage 3, then the 4-branch module
            # repeated `num_modules` times as residual units.
            baseline=dict(num_modules=6, blocks_per_branch=2, stage_modules=(1, 4), stage_blocks=(4, 4)),
            # SegNode (paper sec. 3.2): stem -> transition to 4 branches -> ODE block whose
            # vector field is `modules_per_field` 4-branch modules -> 4 classifiers -> sum.
            segnode=dict(modules_per_field=2, blocks_per_branch=2),
            # U-Net (Table 2's comparison; segnode_jax/models/unet.py): channels base_width * 2**i
            # over depth + 1 levels; upsampling "transposed" (31.0M, the paper's) | "bilinear".
            unet=dict(base_width=64, depth=4, upsampling="transposed"),
            # U-Node (Table 1's neural-ODE comparison; segnode_jax/models/unode.py): the authors'
            # ConvODEUNet setting. Its solves use `ode` below (the authors': dopri5, tol 1e-3).
            # norm_input=False: the field convolves its un-normalised state, as the authors' code does.
            unode=dict(num_filters=16, levels=4, time_dependent=True, activation="lrelu", norm_input=True),
            # NODEs-UNet (Table 1's other neural-ODE comparison; models/nodes_unet.py, our reading
            # of its paper): model.unet's U-Net with an ODE block after each double convolution
            # named in ode_blocks (inc, down1.., up1..), GroupNorm groups of its field.
            nodes_unet=dict(
                base_width=64,
                depth=4,
                upsampling="transposed",
                groups=32,
                ode_blocks=("inc", "down1", "down2", "down3", "down4", "up1", "up2", "up3", "up4"),
            ),
            # The dilated ResNet of PSPNet and DeepLabv3 (torchvision's; models/resnet.py):
            # depth None = the model's own (PSPNet 50, DeepLabv3 101) | 50 | 101 | 152;
            # blocks: per-layer block counts overriding the depth's (() = the depth's);
            # output_stride 8 (both papers) | 16 | 32; stem_width: torchvision's 64.
            resnet=dict(depth=placeholder(int), blocks=(), output_stride=8, stem_width=64),
            # PSPNet (Table 2; models/pspnet.py, hszhao/semseg): pyramid bins, classifier width,
            # Dropout2d rate, the auxiliary head on layer3 (training only, loss weight 0.4).
            pspnet=dict(bins=(1, 2, 3, 6), channels=512, dropout=0.1, aux_head=True, aux_channels=256),
            # DeepLabv3 (Table 2; models/deeplabv3.py, torchvision's deeplabv3_resnet101): ASPP
            # rates and width, projection dropout, torchvision's optional auxiliary FCN head
            # (off: the paper's 58.6M has none).
            deeplabv3=dict(atrous_rates=(12, 24, 36), channels=256, dropout=0.5, aux_head=False, aux_channels=256),
            # The vector field. norm: must be a pure function of its input: "group" (GroupNorm
            # with `groups` groups, clipped to divide each width) | "none". activation: relu
            # (paper) | silu | softplus | gelu. time_dependence: "none" (autonomous; the paper
            # does not say how t enters f: our choice) |
            # "concat" (t as an extra input channel of every block convolution). conv_grads: how
            # the field's convolutions are differentiated, the same gradients either way: "auto"
            # ("canonical" on a CPU unless ode.adjoint is "unrolled", else "xla") | "xla" |
            # "canonical" (models/layers.py: XLA:CPU runs JAX's own convolution gradients slowly
            # inside the solver's loops).
            field=dict(norm="group", groups=16, activation="relu", time_dependence="none", conv_grads="auto"),
            ode=ode_config(),
            # "default": each model's own head (HRNetV2's concat head; SegNode's per-branch
            # classifiers). "ocr": HRNet-OCR's object-contextual head over the 4 branches (for
            # SegNode: over the ODE's final state), its auxiliary logits in aux["aux_logits"]
            # (weighted by train.loss.aux_weight); `ocr` sets its widths (HRNet-OCR: 512, 256)
            # and the dropout after its fusion (0.05). See segnode_jax/models/ocr.py.
            head="default",
            # "segmentation" | "classification": HRNet-Image-Classification's head (ImageNet
            # pretraining, paper sec. 4.1) on hrnetv2 / baseline / segnode, (N, classes) logits;
            # `classification` sets its widths (the official 32, 64, 128, 256 -> 2048).
            task="segmentation",
            classification=dict(head_channels=(32, 64, 128, 256), features=2048),
            ocr=dict(mid_channels=512, key_channels=256, dropout=0.05),
            # Rematerialisation (jax.checkpoint) of parts of the network, trading compute
            # for training memory.
            remat=dict(field=False, stem=False, head=False),
        )
    )


# Named network sizes (``model.size``): the fields each one sets. w48/w32/w18 are HRNet's (stem
# 64, layer1 4 Bottlenecks of 64 planes, the paper's SegNode field of 2 modules x 2 blocks).
# small: the real-data main job's network (configs/camvid_small.py), about 1.3M parameters as
# SegNode: every width scaled down (branches 16-32-64-128, stem 32, layer1 2 Bottlenecks of 16
# planes) and a field of 1 module of 2 blocks per branch. tiny: the synthetic main job's
# (configs/synthetic.py, 0.42M parameters as SegNode at 8 classes). HRNetV2 and the Baseline keep
# their module counts at every size (their structure); only their widths change.
MODEL_SIZES = {
    "w48": dict(width=48),
    "w32": dict(width=32),
    "w18": dict(width=18),
    "small": {
        "width": 16,
        "stem_width": 32,
        "layer1_planes": 16,
        "layer1_blocks": 2,
        "segnode.modules_per_field": 1,
        "segnode.blocks_per_branch": 2,
        "field.groups": 4,
    },
    "tiny": {
        "width": 12,
        "stem_width": 16,
        "layer1_planes": 8,
        "layer1_blocks": 1,
        "segnode.modules_per_field": 1,
        "segnode.blocks_per_branch": 1,
        "field.groups": 4,
    },
}


class ModelSizeError(ConfigError):
    """An unknown ``model.size``."""


def resolve_model_size(model_cfg):
    """Applies ``model_cfg.size`` (if set) to the fields it names, in place; returns the config.

    A field whose value differs from the W48 default (:func:`model_config`) was set on purpose
    and is kept, so ``--config.model.size=small --config.model.width=24`` is the small network at
    width 24. Idempotent: a config resolved once (``config.json`` of a run) resolves to itself.

    Raises:
      ModelSizeError: an unknown size (the message lists them).
    """
    size = model_cfg.get("size") if "size" in model_cfg else None
    if size is None:
        return model_cfg
    if size not in MODEL_SIZES:
        raise ModelSizeError(
            f"invalid model.size={size!r}; choose one of {', '.join(MODEL_SIZES)} "
            "(or leave it unset and set model.width, model.stem_width, ... yourself)"
        )
    defaults = model_config()
    for key, value in MODEL_SIZES[size].items():
        *parents, leaf = key.split(".")
        node: Any
        default: Any
        node, default = model_cfg, defaults
        for part in parents:
            node, default = node[part], default[part]
        if node[leaf] == default[leaf]:
            node[leaf] = value
    return model_cfg


def resolved_snapshot(model_cfg) -> config_dict.FrozenConfigDict:
    """:func:`snapshot` of a model config with ``model.size`` applied (the input is not changed)."""
    frozen = snapshot(model_cfg)
    return snapshot(resolve_model_size(frozen.as_configdict())) if frozen.get("size") else frozen


OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("poly", "cosine", "constant", "multistep")
EVAL_MODES = ("whole", "slide", "multiscale", "hrnet")


def paper_recipes() -> config_dict.ConfigDict:
    """The optimiser recipe of each model (``cfg.train.recipes``), keyed by ``model.name``.

    SegNode and Baseline: the paper (sec. 4.1). HRNetV2: HRNet's own Cityscapes recipe; the
    dataset configs replace it with HRNet's recipe for their dataset where it differs. U-Net:
    Ronneberger et al.'s momentum, our learning rate (see below). PSPNet, DeepLabv3: their
    authors' (see below).
    Fields: ``optimizer`` (sgd | adamw), ``learning_rate``, ``momentum`` (SGD only),
    ``weight_decay`` (SGD: L2 added to the gradient, as PyTorch's SGD; AdamW: decoupled),
    optionally ``head_lr_mult``. A model with ``model.head="ocr"`` takes the ``"{name}_ocr"``
    recipe where a dataset config defines one (HRNet-OCR's), else its model's.
    """
    return config_dict.ConfigDict(
        dict(
            segnode=dict(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0.0),
            baseline=dict(optimizer="adamw", learning_rate=1e-4, momentum=0.9, weight_decay=0.05),
            hrnetv2=dict(optimizer="sgd", learning_rate=0.01, momentum=0.9, weight_decay=5e-4),
            # U-Net: SGD with Ronneberger et al.'s "high momentum (0.99)"; their paper gives no
            # learning rate or weight decay: lr 0.01 and no decay are our choice.
            unet=dict(optimizer="sgd", learning_rate=0.01, momentum=0.99, weight_decay=0.0),
            # U-Node: the authors' notebook, Adam lr 1e-3 (AdamW without decay is Adam).
            unode=dict(optimizer="adamw", learning_rate=1e-3, momentum=0.9, weight_decay=0.0),
            # PSPNet: hszhao/semseg's configs (SGD lr 0.01, momentum 0.9, decay 1e-4, poly 0.9)
            # with its 10x learning rate for the new modules (ppm, cls, aux); aux loss 0.4.
            pspnet=dict(optimizer="sgd", learning_rate=0.01, momentum=0.9, weight_decay=1e-4, head_lr_mult=10.0),
            # DeepLabv3: the paper's lr 0.007, momentum 0.9 and poly 0.9; it gives no weight
            # decay: 1e-4 as torchvision's reference recipe for this network.
            deeplabv3=dict(optimizer="sgd", learning_rate=0.007, momentum=0.9, weight_decay=1e-4),
            # NODEs-UNet: its paper gives no optimiser; Adam lr 1e-3 as U-Node (our choice).
            nodes_unet=dict(optimizer="adamw", learning_rate=1e-3, momentum=0.9, weight_decay=0.0),
        )
    )


def train_config() -> config_dict.ConfigDict:
    """Training settings (``cfg.train``); see docs/training.md for every field.

    The optimiser fields ``optimizer``, ``learning_rate``, ``momentum`` and ``weight_decay``
    default to "auto"/None, meaning "the recipe of ``model.name`` in ``recipes``", so that
    ``--config.model.name=baseline`` switches to the Baseline's AdamW recipe; a value given
    explicitly (``--config.train.learning_rate=0.05``) wins over the recipe.
    """
    return config_dict.ConfigDict(
        dict(
            # Global batch size: over all devices and hosts (must divide by the device count).
            batch_size=16,
            # Length: num_steps if set, else num_epochs passes over the training split
            # (HRNet's END_EPOCH; steps per epoch = examples // batch_size).
            num_epochs=placeholder(float),
            num_steps=placeholder(int),
            # "auto" / None: from recipes[model.name].
            optimizer="auto",
            learning_rate=placeholder(float),
            momentum=placeholder(float),
            weight_decay=placeholder(float),
            # Learning-rate factor of the model's head (HRNet-OCR's NONBACKBONE_MULT); None:
            # the recipe's (default 1).
            head_lr_mult=placeholder(float),
            nesterov=False,
            adam_b1=0.9,
            adam_b2=0.999,
            adam_eps=1e-8,
            recipes=paper_recipes(),
            # poly: lr * (1 - step / num_steps) ** poly_power (HRNet, the paper); cosine; constant;
            # multistep: lr * lr_decay_factor ** (number of lr_decay_at fractions of the run
            # passed) (HRNet-Image-Classification: x0.1 at epochs 30, 60, 90 of 100).
            lr_schedule="poly",
            poly_power=0.9,
            lr_decay_at=(0.3, 0.6, 0.9),
            lr_decay_factor=0.1,
            end_learning_rate=0.0,
            # Linear warm-up from 0 over this many steps (0: none, as the paper).
            warmup_steps=0,
            # Clip the global gradient norm (None: no clipping, as the paper).
            grad_clip_norm=placeholder(float),
            # Pixel cross-entropy, ignore index 255, class weights if data.class_weights.
            # OHEM (HRNet): keep pixels whose target probability is below ohem_threshold, and
            # at least ohem_min_kept pixels per image (the hardest ones).
            # aux_weight: weight of a model's auxiliary logits (the OCR head's soft regions;
            # plain weighted cross-entropy, as HRNet-OCR's LOSS.BALANCE_WEIGHTS [0.4, 1]).
            # label_smoothing: classifiers only (model.task=classification; HRNet's: 0).
            loss=dict(ohem=False, ohem_threshold=0.9, ohem_min_kept=131072, aux_weight=0.4, label_smoothing=0.0),
            log_every_steps=50,
            # Asynchronous orbax checkpoints (train state + data iterator) every N steps and
            # at the end; the newest max_to_keep are kept.
            checkpoint_every_steps=1000,
            max_to_keep=3,
            # Validation (eval.mode on eval.split) every N steps and at the end; None: at the
            # end only; 0: never. The checkpoint with the best mIoU is kept in WORKDIR/best.
            eval_every_steps=placeholder(int),
            # Validation on the first N images only (None: the whole split).
            eval_num_images=placeholder(int),
            # tqdm progress bar on process 0 (loss, images/s, solver NFE).
            progress_bar=True,
        )
    )


def eval_config() -> config_dict.ConfigDict:
    """Evaluation settings (``cfg.eval``); None fields default to the data section's values.

    Modes: ``whole`` (the whole image at once), ``slide`` (overlapping ``crop_size`` windows,
    ``stride`` apart, averaged), ``multiscale`` (``scales`` x optional horizontal ``flip``,
    softmax probabilities averaged; each scale inferred with ``multiscale_base``), ``hrnet``
    (HRNet's own multi-scale + flip test, ``evaluation.inference.hrnet_inference``).
    """
    return config_dict.ConfigDict(
        dict(
            mode="whole",
            # None: data.eval_split.
            split=placeholder(str),
            # Images (whole) or windows (slide) per forward pass; None: one per local device.
            batch_size=placeholder(int),
            # Sliding window (h, w); None: data.crop_size. Stride None: 2/3 of the window.
            crop_size=placeholder(tuple),
            stride=placeholder(tuple),
            # Multi-scale test; None: data.eval_scales / data.eval_flip (HRNet's per dataset).
            scales=placeholder(tuple),
            flip=placeholder(bool),
            # How each scale of `multiscale` is inferred: slide (HRNet) | whole.
            multiscale_base="slide",
            # mode="hrnet": HRNet-Semantic-Segmentation's own multi-scale + flip test (scales of
            # data.base_size, whole or crop windows per data.hrnet_test_rule, flip averaged as
            # logits, windows and scales in exp(logits)); windows data.test_crop_size.
            # mIoU over the classes "present" (labels or predictions; mmsegmentation) or "all"
            # (an absent class counts 0; HRNet). results.json has both either way.
            miou_over="present",
            # Whole mode: pad images (bottom/right, black) to a multiple of this, so that
            # datasets of many image sizes compile few shapes (1: no padding).
            pad_multiple=1,
            # SegNode: solve each image's ODE with its own adaptive steps (vmap), so results
            # do not depend on the batch size or on padding; False: the batch is solved jointly.
            per_image_solve=True,
            # Evaluate the first N images only (None: the whole split).
            num_images=placeholder(int),
            # Input | ground truth | prediction PNGs written next to results.json.
            num_visualizations=4,
            # evaluate.py --trajectory (SegNode; segnode_jax/evaluation/trajectory.py): predictions at
            # num_times equally spaced solve times, strips of them for num_strips images, and a
            # sweep of solver settings ("solver:steps" fixed steps, "solver@tol" adaptive);
            # the fastest within max_miou_drop (absolute) of the best is recommended.
            trajectory=dict(
                num_times=8,
                num_strips=4,
                max_miou_drop=0.01,
                sweep=(
                    "euler:1",
                    "euler:2",
                    "euler:4",
                    "rk4:1",
                    "rk4:2",
                    "rk4:4",
                    "dopri5@1e-1",
                    "dopri5@1e-2",
                    "dopri5@1e-3",
                ),
            ),
        )
    )


def parallel_config() -> config_dict.ConfigDict:
    """Settings of devices and hosts (``cfg.parallel``)."""
    return config_dict.ConfigDict(
        dict(
            # Multi-host start-up (jax.distributed.initialize): "auto" starts it when a
            # launcher is detected (SLURM with >1 task, Open MPI, JAX_COORDINATOR_ADDRESS)
            # or coordinator_address is set; "on" always; "off" never (single host).
            distributed="auto",
            # host:port of process 0's coordinator; num_processes and process_id of this
            # process. None: detected from the launcher (SLURM, Open MPI) or JAX_* variables.
            coordinator_address=placeholder(str),
            num_processes=placeholder(int),
            process_id=placeholder(int),
            # Seconds to wait for all processes to join.
            initialization_timeout=300,
            # Train state layout: "replicated" (every device holds all parameters and the
            # optimiser state) | "fsdp" (arrays of at least fsdp_min_size elements are
            # split over the data axis: less memory per device, more communication).
            param_sharding="replicated",
            fsdp_min_size=2**16,
        )
    )


def base_config() -> config_dict.ConfigDict:
    """Everything a run needs but the data section (``cfg.data``, set by the dataset configs
    with ``segnode_jax.data.data_config(name)``); dataset config files override parts of it."""
    cfg = config_dict.ConfigDict()
    cfg.seed = 0
    cfg.model = model_config()
    cfg.train = train_config()
    cfg.eval = eval_config()
    cfg.parallel = parallel_config()
    # Initialise from another run's checkpoint or a converted-weights directory (see
    # segnode_jax.checkpoints.load_variables); ignored when the workdir already has a checkpoint.
    cfg.init_from = placeholder(str)
    return cfg


# The dataset configs' training solve (configs/camvid.py and the other dataset files): the paper's
# adaptive Dopri5 with the recursive-checkpoint adjoint -- exact gradients of the discretised solve,
# several times faster than the paper's backsolve adjoint -- keeping 10 solver states, a few more
# than the 5-7 steps the fields take (none recomputed then), and fewer than diffrax's default of
# 15, so that its W48 training memory keeps under the bound of issue 34 (benchmarks/README.md,
# "Where a solve's time goes", and table2.json's ``segnode/recursive_checkpoint`` row). The
# paper's adjoint: --config.model.ode.adjoint=backsolve.
DATASET_SOLVE = {"adjoint": "recursive_checkpoint", "checkpoints": 10}


def dataset_solve(cfg: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """Sets the dataset configs' training solve (:data:`DATASET_SOLVE`) on ``cfg.model.ode``."""
    cfg.model.ode.update(DATASET_SOLVE)
    return cfg


def load_config(path: str | os.PathLike) -> config_dict.ConfigDict:
    """Loads a config file (a Python file exposing ``get_config()``).

    Arguments:
      path: path of the config file, e.g. ``"configs/camvid.py"``. A ``:arg`` suffix is passed
        to ``get_config(arg)`` as ``ml_collections`` config files allow.

    Returns:
      The ``ConfigDict`` returned by the file's ``get_config()``.
    """
    path = os.fspath(path)
    arg = None
    if ":" in os.path.basename(path):
        path, arg = path.rsplit(":", 1)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"config file {path!r} does not exist; pass a file such as configs/camvid.py (see the configs/ folder)"
        )
    name = "segnode_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"config file {path!r} cannot be loaded as Python; pass a .py file such as configs/camvid.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} has no get_config() function")
    return module.get_config() if arg is None else module.get_config(arg)


# ---------------------------------------------------------------------------------------
# The resolved config of a run (WORKDIR/config.json).

CONFIG_NAME = "config.json"


# Typed reads. A ConfigDict item can hold any type, so ``cfg.get(key)`` is a union that neither
# pyright nor a reader can narrow; these check the value (a wrong type is a ConfigError naming
# the field) and return it with its type.


def _field(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def _whole(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()


def optional_int(cfg, key: str, *, section: str = "") -> int | None:
    """``cfg[key]`` as an int, None where unset (``section``: the config path, for the message)."""
    value = cfg.get(key)
    if value is None:
        return None
    if not _whole(value):
        raise ConfigError(f"{_field(section, key)} must be a whole number or None, got {value!r}")
    return int(value)


def optional_size(cfg, key: str, *, section: str = "") -> tuple[int, int] | None:
    """``cfg[key]`` as ``(height, width)``: a pair, or one number for a square; None where unset."""
    value = cfg.get(key)
    if value is None:
        return None
    if _whole(value) and value > 0:
        return int(value), int(value)
    if isinstance(value, list | tuple) and len(value) == 2 and all(_whole(v) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    raise ConfigError(
        f"{_field(section, key)} must be (height, width), a single size or None, got {value!r}; "
        f"e.g. --config.{_field(section, key)}='(512, 1024)'"
    )


def optional_section(cfg, key: str) -> config_dict.ConfigDict | None:
    """The sub-config ``cfg[key]`` (frozen or not), None where the config has none."""
    value = cfg.get(key)
    if value is None or isinstance(value, config_dict.ConfigDict):
        return value
    raise ConfigError(f"{key} must be a config section, got {value!r}")


class RunConfigNotFound(UserError):
    """A checkpoint whose run config (``config.json``) is nowhere to be found."""


def _tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def config_to_json(cfg: config_dict.ConfigDict) -> str:
    """The config as indented, key-sorted JSON (tuples become lists)."""
    return cfg.to_json(indent=2, sort_keys=True)


def config_from_json(text: str) -> config_dict.ConfigDict:
    """A ConfigDict from :func:`config_to_json` output (lists become tuples again)."""
    return config_dict.ConfigDict(_tuples(json.loads(text)))


def save_config(workdir: str, cfg: config_dict.ConfigDict) -> str:
    """Writes ``WORKDIR/config.json`` (process 0) and returns its path."""
    import jax

    path = os.path.join(workdir, CONFIG_NAME)
    if jax.process_index() == 0:
        cfg = copy.deepcopy(cfg)
        if "parallel" in cfg:
            # How this launch was started (process 0's id, ...) is not part of the run.
            with cfg.unlocked():
                for key in ("coordinator_address", "num_processes", "process_id"):
                    if key in cfg.parallel:
                        cfg.parallel[key] = None
        os.makedirs(workdir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(config_to_json(cfg) + "\n")
        os.replace(tmp, path)
    return path


def find_run_config(path: str) -> str | None:
    """The ``config.json`` of the run a checkpoint path belongs to (searched upwards)."""
    path = os.path.abspath(path)
    for _ in range(4):
        candidate = os.path.join(path, CONFIG_NAME)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return None


def load_run_config(path: str) -> config_dict.ConfigDict:
    """The config saved with the run at ``path`` (a workdir or a checkpoint inside one)."""
    found = find_run_config(path)
    if found is None:
        raise RunConfigNotFound(
            f"no {CONFIG_NAME} found at {path} or its parent folders, so the model config is "
            "unknown: pass the run's config with --config configs/<dataset>.py (plus the "
            "overrides used in training)."
        )
    with open(found) as f:
        return config_from_json(f.read())
