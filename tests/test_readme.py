"""The README's Python API block, executed verbatim: what a user copies must run and print
what its comments promise."""

import os
import re

import numpy as np
import pytest

from tests.conftest import REPO


def readme_python_block(heading: str) -> str:
    """The first ```python block after the README heading ``heading``."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index(f"\n{heading}\n")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


@pytest.mark.slow
def test_readme_python_api_block_runs_verbatim(monkeypatch, capsys):
    code = readme_python_block("## Python API")
    monkeypatch.chdir(REPO)  # the README says: run from the repository root
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()

    # print(logits.shape, aux["ode"]["nfe"])  # (2, 64, 96, 5) and the solver's NFE
    shape, nfe = re.fullmatch(r"(\(.*\)) (\d+)", printed[0]).groups()
    assert shape == "(2, 64, 96, 5)"
    assert int(nfe) > 8 and (int(nfe) - 1) % 6 == 0  # adaptive Dopri5: 6 evaluations per step + 1
    cfg = namespace["cfg"]
    # count_params (from shapes only) against the parameters init actually made.
    made = sum(int(np.size(leaf)) for leaf in __import__("jax").tree_util.tree_leaves(namespace["variables"]["params"]))
    assert printed[1] == str(made) and made > 10_000
    # The solve was switched to RK4 x 2 on the same config: 4 evaluations per step.
    assert int(namespace["aux"]["ode"]["nfe"]) == 8
    labels, probs = namespace["labels"], namespace["probs"]
    assert [lab.shape for lab in labels] == [(70, 90), (40, 90)] and all(lab.dtype == np.int32 for lab in labels)
    classes = int(cfg.model.num_classes)
    assert [p.shape for p in probs] == [(70, 90, classes), (40, 90, classes)]
    np.testing.assert_allclose(probs[0].sum(-1), 1.0, atol=1e-4)
    # The shipped CamVid model loads and segments a photo at its own size.
    street = namespace["street_labels"]
    assert street.shape == (360, 480) and street.dtype == np.int32 and 0 <= street.min() and street.max() < 11
    assert namespace["camvid_cfg"].model.size == "small" and namespace["camvid_cfg"].data.name == "camvid"
