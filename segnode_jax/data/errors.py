"""The one error type users see when a dataset cannot be prepared or read."""

from __future__ import annotations

from segnode_jax.errors import UserError


class PreparationError(UserError):
    """A user-fixable problem with dataset files or settings.

    The message always names the file (or folder) concerned and what to do about it. The
    preparation CLI prints it on stderr without a traceback and exits with status 2.
    """
