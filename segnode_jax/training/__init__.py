"""Training: the optimiser recipe (``optim``), the train state and the pure jitted step
(``step``), and the loop with its checkpoints, logs and validation (``loop``).

    cfg = segnode_jax.load_config("configs/synthetic.py")
    result = segnode_jax.training.train_and_evaluate(cfg, "runs/synthetic")

(The package is ``training``, not ``train``: ``train`` is already the name of ``apply``'s
training-mode flag and of many local variables.)
"""

from segnode_jax.training.loop import NonFiniteLossError, num_train_steps, resolve_config, train_and_evaluate
from segnode_jax.training.optim import (
    OPTIMIZER_FIELDS,
    ConfigError,
    learning_rate_schedule,
    make_optimizer,
    resolve_optimizer,
)
from segnode_jax.training.step import (
    TrainState,
    abstract_train_state,
    create_train_state,
    make_train_step,
    train_state_shardings,
    train_step,
)

__all__ = [
    "OPTIMIZER_FIELDS",
    "ConfigError",
    "NonFiniteLossError",
    "TrainState",
    "abstract_train_state",
    "create_train_state",
    "learning_rate_schedule",
    "make_optimizer",
    "make_train_step",
    "num_train_steps",
    "resolve_config",
    "resolve_optimizer",
    "train_and_evaluate",
    "train_state_shardings",
    "train_step",
]
