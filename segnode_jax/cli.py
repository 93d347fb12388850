"""What the command-line tools share: one way to run, fail and read ``--config``.

* :func:`run` runs an absl entry point (``train.py``, ``evaluate.py``): flags are parsed with
  ``--config.a.b=None`` support, and every expected failure ends as one ``error:`` line on
  stderr with the exit status of its kind (:mod:`segnode_jax.errors`: 2 bad input, 1 failed
  run), never a traceback.
* :func:`guarded` does the same for a function (the converter and the prepare tool).
* :func:`read_config` reads a config-file flag, with those ``None`` overrides applied.
* :func:`use_compilation_cache`: every tool run through :func:`run` keeps its compiled
  functions in JAX's persistent compilation cache.
"""

from __future__ import annotations

import logging as std_logging
import sys
from typing import Callable, Sequence

from segnode_jax.config import resolve_model_size
from segnode_jax.errors import SegnodeError, UserError

NONE_WORDS = ("none", "null")


class ConfigFileError(UserError):
    """``--config`` names a file that cannot be loaded, or an override that cannot apply."""


COMPILATION_CACHE_ENV = "SEGNODE_COMPILATION_CACHE"
_OFF_WORDS = ("off", "0", "false", "no", "none")


def compilation_cache_dir(environ=None) -> str | None:
    """Where the command-line tools keep JAX's persistent compilation cache (None: off).

    ``$JAX_COMPILATION_CACHE_DIR`` when set (JAX's own variable: JAX then reads it itself),
    else ``$SEGNODE_COMPILATION_CACHE``, else ``~/.cache/segnode_jax/jax`` (under
    ``$XDG_CACHE_HOME`` when set); ``SEGNODE_COMPILATION_CACHE=off`` turns it off.
    """
    import os

    env = os.environ if environ is None else environ
    if env.get("JAX_COMPILATION_CACHE_DIR"):
        return env["JAX_COMPILATION_CACHE_DIR"]
    value = env.get(COMPILATION_CACHE_ENV, "").strip()
    if value.lower() in _OFF_WORDS:
        return None
    if value:
        return value
    root = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "segnode_jax", "jax")


