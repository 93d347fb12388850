"""segnode-jax: SegNode (semantic segmentation with neural ODEs) in JAX/Flax with diffrax.

Public API::

    import jax, segnode_jax
    cfg = segnode_jax.load_config("configs/camvid.py")
    variables = segnode_jax.init(cfg.model, jax.random.key(0), (1, 360, 480, 3))
    logits, aux = segnode_jax.apply(variables, images, cfg.model)
    n = segnode_jax.count_params(cfg.model)
    labels = segnode_jax.predict(variables, uint8_rgb_image, cfg)    # (H, W) train ids
    variables, cfg = segnode_jax.load("pretrained/camvid_small")     # a trained model (or a run)
"""

from segnode_jax import errors
from segnode_jax.api import apply, count_params, freeze, init
from segnode_jax.config import base_config, load_config, model_config
from segnode_jax.errors import RunError, SegnodeError, UserError
from segnode_jax.models import build_model, capabilities, model_names, register_model
from segnode_jax.ode import ODESettings, ODESolveError
from segnode_jax.segment import predict

__all__ = [
    "ODESettings",
    "ODESolveError",
    "RunError",
    "SegnodeError",
    "UserError",
    "apply",
    "base_config",
    "build_model",
    "capabilities",
    "count_params",
    "errors",
    "freeze",
    "init",
    "load",
    "load_config",
    "model_config",
    "model_names",
    "predict",
    "register_model",
]
__version__ = "0.1.0.dev0"


def load(path: str, *, which: str = "best"):
    """``(variables, cfg)`` of a trained model: a training workdir (its best checkpoint by
    default), one of its checkpoints, or a model folder such as ``pretrained/camvid_small``
    (see :func:`segnode_jax.scoring.load`)."""
    from segnode_jax import scoring  # orbax is imported on first use, not with the package

    return scoring.load(path, which=which)
