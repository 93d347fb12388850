"""The label value of ignored pixels, for data, losses and metrics alike (one home)."""

IGNORE_INDEX = 255
