"""``KILL_AT=MOMENT KILL_FROM_STEP=N python tests/training/kill_at.py TRAIN_FLAGS...``: runs
``train.py`` in this process and SIGKILLs the process at one moment of the first step >= N
where it happens:

* ``async_save``: while the asynchronous save of a checkpoint is in flight (orbax's temporary
  folder ``checkpoints/<step>.orbax-checkpoint-tmp`` exists, before the commit);
* ``after_commit``: as soon as a checkpoint is committed (``checkpoints/<step>`` exists), before
  anything else of that step (its validation) happens;
* ``best_save``: while the best checkpoint of a validation is being written
  (``best/<step>.orbax-checkpoint-tmp`` exists);
* ``metrics_append``: in the middle of appending a training record to ``metrics.jsonl``: half
  of the line is written and flushed, then the process dies (what a kill during ``write()``
  leaves on disk). This moment cannot be caught from outside the write, so it is the one
  place where the harness wraps our code (``MetricWriter.write``); the training is unchanged.

The folder moments are watched by a thread polling every millisecond; nothing in segnode_jax
or orbax is patched for them.
"""

import os
import runpy
import signal
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FOLDERS = {"async_save": ("checkpoints", True), "after_commit": ("checkpoints", False), "best_save": ("best", True)}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(folder: str, in_flight: bool, from_step: int) -> None:
    while True:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            names = []
        for name in names:
            step, _, rest = name.partition(".")
            if step.isdigit() and int(step) >= from_step and bool(rest) == in_flight:
                _die()
        time.sleep(0.001)


def _cut_a_metrics_append(from_step: int) -> None:
    sys.path.insert(0, REPO)
    from segnode_jax import metrics_log

    write = metrics_log.MetricWriter.write

    def write_then_die(self, step, scalars, *, split="train"):
        if split == "train" and int(step) >= from_step and self.active:
            write(self, step, scalars, split=split)  # the whole record, then cut it in half
            self._file.close()
            with open(self.path, "rb+") as f:
                f.seek(0, os.SEEK_END)
                end = f.tell()
                f.seek(0)
                data = f.read()
                start = data.rstrip(b"\n").rfind(b"\n") + 1
                f.truncate(start + (end - start) // 2)
            _die()
        return write(self, step, scalars, split=split)

    metrics_log.MetricWriter.write = write_then_die


if __name__ == "__main__":
    moment, from_step = os.environ["KILL_AT"], int(os.environ["KILL_FROM_STEP"])
    workdir = next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--workdir="))
    if moment == "metrics_append":
        _cut_a_metrics_append(from_step)
    else:
        sub, in_flight = FOLDERS[moment]
        threading.Thread(target=_watch, args=(os.path.join(workdir, sub), in_flight, from_step), daemon=True).start()
    script = os.path.join(REPO, "train.py")
    sys.argv = [script, *sys.argv[1:]]
    sys.path.insert(0, REPO)
    runpy.run_path(script, run_name="__main__")
