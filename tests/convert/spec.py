"""The tiny official HRNet the converter fixtures hold, and the matching segnode-jax config."""

TINY = dict(
    widths=(2, 4, 8, 16),
    stem_width=4,
    planes=2,
    layer1_blocks=1,
    stage_modules=(1, 1, 2),
    stage_blocks=(1, 1, 1),
    num_classes=5,
    seed=0,
)
# The same backbone with HRNet-OCR's head (mid_channels, key_channels), another seed.
TINY_OCR = dict(TINY, seed=1, ocr=(6, 4))


def tiny_model_config(name="hrnetv2"):
    """configs/tiny.py's model with the fixture's HRNet layout (2 stage-4 modules)."""
    import os

    import segnode_jax

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = segnode_jax.load_config(os.path.join(repo, "configs", "tiny.py"))
    cfg.model.name = name
    cfg.model.width = TINY["widths"][0]
    cfg.model.stem_width = TINY["stem_width"]
    cfg.model.layer1_planes = TINY["planes"]
    cfg.model.layer1_blocks = TINY["layer1_blocks"]
    cfg.model.hrnet.stage_modules = TINY["stage_modules"]
    cfg.model.hrnet.stage_blocks = TINY["stage_blocks"]
    return cfg


# The networks the official model code builds for tests/convert/fixtures/official (its
# stem is fixed at 64 channels; HRNet-Image-Classification's head is fixed at W48-C's:
# head channels 32-256, 2048 features, 1000 classes).
OFFICIAL = dict(TINY, stem_width=64)
OFFICIAL_OCR = (6, 4)
OFFICIAL_CLS = dict(head_channels=(32, 64, 128, 256), features=2048, num_classes=1000)
# milesial's UNet (widths fixed at 64-1024) and the U-Node authors' ConvODEUNet (tol: its
# Dopri5's rtol = atol, far below the 1e-4 of the comparison).
UNET_CLASSES = 5
UNODE = dict(num_filters=4, classes=5, tol=1e-8)
PSPNET_CLASSES = 5


def official_extra(spec=OFFICIAL) -> dict:
    """``MODEL.EXTRA`` of the official HRNet configs (the experiments' yaml files) for ``spec``."""
    stages = {
        "STAGE1": dict(
            NUM_MODULES=1,
            NUM_BRANCHES=1,
            BLOCK="BOTTLENECK",
            NUM_BLOCKS=[spec["layer1_blocks"]],
            NUM_CHANNELS=[spec["planes"]],
            FUSE_METHOD="SUM",
        )
    }
    for s in range(3):
        branches = s + 2
        stages[f"STAGE{s + 2}"] = dict(
            NUM_MODULES=spec["stage_modules"][s],
            NUM_BRANCHES=branches,
            BLOCK="BASIC",
            NUM_BLOCKS=[spec["stage_blocks"][s]] * branches,
            NUM_CHANNELS=list(spec["widths"][:branches]),
            FUSE_METHOD="SUM",
        )
    return dict(FINAL_CONV_KERNEL=1, **stages)


def official_model_config(name="hrnetv2", *, head="default", task="segmentation"):
    """The segnode-jax config of :data:`OFFICIAL` (``head``: default | ocr; ``task``:
    segmentation | classification with W48-C's head)."""
    cfg = tiny_model_config(name)
    cfg.model.stem_width = OFFICIAL["stem_width"]
    if head == "ocr":
        cfg.model.head = "ocr"
        cfg.model.ocr.mid_channels, cfg.model.ocr.key_channels = OFFICIAL_OCR
    if task == "classification":
        cfg.model.task, cfg.model.num_classes = "classification", OFFICIAL_CLS["num_classes"]
        cfg.model.classification.head_channels = OFFICIAL_CLS["head_channels"]
        cfg.model.classification.features = OFFICIAL_CLS["features"]
    return cfg