def use_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache (:func:`compilation_cache_dir`) for a
    command-line tool, so that a rerun (a resumed training, another evaluation of the same
    model) loads its compiled functions instead of compiling them again: minutes on a CPU for
    the dataset configs. JAX keys every entry by the program, the JAX/XLA versions, the flags
    and the devices, so an entry is never reused for anything else; functions with a host
    callback are not kept (the training step and the evaluation have none). A folder that
    cannot be written turns the cache off with one note on stderr. Returns the folder (None: off).
    """
    import os

    import jax

    path = compilation_cache_dir()
    if path is None or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return path
    try:  # JAX would warn at every compile about a folder it cannot write
        os.makedirs(path, exist_ok=True)
        writable = os.access(path, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:
        print(
            f"note: compilation cache off: cannot write {path} (set {COMPILATION_CACHE_ENV}=DIR to a writable "
            f"folder, or {COMPILATION_CACHE_ENV}=off)",
            file=sys.stderr,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    return path


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

    class _DropHandledOrbaxErrors(std_logging.Filter):
        # A failed save or restore in orbax's background threads is logged with its traceback
        # and then raised to our code, which reports it as one line
        # (checkpoints.CheckpointWriteError / CheckpointError).
        def filter(self, record):
            return not (record.levelno >= std_logging.ERROR and record.exc_info and "orbax" in record.pathname)

    logging.get_absl_logger().addFilter(_Drop())
    logging.get_absl_logger().addFilter(_DropHandledOrbaxErrors())
    _drop_closed_loop_noise()


def _drop_closed_loop_noise() -> None:
    """When a checkpoint write fails (a full disk), tensorstore's callbacks still post to
    orbax's asyncio loop after it closed and print "RuntimeError: Event loop is closed"
    tracebacks through sys.excepthook / threading.excepthook; the failure itself is reported
    as one error line. Only that exact error is dropped."""
    import threading

    def closed_loop(exc) -> bool:
        return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"

    previous_sys, previous_thread = sys.excepthook, threading.excepthook

    def sys_hook(kind, exc, tb):
        if not closed_loop(exc):
            previous_sys(kind, exc, tb)

    def thread_hook(args):
        if not closed_loop(args.exc_value):
            previous_thread(args)

    # tensorstore's C++ threads calling loop.call_soon_threadsafe on the closed loop end up
    # in PyErr_WriteUnraisable ("Exception ignored in: None"), i.e. sys.unraisablehook.
    previous_unraisable = sys.unraisablehook

    def unraisable_hook(info):
        if not closed_loop(info.exc_value):
            previous_unraisable(info)

    sys.excepthook, threading.excepthook = sys_hook, thread_hook
    sys.unraisablehook = unraisable_hook


# ---------------------------------------------------------------------------------------
# --config.a.b=None

# flag name -> dotted paths set to None on the command line (filled by split_none_overrides).
_NONE_OVERRIDES: dict[str, list[str]] = {}


def split_none_overrides(argv: Sequence[str], names: Sequence[str] = ("config",)) -> list[str]:
    """Removes ``--config.a.b=None`` (and ``--config.a.b None``) from ``argv`` and remembers
    them for :func:`read_config`: ml_collections parses an override by the field's type
    (``int`` for ``num_steps``) and cannot turn a field back to "unset" itself.

    Returns:
      ``argv`` without those arguments. The overrides of the previous call are forgotten.
    """
    _NONE_OVERRIDES.clear()
    out: list[str] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        matched = False
        for name in names:
            prefix = f"--{name}."
            if arg.startswith(prefix):
                body = arg[len(prefix) :]
                if "=" in body:
                    path, value = body.split("=", 1)
                    if value.strip().lower() in NONE_WORDS:
                        _NONE_OVERRIDES.setdefault(name, []).append(path)
                        matched = True
                elif i + 1 < len(argv) and argv[i + 1].strip().lower() in NONE_WORDS:
                    _NONE_OVERRIDES.setdefault(name, []).append(body)
                    i += 1
                    matched = True
        if not matched:
            out.append(arg)
        i += 1
    return out


def apply_none_overrides(cfg, paths: Sequence[str], *, flag: str = "config"):
    """Sets each dotted ``path`` of ``cfg`` to None; only optional fields (``placeholder``s,
    or fields that are None already) can be unset."""
    from ml_collections import config_dict

    for path in paths:
        node, parts = cfg, path.split(".")
        for part in parts[:-1]:
            if not isinstance(node, config_dict.ConfigDict) or part not in node:
                raise ConfigFileError(f"--{flag}.{path}=None: the config has no field {path!r}.")
            node = node[part]
        key = parts[-1]
        if not isinstance(node, config_dict.ConfigDict) or key not in node:
            raise ConfigFileError(f"--{flag}.{path}=None: the config has no field {path!r}.")
        optional = isinstance(node._fields[key], config_dict.FieldReference) or node[key] is None  # noqa: SLF001
        if not optional:
            raise ConfigFileError(
                f"--{flag}.{path}=None: {path} cannot be unset (it is not optional; now {node[key]!r}); give it a value."
            )
        with node.unlocked():
            node[key] = None
    return cfg


def read_config(flag_values, name: str = "config"):
    """The ConfigDict of an ``ml_collections`` config-file flag (loaded lazily on access),
    with the ``--config.a.b=None`` overrides of the command line applied.

    Raises:
      ConfigFileError: the file is missing or fails to import (message names the file), or a
        None override names a field that does not exist or is not optional.
    """
    try:
        value = getattr(flag_values, name)
        if value is not None:
            value.keys()  # a file that failed to load raises on first use
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
    paths = _NONE_OVERRIDES.get(name, [])
    if paths and value is None:
        raise ConfigFileError(f"--{name}.{paths[0]}=None needs --{name}=FILE")
    if value is None:
        return None
    value = apply_none_overrides(value, paths, flag=name)
    if "model" in value:
        resolve_model_size(value.model)
    return value


# ---------------------------------------------------------------------------------------
# Running a command.


def fail(message: str, code: int, *, last_words: bool = False) -> int:
    """Prints ``error: message`` (one line) on stderr and returns ``code``. Exceptions of
    background threads (orbax, tensorstore) that follow the failure are not printed; with
    ``last_words`` (a process about to exit) nothing else reaches stderr after the line."""
    import os
    import threading

    line = f"error: {' '.join(str(message).split())}\n"
    sys.stderr.flush()
    if not last_words:
        print(line, end="", file=sys.stderr, flush=True)
        return code
    threading.excepthook = lambda args: None
    sys.unraisablehook = lambda info: None
    try:
        # From here on the process only leaves: whatever background threads print (an orbax /
        # tensorstore asyncio loop shutting down) goes nowhere, and the error line, written to
        # the original stderr, is the last thing a person sees.
        original = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        os.write(original, line.encode())
    except OSError:
        print(line, end="", file=sys.stderr, flush=True)
    return code


def guarded(fn: Callable[[], int | None], *, last_words: bool = False) -> int:
    """Calls ``fn`` and returns its exit status; a :class:`~segnode_jax.errors.SegnodeError`
    becomes one ``error:`` line and its ``exit_code``, Ctrl-C exit status 130."""
    try:
        return int(fn() or 0)
    except SegnodeError as e:
        return fail(str(e), e.exit_code, last_words=last_words)
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr, flush=True)
        return 130


def _exit(code: int) -> None:
    """Leaves the process with ``code``. After a failure, background threads of orbax /
    tensorstore may still hold an asyncio loop whose shutdown at interpreter exit prints
    "Event loop is closed" tracebacks: the error line is already out and every checkpoint
    save has been waited for, so the process ends without running that shutdown."""
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        import os

        # The error line is out: anything a background thread prints now (an orbax/asyncio
        # loop shutting down, "Event loop is closed") would only bury it.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
        except OSError:
            pass
        os._exit(code)
    sys.exit(0)


def run(main: Callable[[list[str]], int | None], *, usage: str) -> None:
    """Runs an absl entry point ``main(argv) -> exit status``.

    Flag errors (a missing required flag, a value of the wrong type) and unexpected
    positional arguments are bad input: one ``error:`` line with ``usage``, exit 2.
    """
    from absl import app, flags

    def parse(argv):
        argv = split_none_overrides(argv)
        # ml_collections reads sys.argv itself to find the --config.* overrides to define.
        sys.argv[:] = argv
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            _exit(fail(f"{e}. Usage: {usage}", 2, last_words=True))
        except (OSError, ImportError, SyntaxError) as e:  # ml_collections: the config file does not load
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            detail = next(
                (line for line in reversed(lines) if "Errno" in line or "Error" in line), lines[-1] if lines else ""
            )
            where = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "FILE")
            _exit(
                fail(
                    f"cannot load --config={where}: {detail}. Pass an existing config file such as "
                    f"configs/camvid.py (see the configs/ folder). Usage: {usage}",
                    2,
                    last_words=True,
                )
            )
        except (AttributeError, KeyError) as e:  # ml_collections: an override of a field that does not exist
            _exit(
                fail(
                    f"unknown config field in the command line ({str(e).strip(chr(34))}): check the spelling "
                    f"of the --config.* flags against the config file. Usage: {usage}",
                    2,
                    last_words=True,
                )
            )
        except (ValueError, TypeError) as e:  # ml_collections: a value of the wrong type
            _exit(fail(f"invalid command-line value: {e}. Usage: {usage}", 2, last_words=True))

    def body(argv):
        if len(argv) > 1:
            _exit(fail(f"unexpected arguments: {' '.join(argv[1:])}. Usage: {usage}", 2, last_words=True))
        use_compilation_cache()
        _exit(guarded(lambda: main(argv), last_words=True))

    app.run(body, flags_parser=parse)
