"""Writes the .pth fixtures of tests/convert with real PyTorch (run once; the files are
committed, the tests do not need torch):

    python3.11 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchvenv/bin/python -m tests.convert.make_fixtures   # from the repository root

hrnet_tiny_{zip,legacy}.pth: official-layout HRNet state_dict (tests/convert/official.py,
``TINY``) saved in PyTorch's zip format and in its legacy format, as ``torch.save`` of
``model.state_dict()`` writes them (OrderedDict with ``_metadata``).
hrnet_ocr_tiny.pth: the same backbone with HRNet-OCR's head (``TINY_OCR``).
hrnet_tiny_training_ckpt.pth: a training checkpoint as HRNet-Semantic-Segmentation writes it.
The whole-network references come from the official model code itself:
tests/convert/make_official_fixtures.py.
"""

import collections
import os
import sys

import torch

if not __package__:  # run by path: the imports below need the repository root, which `python -m` puts on the path
    print("error: run it as a module from the repository root: python -m tests.convert.make_fixtures", file=sys.stderr)
    sys.exit(2)

from tests.convert.official import state_dict  # noqa: E402
from tests.convert.spec import TINY, TINY_OCR  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def main():
    os.makedirs(HERE, exist_ok=True)
    sd = collections.OrderedDict((k, torch.from_numpy(v.copy())) for k, v in state_dict(**TINY).items())
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    torch.save(sd, os.path.join(HERE, "hrnet_tiny_zip.pth"))
    torch.save(sd, os.path.join(HERE, "hrnet_tiny_legacy.pth"), _use_new_zipfile_serialization=False)
    # A training checkpoint as HRNet-Semantic-Segmentation writes it (FullModel: "model."
    # prefixes, wrapped with the epoch and optimizer state).
    wrapped = {"epoch": 3, "state_dict": collections.OrderedDict((f"model.{k}", v) for k, v in sd.items())}
    torch.save(wrapped, os.path.join(HERE, "hrnet_tiny_training_ckpt.pth"))
    ocr_sd = state_dict(**TINY_OCR)
    sd_ocr = collections.OrderedDict((k, torch.from_numpy(v.copy())) for k, v in ocr_sd.items())
    sd_ocr._metadata = collections.OrderedDict([("", {"version": 1})])
    torch.save(sd_ocr, os.path.join(HERE, "hrnet_ocr_tiny.pth"))
    for name in sorted(os.listdir(HERE)):
        print(name, os.path.getsize(os.path.join(HERE, name)))


if __name__ == "__main__":
    main()
