"""What ``train.py`` and ``evaluate.py`` share: quiet logs and reading ``--config``."""

from __future__ import annotations

import logging as std_logging


class ConfigFileError(ValueError):
    """``--config`` names a file that cannot be loaded."""


def quiet_logs() -> None:
    """Keeps the console to our own messages: absl INFO (orbax's per-save chatter), TFDS's
    notes about custom builder configs and orbax's note on reading one item of a checkpoint
    are dropped; other warnings and errors stay."""
    from absl import logging

    logging.set_verbosity(logging.WARNING)

    class _Drop(std_logging.Filter):
        def filter(self, record):
            msg = record.getMessage()
            return not (
                msg.startswith("Using custom data configuration")
                or "has no dataset_info.json" in msg
                # orbax, reading one item of a composite checkpoint (the step's metadata is
                # one level up): harmless.
                or msg.startswith("Metadata file does not exist")
            )

    logging.get_absl_logger().addFilter(_Drop())


def read_config(flag_values, name: str = "config"):
    """The ConfigDict of an ``ml_collections`` config-file flag (loaded lazily on access).

    Raises:
      ConfigFileError: the file is missing or fails to import (message names the file).
    """
    try:
        value = getattr(flag_values, name)
        if value is not None:
            value.keys()  # a file that failed to load raises on first use
        return value
    except (OSError, ImportError, SyntaxError, AttributeError, TypeError, ValueError) as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        try:
            where = flag_values[name].config_filename
        except Exception:  # noqa: BLE001 - only used in the message
            where = "FILE"
        detail = lines[-1] if lines else type(e).__name__
        raise ConfigFileError(
            f"cannot load --{name}={where}: {detail}. Pass an existing config file such as configs/camvid.py "
            "(see the configs/ folder)."
        ) from None
