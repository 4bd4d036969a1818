"""The page in a real browser: headless Chromium driven by Selenium through the system's
chromedriver, against the page's server and the local model server on the fake face model.

Skipped, with the reason, where Chromium or Selenium is not installed (.ci/run installs
both); nothing is downloaded, and Chromium resolves no name but the loopback address.
"""
import base64
import io
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps

pytestmark = pytest.mark.slow

WAIT = 30  # seconds; the fake model answers in well under one

TWO_FACES = dict(size=(400, 300), faces=[(0, 40, 50, 80), (1, 250, 120, 100)])


@pytest.fixture(scope="module")
def browser(tmp_path_factory, chromium):
    driver = chromium(tmp_path_factory.mktemp("chromium"))
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def app(backend):
    from web.app import WebApp

    with WebApp(f"127.0.0.1:{backend.rest_port}", port=0, max_side=1000) as web_app:
        yield web_app


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def open_page(driver, url):
    driver.get(url)
    driver.find_element("id", "photos")  # the page is there


def choose(driver, *paths):
    """Selects files in the page's file chooser, as a person would."""
    driver.find_element("id", "photos").send_keys("\n".join(paths))


# Everything the tests read from the page, in one pass: per photo card, its state, texts,
# the photo's size and each box's position as a fraction of the photo as displayed.
_READ_CARDS = """
return Array.from(document.querySelectorAll("#results li.photo")).map((li) => {
  const img = li.querySelector("img");
  const r = img && img.isConnected ? img.getBoundingClientRect() : null;
  const err = li.querySelector(".message.error");
  return {
    name: li.querySelector(".name").textContent,
    state: li.dataset.state,
    caption: li.querySelector("figcaption").innerText,
    error: err ? err.dataset.kind : null,
    retry: li.querySelector("button.retry") !== null,
    natural: img && img.isConnected && img.complete ? [img.naturalWidth, img.naturalHeight] : null,
    alt: img ? img.alt : null,
    boxes: Array.from(li.querySelectorAll(".face-box")).map((b) => {
      const q = b.getBoundingClientRect();
      return {label: b.innerText,
              rel: [(q.left - r.left) / r.width, (q.top - r.top) / r.height,
                    (q.right - r.left) / r.width, (q.bottom - r.top) / r.height]};
    }),
  };
});
"""


def cards(driver):
    return {c["name"]: c for c in driver.execute_script(_READ_CARDS)}


def wait_settled(driver, count, wait=WAIT):
    """Waits until `count` photo cards are done or failed (and their photos loaded)."""
    from selenium.webdriver.support.ui import WebDriverWait

    def settled(d):
        now = cards(d)
        ok = len(now) == count and all(
            c["state"] in ("done", "error") and (c["state"] == "error" or c["natural"])
            for c in now.values())
        return now if ok else False
    return WebDriverWait(driver, wait).until(settled)


def assert_boxes(card, size, faces, tol=0.02):
    """Boxes shown where the squares are: fractions of the photo, within `tol`."""
    w, h = size
    expected = sorted([[x / w, y / h, (x + s) / w, (y + s) / h] for _, x, y, s in faces])
    shown = sorted(b["rel"] for b in card["boxes"])
    assert len(shown) == len(expected), card
    np.testing.assert_allclose(shown, expected, atol=tol)


def test_two_faces_get_boxes_with_age_and_gender(browser, app, tmp_path, make_photo):
    open_page(browser, app.url)
    choose(browser, write(tmp_path, "two.jpg", make_photo(**TWO_FACES)))
    card = wait_settled(browser, 1)["two.jpg"]
    assert card["state"] == "done", card
    assert card["natural"] == [400, 300]
    assert_boxes(card, (400, 300), TWO_FACES["faces"])
    labels = sorted(b["label"] for b in card["boxes"])
    assert labels == ["34 ± 5 · F 91%", "61 ± 7 · M 83%"]
    assert "Face 1: age 34 ± 5 (80%: 28–40), female 91%" in card["caption"]
    assert "Face 2: age 61 ± 7 (80%: 52–70), male 83%" in card["caption"]
    assert "99" not in card["caption"]  # the padded decoy entry is not a face
    assert card["alt"].startswith("two.jpg, 2 faces marked")
    # Nothing but the page's own server was asked for anything.
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)")
    assert urls and all(u.startswith(app.url) or u.startswith("blob:" + app.url[:-1])
                        for u in urls), urls


