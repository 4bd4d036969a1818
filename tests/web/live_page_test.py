"""The page's camera mode in a real browser: headless Chromium whose fake camera plays a
generated clip of the fake face model's faces (coloured squares) moving, against the
page's server and the local model server on the fake model. The people keep their numbers
over the frames, the frames go at a bounded rate, and stopping the camera ends the page's
tracks on the server; a refused or missing camera gets a clear message.

Skipped, with the reason, where Chromium or Selenium is not installed (as page_test.py)."""
import re
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow

WAIT = 60  # seconds
SIZE = (320, 240)
FPS = 10
# Red (34 ± 5, F 91%) and blue (61 ± 7, M 83%) squares of the fake model, (colour, x, y, side)
FACES = ((0, 30, 60, 70), (1, 200, 90, 80))
STEP = 2  # px a frame, out and back so that the looping clip never jumps


def write_y4m(path, frames, fps):
    """RGB frames [H, W, 3] uint8 -> a YUV4MPEG2 clip (4:2:0, BT.601 limited range: what
    Chromium's fake camera reads), converted by PyAV's swscale."""
    import av

    height, width = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            f.write(b"FRAME\n" + yuv.to_ndarray().tobytes())


def make_clip(path, picture):
    offsets = list(range(0, 20 * STEP, STEP))
    offsets += offsets[::-1]  # out and back: 40 frames, 4 s
    frames = [np.asarray(picture(SIZE, [(c, x + dx, y, s) for c, x, y, s in FACES]))
              for dx in offsets]
    write_y4m(path, frames, FPS)
    return path


@pytest.fixture(scope="module")
def camera_browser(tmp_path_factory, chromium, fake_picture):
    tmp = tmp_path_factory.mktemp("chromium_camera")
    clip_path = make_clip(str(tmp / "faces.y4m"), fake_picture)
    driver = chromium(tmp, ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                            f"--use-file-for-fake-video-capture={clip_path}"])
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def app(backend):
    from web.app import WebApp

    with WebApp(f"127.0.0.1:{backend.rest_port}", port=0) as web_app:
        yield web_app


# What the tests read of the camera section in one pass: its state, answered frames, message
# and each box's track, label and place as fractions of the video as displayed.
_READ_LIVE = """
const live = document.getElementById("live");
const video = document.getElementById("live-video");
const r = video.getBoundingClientRect();
return {
  state: live.dataset.state, frames: Number(live.dataset.frames),
  status: document.getElementById("live-status").innerText,
  playing: !!video.srcObject && video.srcObject.getVideoTracks().some(
    (t) => t.readyState === "live"),
  boxes: Array.from(live.querySelectorAll(".face-box")).map((b) => {
    const q = b.getBoundingClientRect();
    return {track: b.dataset.track, label: b.innerText,
            rel: [(q.left - r.left) / r.width, (q.top - r.top) / r.height,
                  (q.right - r.left) / r.width, (q.bottom - r.top) / r.height]};
  }),
};
"""


def read_live(driver):
    return driver.execute_script(_READ_LIVE)


def open_page(driver, url):
    driver.get(url)
    driver.find_element("id", "camera-start")


def wait_for(driver, what, wait=WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, wait).until(lambda d: what(read_live(d)) and read_live(d))


LABEL = re.compile(r"(\d+) · (\d+) ± \d+ · ([MF]) \d+%")


def test_camera_faces_keep_their_numbers_over_the_frames(camera_browser, app):
    driver = camera_browser
    open_page(driver, app.url)
    assert read_live(driver)["state"] == "off"
    driver.find_element("id", "camera-start").click()
    # Snapshots of the boxes, one per answered frame, until 10 frames with both people.
    seen, deadline = {}, time.monotonic() + WAIT
    while len([s for s in seen.values() if len(s["boxes"]) == 2]) < 10:
        assert time.monotonic() < deadline, (seen, read_live(driver))
        now = read_live(driver)
        assert now["state"] in ("starting", "on"), now
        if now["frames"] and now["frames"] not in seen:
            seen[now["frames"]] = now
        time.sleep(0.05)
    assert now["playing"] and now["status"] == "Camera on."
    numbers = {}  # age shown -> the person's number
    for snapshot in seen.values():
        for box in snapshot["boxes"]:
            if box["track"] == "":  # first sighting: not yet a person
                assert box["label"].startswith("new · "), box
                continue
            number, age, gender = LABEL.fullmatch(box["label"]).groups()
            assert box["track"] == number
            assert (age, gender) in (("34", "F"), ("61", "M")), box
            assert numbers.setdefault(age, number) == number, (age, numbers, snapshot)
            # On its square: the box's size is the square's, in fractions of the video.
            side = next(s for c, _, _, s in FACES if ("34", "61")[c] == age)
            rel = box["rel"]
            assert rel[2] - rel[0] == pytest.approx(side / SIZE[0], abs=0.03), box
            assert rel[3] - rel[1] == pytest.approx(side / SIZE[1], abs=0.03), box
    assert sorted(numbers.values()) == ["1", "2"], numbers
    assert len(app.live) == 1

    # Frames went one at a time at no more than live.max_frames_per_second (5).
    starts = driver.execute_script(
        "return performance.getEntriesByType('resource').filter((e) => "
        "e.name.includes('api/live') && e.initiatorType === 'fetch')"
        ".map((e) => [e.startTime, e.responseEnd])")
    starts.sort()
    assert len(starts) >= 10
    gaps = np.diff([s for s, _ in starts])  # ms
    # A frame's period runs from its capture; its request leaves after the JPEG encoding,
    # whose time varies: each gap is near 200 ms or more, and so is their mean.
    assert gaps.min() > 100 and gaps[-8:].mean() >= 190, gaps
    assert all(nxt >= end for (_, end), (nxt, _) in zip(starts, starts[1:]))

    driver.find_element("id", "camera-stop").click()
    stopped = wait_for(driver, lambda s: s["state"] == "off")
    assert not stopped["playing"] and stopped["boxes"] == []
    assert stopped["status"] == "Camera stopped."
    deadline = time.monotonic() + 10
    while len(app.live):  # the page's DELETE: its tracks are gone from the server at once
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("error, message", [
    ("NotAllowedError", "The camera was refused."),
    ("NotFoundError", "No camera was found."),
])
def test_a_refused_or_missing_camera_gets_a_clear_message(camera_browser, app, error, message):
    driver = camera_browser
    open_page(driver, app.url)
    driver.execute_script(
        "navigator.mediaDevices.getUserMedia = () => Promise.reject("
        "new DOMException('from the test', arguments[0]));", error)
    driver.find_element("id", "camera-start").click()
    failed = wait_for(driver, lambda s: s["state"] == "error")
    assert failed["status"].startswith(message), failed
    assert driver.find_element("id", "camera-start").is_displayed()  # may try again
    assert not driver.find_element("id", "camera-stop").is_displayed()
