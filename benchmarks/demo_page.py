"""The demo page driven by a real headless browser: start ``demo.py``, upload an image, wait for
the result, read the overlay the page shows, take a screenshot.

    python -m benchmarks.demo_page --ckpt pretrained/camvid_small --image CamVid/test/0001TP_008550.png \
        --examples CamVid/test --screenshot docs/images/demo.png

writes the screenshot and ``benchmarks/results/demo_page.json`` (when, where, the image, what
the page reported: solve, NFE, milliseconds, class shares; seconds from upload to result).
``tests/test_demo.py`` uses the same functions. Needs the demo's packages and a browser:
``bash scripts/install_demo.sh`` (chromium + chromium-driver).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def browser_missing() -> str | None:
    """Why no browser test can run here (None: chromium, chromedriver and selenium are present)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (bash scripts/install_demo.sh)"
    for tool in ("chromedriver", "chromium"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH (bash scripts/install_demo.sh installs chromium + chromium-driver as root)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def demo_server(ckpt: str, *extra: str, timeout: float = 300.0):
    """``python demo.py --ckpt ckpt`` on a free port of 127.0.0.1; yields ``(address, output)``
    once the page answers (``output()``: what the server printed so far) and stops it after.
    Raises RuntimeError with its output if it exits or does not answer."""
    port = free_port()
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "demo.py"), "--ckpt", ckpt, "--port", str(port), *extra],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def output() -> str:
        log.flush()
        log.seek(0)
        return log.read()

    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"demo.py exited with {proc.returncode}:\n{output()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"demo.py did not answer on {url} within {timeout:.0f} s:\n{output()[-3000:]}")
            time.sleep(1.0)
        yield url, output
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def headless_browser(width: int = 1400, height: int = 1000):
    """Chromium through chromedriver, headless, a ``width`` x ``height`` window."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _status(driver) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, "#status")
    return found[0].text.strip() if found else ""


def open_page(driver, url: str, timeout: float = 60.0) -> None:
    """Loads the page and waits for its upload field."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))


def upload(driver, path: str, timeout: float = 300.0) -> dict:
    """Uploads the file at ``path`` and waits for the page's answer: ``{"status", "overlay"
    (uint8 RGB as shown, or None after an error), "legend" [(class, share text)], "seconds"}``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if not driver.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"):
        clear_upload(driver)
        WebDriverWait(driver, timeout).until(lambda d: "Drop an image" in _status(d))
    before = _status(driver)
    old_src = _overlay_src(driver)
    field = driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]")
    start = time.time()
    field.send_keys(os.path.abspath(path))

    def answered(d):
        text = _status(d)
        return text != before and ("error:" in text or (" ms" in text and _overlay_src(d) not in (None, old_src)))

    WebDriverWait(driver, timeout, poll_frequency=0.25).until(answered)
    seconds = time.time() - start
    status = _status(driver)
    src = _overlay_src(driver) if "error:" not in status else None
    overlay = None
    if src:
        from PIL import Image

        with urllib.request.urlopen(src, timeout=30) as r:
            overlay = np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))
    legend = [
        (row.get_attribute("data-class"), row.find_element(By.CSS_SELECTOR, ".share").text)
        for row in driver.find_elements(By.CSS_SELECTOR, "#legend tr.legend-row")
    ]
    return {"status": status, "overlay": overlay, "legend": legend, "seconds": seconds}


def _overlay_src(driver) -> str | None:
    from selenium.webdriver.common.by import By

    imgs = driver.find_elements(By.CSS_SELECTOR, "#overlay img")
    return imgs[0].get_attribute("src") if imgs else None


def clear_upload(driver, timeout: float = 30.0) -> None:
    """Empties the upload field (its Clear button) so that it takes a file again."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for button in driver.find_elements(By.CSS_SELECTOR, "#upload button[aria-label='Clear']"):
        button.click()
    WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="pretrained/camvid_small")
    p.add_argument("--image", required=True, help="the image to upload")
    p.add_argument("--examples", default=None, help="demo.py --examples")
    p.add_argument("--screenshot", default=os.path.join(REPO, "docs", "images", "demo.png"))
    p.add_argument("--output", default=os.path.join(REPO, "benchmarks", "results", "demo_page.json"))
    args = p.parse_args(argv)
    from benchmarks import report

    missing = browser_missing()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    extra = ["--examples", args.examples] if args.examples else []
    with demo_server(args.ckpt, *extra) as (url, _), headless_browser() as driver:
        open_page(driver, url)
        # The first upload compiles the model for this size; the second shows the warm time.
        first = upload(driver, args.image)
        second = upload(driver, args.image)
        for answer in (first, second):
            if "error:" in answer["status"]:
                print(f"error: the page answered {answer['status']!r}", file=sys.stderr)
                return 1
        time.sleep(1.0)
        os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)
        driver.save_screenshot(args.screenshot)
    record = {
        "machine": report.machine(),
        "ckpt": args.ckpt,
        "image": os.path.basename(args.image),
        "status_first": first["status"],
        "status": second["status"],
        "legend": second["legend"],
        "seconds_upload_to_result_first": round(first["seconds"], 2),
        "seconds_upload_to_result_second": round(second["seconds"], 2),
        "screenshot": os.path.relpath(os.path.abspath(args.screenshot), REPO),
    }
    report.write_json_at(args.output, record)
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
