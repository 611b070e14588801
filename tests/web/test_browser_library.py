"""The library's pages in a real browser: Debian's chromium (headless, chromium-driver through Selenium)
against ``run.py serve`` in a subprocess, on the demo clip played as a looping live camera with an
*empty* gallery (so the demo's two people are unknown faces in the store), with a password set.

- /people: upload photos of a new person (three of Scarlett Johansson from deepface's test set, one photo
  of two people, one without a face) and see each photo's status; bad input (a text file, an empty file,
  one over ``web.max_upload_mb``, a name with ``/``) shows a clear error and leaves the gallery folder
  byte for byte as it was; a rename.
- /unknowns: the demo's faces grouped, with crops, their size and blur; name the largest group, then the
  events page shows the new name (its events are relabelled); the stream names the person from then on,
  and "not this person" on such an event, once its track has ended, marks it wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.conftest import REPO
from tests.web.test_browser import Served, _multipart, _wait, chromium, serve_site

pytestmark = [pytest.mark.slow, pytest.mark.serial]

PASSWORD = "library-password-for-tests"
SCARLETT = "deepface/tests/unit/dataset"
PERSON = "Scarlett"
VISITOR = "Visitor"


def _token(served: Served) -> str:
    status, body = served.api("/api/token", data=b"password=" + PASSWORD.encode())
    assert status == 200, body
    return str(json.loads(body)["token"])


def tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    root = Path(tempfile.mkdtemp(prefix="web-library-"))
    (root / "gallery").mkdir()
    cfg = root / "config.yaml"
    cfg.write_text(
        "profile: cpu\n"
        f"recognition:\n  checkpoints_dir: {REPO / 'checkpoints'}\n  checkpoint: {root / 'none.ckpt'}\n"
        f"outputs:\n  dir: {root / 'rec'}\n  annotated_video: false\n"
        "web:\n  password: ${WEB_PASSWORD}\n  max_upload_mb: 1\n"
    )
    with serve_site(root, cfg, "--gallery", str(root / "gallery"), password=PASSWORD) as site:
        yield site


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[Any]:
    from selenium.webdriver.common.by import By

    with chromium("1280,1000") as driver:
        driver.get(served.url + "login?next=/people")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
        _wait(driver, lambda d: d.find_elements(By.ID, "new-person"), 15, "no people page after login")
        yield driver


@pytest.fixture(scope="module")
def files(served: Served) -> dict[str, Path]:
    """Files to upload from the browser (made in the served folder, never in the repository)."""
    folder = served.root / "uploads"
    folder.mkdir()
    wall = np.zeros((240, 320, 3), np.uint8)
    wall[:] = (40, 120, 200)
    cv2.imwrite(str(folder / "wall.png"), wall)
    (folder / "notes.jpg").write_text("these are notes, not a photo\n" * 10)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "big.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(1_200_000))
    return {p.name: p for p in folder.iterdir()}


def _card(driver: Any, person: str) -> Any:
    from selenium.webdriver.common.by import By

    for card in driver.find_elements(By.CSS_SELECTOR, "article.person"):
        if card.get_attribute("data-person") == person:
            return card
    return None


def _statuses(driver: Any, person: str) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    card = _card(driver, person)
    assert card is not None, f"no card of {person}"
    return {
        li.get_attribute("data-file"): li.find_element(By.CSS_SELECTOR, '[data-field="status"]').text
        for li in card.find_elements(By.CSS_SELECTOR, "li.photo")
    }


def _message(driver: Any, contains: str, timeout: float = 60) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def shown(d: Any) -> str | bool:
        try:  # the page reloads after a change: an element of the old page goes stale
            node = d.find_elements(By.ID, "message")
            return node[0].text if node and node[0].is_displayed() and contains in node[0].text else False
        except StaleElementReferenceException:
            return False

    return str(_wait(driver, shown, timeout, f"no message with {contains!r}"))


def _form_error(driver: Any, form: Any, contains: str) -> str:
    from selenium.webdriver.common.by import By

    box = form.find_element(By.XPATH, "ancestor-or-self::*[contains(@class, 'card')][1]").find_element(
        By.CSS_SELECTOR, '[data-field="error"]'
    )
    _wait(driver, lambda d: contains in box.text, 30, f"no error with {contains!r} (shown: {box.text!r})")
    return str(box.text)


def test_upload_photos_for_a_new_person_and_see_each_photos_status(
    served: Served, browser: Any, files: dict[str, Path], shared_data: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    photos = [shared_data / SCARLETT / f"img{n}.jpg" for n in (8, 9, 47)]
    two = shared_data / "face_recognition/examples/two_people.jpg"
    for path in [*photos, two, shared_data / SCARLETT / "img48.jpg"]:
        if not path.is_file():
            pytest.skip(f"missing shared data file {path}")
    driver.get(served.url + "people")
    assert driver.find_elements(By.ID, "nobody")  # an empty gallery
    driver.find_element(By.ID, "new-name").send_keys(PERSON)
    driver.find_element(By.ID, "new-files").send_keys("\n".join(str(p) for p in [*photos, two, files["wall.png"]]))
    started = time.monotonic()
    driver.find_element(By.ID, "new-submit").click()
    text = _message(driver, f"5 photos added to {PERSON}")
    print(f"5 photos uploaded and enrolled in {time.monotonic() - started:.1f} s: {text}")
    assert "3 used" in text and "two_people.jpg (two faces of similar size)" in text and "wall.png (no face)" in text
    statuses = _statuses(driver, PERSON)
    assert statuses == {
        "img8.jpg": "used",
        "img9.jpg": "used",
        "img47.webp": "used",  # stored under the extension of what it really is
        "two_people.jpg": "rejected: two faces of similar size",
        "wall.png": "rejected: no face",
    }
    card = _card(driver, PERSON)
    assert "enrolled" in card.text and "3 used" in card.text and "2 rejected" in card.text
    thumbs = card.find_elements(By.CSS_SELECTOR, "li.photo img")
    _wait(driver, lambda d: all(t.get_property("naturalWidth") > 0 for t in thumbs), 15, "photos did not load")
    assert sorted(p.name for p in (served.root / "gallery" / PERSON).iterdir()) == sorted(statuses)
    body, kind = _multipart(shared_data / SCARLETT / "img48.jpg")  # another photo of her: the API knows her now
    status, answer = served.api("/api/identify", token=_token(served), data=body, headers={"Content-Type": kind})
    assert status == 200 and [f["person"] for f in json.loads(answer)] == [PERSON], answer


def test_bad_input_on_the_people_page_shows_clear_errors_and_leaves_the_gallery_untouched(
    served: Served, browser: Any, files: dict[str, Path], shared_data: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    gallery = served.root / "gallery"
    before = tree(gallery)
    for name, upload, error in [
        ("Nobody", "notes.jpg", "'notes.jpg': not an image"),
        ("Nobody", "empty.jpg", "'empty.jpg': empty upload"),
        ("Nobody", "big.jpg", "is over the limit of 1,000,000 (web.max_upload_mb)"),
        ("a/b", "wall.png", "the name may not contain /"),
        (".hidden", "wall.png", "may not start or end with a dot"),
    ]:
        driver.get(served.url + "people")
        new = driver.find_element(By.ID, "new-person")
        driver.find_element(By.ID, "new-name").send_keys(name)
        driver.find_element(By.ID, "new-files").send_keys(str(files[upload]))
        driver.find_element(By.ID, "new-submit").click()
        _form_error(driver, new, error)
        assert tree(gallery) == before, (name, upload)
    card = _card(driver, PERSON)
    rename = card.find_element(By.CSS_SELECTOR, "form.rename")
    for bad, error in [("x/y", "may not contain /"), ("..", "may not start or end with a dot"), (PERSON, "already")]:
        field = rename.find_element(By.NAME, "name")
        field.clear()
        field.send_keys(bad)
        rename.find_element(By.TAG_NAME, "button").click()
        _form_error(driver, rename, error)
        assert tree(gallery) == before, bad
    assert served.api("/api/people/Scarlett/photos/..%2F..%2Fconfig.yaml", token=_token(served))[0] == 400
    field = rename.find_element(By.NAME, "name")
    field.clear()
    field.send_keys("Scarlett J")
    rename.find_element(By.TAG_NAME, "button").click()
    _message(driver, f"{PERSON} is now Scarlett J")
    assert _card(driver, "Scarlett J") is not None and _card(driver, PERSON) is None
    assert sorted(tree(gallery)) == sorted(k.replace(PERSON, "Scarlett J", 1) for k in before)


def test_name_a_group_on_unknowns_then_the_events_page_shows_the_name(served: Served, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    deadline = time.monotonic() + 90
    while True:  # the demo's tracks are stored as they end (a loop is 6 s)
        driver.get(served.url + "unknowns")
        groups = driver.find_elements(By.CSS_SELECTOR, "article.group")
        if groups and any(g.find_elements(By.CSS_SELECTOR, "li.crop img") for g in groups):
            break
        assert time.monotonic() < deadline, "no group of unknown faces with a crop in 90 s"
        time.sleep(3)
    group = max(groups, key=lambda g: int(g.find_element(By.CSS_SELECTOR, '[data-field="count"]').text))
    crops = group.find_elements(By.CSS_SELECTOR, "ul.crops > li.crop")
    assert crops
    sizes = [int(c.find_element(By.CSS_SELECTOR, '[data-field="size"]').text.removesuffix(" px")) for c in crops]
    assert all(s >= 40 for s in sizes)  # under the enrolment gate: never offered
    assert all(c.find_element(By.CSS_SELECTOR, '[data-field="blur"]').text.startswith("blur ") for c in crops)
    thumb = crops[0].find_element(By.TAG_NAME, "img")
    _wait(driver, lambda d: thumb.get_property("naturalWidth") > 0, 15, "the crop did not load")
    gid = group.get_attribute("data-group")
    form = group.find_element(By.CSS_SELECTOR, "form.name")
    form.find_element(By.NAME, "person").send_keys(VISITOR)
    form.find_element(By.TAG_NAME, "button").click()
    text = _message(driver, f"group {gid} is {VISITOR}")
    print(text)
    assert not [
        g for g in driver.find_elements(By.CSS_SELECTOR, "article.group") if g.get_attribute("data-group") == gid
    ]

    driver.get(served.url + f"events?person={VISITOR}")
    names = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#events-table td.person")]
    assert names and set(names) == {VISITOR}
    kinds = {td.text for td in driver.find_elements(By.CSS_SELECTOR, "#events-table tr.event td:nth-child(4)")}
    assert "track ended" in kinds


def test_not_this_person_on_the_events_page(served: Served, browser: Any) -> None:
    """After the naming the stream names the visitor itself; one of those events, its track ended, is marked wrong."""
    from selenium.webdriver.common.by import By

    driver = browser
    token = _token(served)
    deadline = time.monotonic() + 60
    while True:
        _, body = served.api(f"/api/events?person={VISITOR}&limit=200", token=token)
        events = json.loads(body)["events"]
        ended = {e["track_id"] for e in events if e["kind"] == "track_ended"}
        named = [e for e in events if e["kind"] == "identity_assigned" and e["track_id"] in ended]
        if named:
            break
        assert time.monotonic() < deadline, "the stream did not name the visitor in 60 s"
        time.sleep(2)
    event = named[0]
    driver.get(served.url + f"events?person={VISITOR}&kind=identity_assigned")
    button = driver.find_element(By.CSS_SELECTOR, f'button[data-action="not-this"][data-event="{event["id"]}"]')
    button.click()
    driver.switch_to.alert.accept()
    text = _message(driver, f"event {event['id']}: not {VISITOR}", 30)
    assert "kept as an example against" in text
    row = driver.find_element(By.CSS_SELECTOR, f'tr[data-id="{event["id"]}"]')
    assert row.find_element(By.CSS_SELECTOR, "td.person").text == "unknown" and "corrected" in row.text
    status, body = served.api(f"/api/events/{event['id']}", token=token)
    assert status == 200 and json.loads(body)["person"] is None
