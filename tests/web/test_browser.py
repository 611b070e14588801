"""The web app in a real browser: Debian's chromium (headless, driven by chromium-driver through Selenium)
against ``run.py serve`` in a subprocess, on the demo clip played as a looping live camera, with a
password set. Also the identify API against ``run.py identify --json`` on the same models, and SIGTERM.

Set ``ADAFACE_WEB_SCREENSHOT=docs/dashboard.png`` to keep the dashboard screenshot.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import REPO

# a run.py subprocess with the real models and a headless browser, with time bounds (feed within 20 s)
pytestmark = [pytest.mark.slow, pytest.mark.serial]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
BROWSER_SKIP = "browser tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
PASSWORD = "demo-password-for-tests"
EILEEN = "eileen_collins"


@dataclass
class Served:
    url: str
    proc: subprocess.Popen
    config: Path
    root: Path
    log: Path

    def api(
        self, path: str, token: str | None = None, data: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, headers=headers or {})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def token(self) -> str:
        status, body = self.api("/api/token", data=b"password=" + PASSWORD.encode())
        assert status == 200, body
        return json.loads(body)["token"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_site(root: Path, cfg: Path, *extra: str, password: str = PASSWORD) -> Iterator[Served]:
    """``run.py serve --config CFG --web 127.0.0.1:PORT EXTRA`` with WEB_PASSWORD=``password``, once it answers
    /api/health (180 s at most); killed and ``root`` removed afterwards. For module fixtures (a context manager)."""
    port = _free_port()
    log = root / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "run.py", "serve", "--config", str(cfg), "--web", f"127.0.0.1:{port}", *extra],
            cwd=REPO,
            env={**os.environ, "WEB_PASSWORD": password},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    site = Served(f"http://127.0.0.1:{port}/", proc, cfg, root, log)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"run.py serve exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(OSError):
                if site.api("/api/health")[0] == 200:
                    break
            assert time.monotonic() < deadline, "run.py serve did not answer in 180 s:\n" + log.read_text()[-3000:]
            time.sleep(0.5)
        yield site
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def chromium(window: str = "1280,800") -> Iterator[Any]:
    """A headless Debian chromium driven by chromium-driver, with a profile of its own (skips without
    them); quit and its profile removed afterwards. For module fixtures (a context manager)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(BROWSER_SKIP)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={window}",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    root = Path(tempfile.mkdtemp(prefix="web-serve-"))
    cfg = root / "config.yaml"
    cfg.write_text(
        "profile: cpu\n"
        f"recognition:\n  checkpoints_dir: {REPO / 'checkpoints'}\n  checkpoint: {root / 'none.ckpt'}\n"
        f"outputs:\n  dir: {root / 'rec'}\n"
        "web:\n  password: ${WEB_PASSWORD}\n"
    )
    with serve_site(root, cfg) as site:
        yield site


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[object]:
    with chromium() as driver:
        yield driver


def _wait(driver: object, predicate: object, timeout: float, message: str) -> object:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(predicate, message)  # type: ignore[arg-type]


def test_the_login_page_blocks_an_anonymous_visitor(served: Served, browser: object) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(served.url)  # type: ignore[attr-defined]
    assert "/login" in driver.current_url  # type: ignore[attr-defined]
    assert driver.find_elements(By.CSS_SELECTOR, "input[type=password]")  # type: ignore[attr-defined]
    assert not driver.find_elements(By.CSS_SELECTOR, "[data-stream]")  # type: ignore[attr-defined]
    driver.get(served.url + "events?person=" + EILEEN)  # type: ignore[attr-defined]
    assert "/login" in driver.current_url and "events-table" not in driver.page_source  # type: ignore[attr-defined]
    assert served.api("/api/streams")[0] == 401
    assert served.api("/streams/demo/latest.jpg")[0] == 401
    assert served.api("/api/health")[0] == 200


def test_a_wrong_then_the_right_password(served: Served, browser: object) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(served.url + "login?next=/")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "password").send_keys("not the password")  # type: ignore[attr-defined]
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()  # type: ignore[attr-defined]
    assert "wrong password" in driver.find_element(By.ID, "login-error").text  # type: ignore[attr-defined]
    driver.find_element(By.ID, "password").send_keys(PASSWORD)  # type: ignore[attr-defined]
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-stream="demo"]'), 15, "no dashboard after login")
    cookies = {c["name"]: c for c in driver.get_cookies()}  # type: ignore[attr-defined]
    assert cookies["adaface_session"]["httpOnly"] is True and cookies["adaface_session"]["sameSite"] == "Strict"


def _png_pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.int16)


def test_the_live_image_changes_between_two_screenshots(served: Served, browser: object) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(served.url)  # type: ignore[attr-defined]
    live = driver.find_element(By.CSS_SELECTOR, '[data-stream="demo"] img.live')  # type: ignore[attr-defined]
    _wait(driver, lambda d: live.get_property("naturalWidth") > 0, 20, "the live image never loaded")
    assert live.get_property("naturalWidth") == 960
    first = _png_pixels(live.screenshot_as_png)
    time.sleep(1.5)
    second = _png_pixels(live.screenshot_as_png)
    assert first.shape == second.shape
    changed = np.mean(np.abs(first - second).max(axis=2) > 16)
    assert changed > 0.005, f"only {changed:.2%} of the live image changed in 1.5 s"
    _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, '[data-field="state"]').text == "up", 10, "stream not up")
    fps = float(driver.find_element(By.CSS_SELECTOR, '[data-field="fps"]').text)  # type: ignore[attr-defined]
    assert fps > 0