def test_a_real_models_two_faces_are_boxed_with_age_and_gender(browser, real_backend, tmp_path,
                                                               two_face_photo):
    """The same page on the export's real predict_photo (a tiny model, real face detection):
    a box on each face of the photo, labelled with an age, its spread and a gender."""
    from faces import boxes as boxes_lib
    from web.app import WebApp

    data, truth = two_face_photo
    with WebApp(real_backend.rest_address, port=0, timeout=120) as web_app:
        open_page(browser, web_app.url)
        choose(browser, write(tmp_path, "two_real.jpg", data))
        card = wait_settled(browser, 1, wait=150)["two_real.jpg"]
    assert card["state"] == "done", card
    assert card["natural"] == [640, 480]
    shown = np.array([b["rel"] for b in card["boxes"]]) * [640, 480, 640, 480]
    assert len(shown) == 2 and (boxes_lib.match(truth, shown).pair >= 0).all(), (truth, card)
    for box in card["boxes"]:
        assert re.fullmatch(r"\d+ ± \d+ · [MF] \d+%", box["label"]), box["label"]
    for i in (1, 2):
        assert re.search(rf"Face {i}: age \d+ ± \d+ \(80%: \d+–\d+\), (male|female) \d+%",
                         card["caption"]), card["caption"]


def test_no_face_and_not_an_image_get_clear_messages(browser, app, tmp_path, make_photo):
    open_page(browser, app.url)
    choose(browser, write(tmp_path, "empty.jpg", make_photo()),
           write(tmp_path, "notes.txt", "shopping list: milk"),
           write(tmp_path, "fake.jpg", "this is text, not a JPEG"))
    now = wait_settled(browser, 3)
    assert now["empty.jpg"]["state"] == "done"
    assert "No face found in this photo." in now["empty.jpg"]["caption"]
    assert now["empty.jpg"]["boxes"] == []
    assert now["empty.jpg"]["alt"] == "empty.jpg, no face found"
    for name in ("notes.txt", "fake.jpg"):
        assert now[name]["state"] == "error" and now[name]["error"] == "not-image", now[name]
        assert "not a photo" in now[name]["caption"]
        assert not now[name]["retry"]  # retrying the same file cannot help


def test_phone_photo_with_exif_rotation_is_shown_and_boxed_upright(browser, app, tmp_path,
                                                                  make_photo):
    # Stored sideways (pixels turned 90° counter-clockwise) with EXIF orientation 6, as a
    # phone held upright writes it: a viewer turns it clockwise to show it.
    data = make_photo(**TWO_FACES, raw_rotation=Image.Transpose.ROTATE_90, exif_orientation=6)
    raw = Image.open(io.BytesIO(data))
    assert raw.size == (300, 400)
    upright = ImageOps.exif_transpose(raw)
    assert upright.size == (400, 300) and upright.getpixel((80, 60))[0] > 200  # the red face
    open_page(browser, app.url)
    choose(browser, write(tmp_path, "phone.jpg", data))
    card = wait_settled(browser, 1)["phone.jpg"]
    assert card["state"] == "done", card
    assert card["natural"] == [400, 300]
    assert_boxes(card, (400, 300), TWO_FACES["faces"])


def test_large_png_is_scaled_down_before_upload(browser, app, tmp_path, make_photo):
    faces = [(0, 300, 400, 500), (2, 1500, 900, 600)]
    open_page(browser, app.url)
    choose(browser, write(tmp_path, "big.png", make_photo((2400, 1800), faces, fmt="PNG")))
    card = wait_settled(browser, 1)["big.png"]
    assert card["state"] == "done", card
    assert card["natural"] == [1000, 750]  # the app's max_side
    assert_boxes(card, (2400, 1800), faces)
    assert sorted(b["label"] for b in card["boxes"]) == ["34 ± 5 · F 91%", "8 ± 2 · F 60%"]


