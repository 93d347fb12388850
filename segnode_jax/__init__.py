"""segnode-jax: SegNode (semantic segmentation with neural ODEs) in JAX/Flax with diffrax."""

from segnode_jax.config import base_config, load_config

__all__ = ["base_config", "load_config"]
__version__ = "0.1.0.dev0"