def test_the_event_feed_shows_eileen_collins_within_20_s(served: Served, browser: object) -> None:
    """On a fresh page the feed starts with the last events, then follows: a new identity event of
    Eileen Collins (the demo loops every 6 s, each loop a new track) arrives live within 20 s."""
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(served.url)  # type: ignore[attr-defined]
    started = time.monotonic()
    selector = f'#feed li[data-person="{EILEEN}"]'
    _wait(driver, lambda d: d.find_elements(By.ID, "feed-state")[0].text == "live", 10, "the feed did not connect")
    time.sleep(0.5)  # the backlog
    seen = max([int(li.get_attribute("data-seq")) for li in driver.find_elements(By.CSS_SELECTOR, "#feed li")] or [0])  # type: ignore[attr-defined]

    def live_eileen(d: object) -> list:
        items = d.find_elements(By.CSS_SELECTOR, selector)  # type: ignore[attr-defined]
        return [li for li in items if int(li.get_attribute("data-seq")) > seen and li.is_displayed()]

    _wait(driver, live_eileen, 20, f"no new {EILEEN} event in the feed within 20 s")
    seconds = time.monotonic() - started
    item = live_eileen(driver)[0]
    assert EILEEN in item.text
    named = [
        li
        for li in driver.find_elements(By.CSS_SELECTOR, selector)
        if li.get_attribute("data-kind") == "identity_assigned"
    ]  # type: ignore[attr-defined]
    assert named
    thumb = named[0].find_element(By.CSS_SELECTOR, "img.thumb")
    _wait(driver, lambda d: thumb.get_property("naturalWidth") > 0, 10, "the snapshot thumbnail did not load")
    print(f"a live {EILEEN} event in the feed {seconds:.1f} s after opening the page")
    path = os.environ.get("ADAFACE_WEB_SCREENSHOT")
    if path:
        driver.save_screenshot(str(REPO / path))  # type: ignore[attr-defined]


def test_the_events_page_filters_by_person(served: Served, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.get(served.url + "events")  # type: ignore[attr-defined]
    person = driver.find_element(By.ID, "person")  # type: ignore[attr-defined]
    person.send_keys(EILEEN)
    Select(driver.find_element(By.ID, "kind")).select_by_value("identity_assigned")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "search").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: "person=" + EILEEN in d.current_url, 10, "the form did not submit")
    names = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#events-table td.person")]  # type: ignore[attr-defined]
    assert names and set(names) == {EILEEN}
    thumbs = driver.find_elements(By.CSS_SELECTOR, "#events-table img.thumb")  # type: ignore[attr-defined]
    assert thumbs
    _wait(driver, lambda d: thumbs[0].get_property("naturalWidth") > 0, 10, "event thumbnail did not load")
    driver.get(served.url + "events?person=unknown")  # type: ignore[attr-defined]
    others = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#events-table td.person")]  # type: ignore[attr-defined]
    assert others and EILEEN not in others


def _eileen_photo(served: Served) -> Path:
    photos = sorted((served.root / "rec" / ".demo" / "demo_gallery" / EILEEN).glob("*.png"))
    assert photos, "demo gallery missing"
    return photos[0]


def _multipart(path: Path) -> tuple[bytes, str]:
    boundary = "adaface-test-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\nContent-Type: image/png\r\n\r\n'
    return (
        head.encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def test_identify_api_gives_the_cli_json(served: Served) -> None:
    """The same list as `run.py identify --json` (same config, same gallery), without loading anything."""
    photo = _eileen_photo(served)
    token = served.token()
    body, kind = _multipart(photo)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        status, answer = served.api("/api/identify", token=token, data=body, headers={"Content-Type": kind})
        timings.append(time.perf_counter() - started)
        assert status == 200, answer
    api = json.loads(answer)
    gallery = served.root / "rec" / ".demo" / "demo_gallery"
    started = time.perf_counter()
    cli = subprocess.run(
        [
            sys.executable,
            "run.py",
            "identify",
            str(photo),
            "--gallery",
            str(gallery),
            "--json",
            "--config",
            str(served.config),
        ],
        cwd=REPO,
        env={**os.environ, "WEB_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=180,
    )
    cli_s = time.perf_counter() - started
    assert cli.returncode == 0, cli.stderr[-2000:]
    expected = json.loads(cli.stdout)
    assert [f["person"] for f in api] == [f["person"] for f in expected] == [EILEEN]
    for a, e in zip(api, expected, strict=True):
        assert a["box"] == pytest.approx(e["box"], abs=0.05)
        assert a["score"] == pytest.approx(e["score"], abs=1e-4) and a["margin"] == pytest.approx(e["margin"], abs=1e-4)
    print(f"identify: API {min(timings) * 1000:.0f} ms (best of 3), CLI {cli_s:.1f} s")


def test_sigterm_stops_serve_with_143(served: Served) -> None:
    started = time.monotonic()
    os.killpg(served.proc.pid, signal.SIGTERM)
    code = served.proc.wait(20)
    assert code == 143, served.log.read_text()[-2000:]
    assert time.monotonic() - started < 10
    assert PASSWORD not in served.log.read_text()
