"""``python tests/training/kill_during_save.py TRAIN_FLAGS...``: runs ``train.py`` in this process
and SIGKILLs the process the moment an asynchronous checkpoint save of step >= ``$KILL_FROM_STEP``
is in flight -- while orbax's temporary folder (``checkpoints/<step>.orbax-checkpoint-tmp``)
exists, before the save is committed. A watcher thread polls the folder every millisecond; the
training runs unchanged (nothing in segnode_jax or orbax is patched)."""

import os
import runpy
import signal
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _watch(checkpoints_dir: str, from_step: int) -> None:
    while True:
        try:
            names = os.listdir(checkpoints_dir)
        except FileNotFoundError:
            names = []
        for name in names:
            step, _, rest = name.partition(".")
            if rest and step.isdigit() and int(step) >= from_step:
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.001)


if __name__ == "__main__":
    workdir = next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--workdir="))
    threading.Thread(
        target=_watch, args=(os.path.join(workdir, "checkpoints"), int(os.environ["KILL_FROM_STEP"])), daemon=True
    ).start()
    script = os.path.join(REPO, "train.py")
    sys.argv = [script, *sys.argv[1:]]
    sys.path.insert(0, REPO)
    runpy.run_path(script, run_name="__main__")