def test_photo_dropped_on_the_page(browser, app, make_photo):
    open_page(browser, app.url)
    browser.execute_script("""
      const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
      const data = new DataTransfer();
      data.items.add(new File([bytes], "dropped.jpg", {type: "image/jpeg"}));
      document.getElementById("dropzone").dispatchEvent(
        new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
    """, base64.b64encode(make_photo(**TWO_FACES)).decode())
    card = wait_settled(browser, 1)["dropped.jpg"]
    assert card["state"] == "done" and len(card["boxes"]) == 2, card


def test_keyboard_reaches_the_labelled_file_chooser(browser, app):
    from selenium.webdriver.common.keys import Keys

    open_page(browser, app.url)
    browser.find_element("tag name", "body").send_keys(Keys.TAB)
    active = browser.switch_to.active_element
    assert active.get_attribute("id") == "photos"
    assert active.get_attribute("type") == "file" and active.get_attribute("multiple")
    label = browser.execute_script("return document.getElementById('photos').labels[0].innerText")
    assert "Photos" in label
    assert browser.find_element("id", "status").get_attribute("role") == "status"


def test_backend_down_shows_an_error_and_the_page_recovers(browser, backend_factory, tmp_path,
                                                          make_photo):
    from web.app import WebApp

    server = backend_factory()
    port = server.rest_port
    path = write(tmp_path, "two.jpg", make_photo(**TWO_FACES))
    # The timeout leaves room for the restarted model server's first answer on a busy machine.
    with WebApp(f"127.0.0.1:{port}", port=0, timeout=30) as web_app:
        open_page(browser, web_app.url)
        server.stop()
        choose(browser, path)
        card = wait_settled(browser, 1)["two.jpg"]
        assert card["state"] == "error" and card["error"] == "backend-down", card
        assert "The model server is not available right now" in card["caption"]
        assert "not reachable" in card["caption"] and str(port) in card["caption"]
        assert card["retry"]

        server = backend_factory(rest_port=port)  # back on the same address
        try:
            browser.find_element("css selector", "button.retry").click()
            card = wait_settled(browser, 1)["two.jpg"]
            assert card["state"] == "done" and len(card["boxes"]) == 2, card
            choose(browser, write(tmp_path, "again.jpg", make_photo(**TWO_FACES)))
            assert wait_settled(browser, 2)["again.jpg"]["state"] == "done"
        finally:
            server.stop()


def test_too_large_photo_and_page_server_gone(browser, backend, tmp_path, make_photo):
    from web.app import WebApp

    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG", quality=95)
    with WebApp(f"127.0.0.1:{backend.rest_port}", port=0, max_request_bytes=20_000) as web_app:
        open_page(browser, web_app.url)
        choose(browser, write(tmp_path, "noise.jpg", buf.getvalue()))
        card = wait_settled(browser, 1)["noise.jpg"]
        assert card["state"] == "error" and card["error"] == "too-large", card
        assert "This photo is too large." in card["caption"] and "limit" in card["caption"]
    # The page's own server stopped under the open page.
    choose(browser, write(tmp_path, "two.jpg", make_photo(**TWO_FACES)))
    card = wait_settled(browser, 2)["two.jpg"]
    assert card["state"] == "error" and card["error"] == "page-down", card
    assert card["retry"]


def test_screenshot_shows_the_photos_and_boxes(browser, app, tmp_path, make_photo):
    open_page(browser, app.url)
    choose(browser, write(tmp_path, "group.jpg", make_photo(
        (640, 400), [(0, 60, 90, 120), (1, 260, 140, 110), (2, 450, 80, 130)])),
        write(tmp_path, "landscape.jpg", make_photo((400, 300))),
        write(tmp_path, "notes.txt", "not a photo"))
    assert len(wait_settled(browser, 3)["group.jpg"]["boxes"]) == 3
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    if os.environ.get("WEB_SCREENSHOT"):  # a copy for the docs
        shutil.copyfile(shot, os.environ["WEB_SCREENSHOT"])
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape[0] > 500 and pixels.shape[1] > 800
    assert pixels.std() > 20  # not a blank page
    # The boxes' yellow (#ffd400) is painted on screen, not only in the DOM.
    yellow = (np.abs(pixels - [255, 212, 0]) < 30).all(-1)
    assert yellow.sum() > 500
