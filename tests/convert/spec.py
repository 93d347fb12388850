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
# With HRNet-Image-Classification's head (head_channels, features), another seed.
TINY_CLS = dict(TINY, seed=2, num_classes=7, cls=((2, 3, 4, 5), 12))


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
