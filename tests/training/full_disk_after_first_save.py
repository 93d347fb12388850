"""``python tests/training/full_disk_after_first_save.py TRAIN_FLAGS...``: runs ``train.py`` in this
process with every orbax checkpoint save after the first raising ENOSPC (a disk that fills up
after one checkpoint), for hosts where a real small tmpfs cannot be mounted. Only orbax's
``CheckpointManager.save`` is replaced; segnode_jax runs unchanged."""

import errno
import os
import runpy
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
    import orbax.checkpoint as ocp

    real_save, calls = ocp.CheckpointManager.save, []

    def save(self, step, *args, **kwargs):
        if "checkpoints" in str(self.directory):
            calls.append(step)
            if len(calls) > 1:
                # The disk fills while this save writes, after the previous one was committed.
                self.wait_until_finished()
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, step, *args, **kwargs)

    ocp.CheckpointManager.save = save
    script = os.path.join(REPO, "train.py")
    sys.argv = [script, *sys.argv[1:]]
    sys.path.insert(0, REPO)
    runpy.run_path(script, run_name="__main__")
