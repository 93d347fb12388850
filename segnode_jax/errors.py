"""The errors users see: one hierarchy, one exit status per kind.

* :class:`UserError` -- bad input the user can fix (a config field, a path, a dataset that is
  not prepared, a checkpoint of another model): the CLIs print one ``error:`` line naming the
  fix and exit with status 2.
* :class:`RunError` -- a run that failed although its input was valid (a non-finite loss, an
  ODE solve that did not finish, a full disk): one ``error:`` line, exit status 1.

Every error class of the package derives from one of the two (and, for compatibility, from
the built-in type it always had: ``ValueError``, ``RuntimeError``, ...). ``segnode_jax.cli``
turns them into the ``error:`` line; nothing else in the package prints them.
"""

from __future__ import annotations


class SegnodeError(Exception):
    """Base of every error segnode-jax raises on purpose; ``exit_code`` is the CLI status."""

    exit_code = 1


class UserError(SegnodeError, ValueError):
    """Bad input (config, files, checkpoint, dataset); the message names the fix. Exit 2."""

    exit_code = 2


class RunError(SegnodeError, RuntimeError):
    """A run that failed on valid input (non-finite loss, failed solve, full disk). Exit 1."""

    exit_code = 1


class ConfigError(UserError):
    """A config field with a value it cannot take, or settings that cannot work together; the
    message names the field and its choices. Exit 2."""
