"""The live mode's endpoint without a browser (`POST`/`DELETE /api/live`): frames of the fake
face model's squares tracked per page, every bound on what a page may hold, and bad session
ids and frames refused with a clear 4xx."""
import http.client
import json
import time

import pytest

from agegender.results import Face
from web import live as live_lib
from web.app import WebApp, main

SESSION = "a" * 32
# Two of the fake model's faces: red (34 ± 5, F 91%) and blue (61 ± 7, M 83%).
RED, BLUE = 0, 1


@pytest.fixture(scope="module")
def app(backend):
    with WebApp(f"127.0.0.1:{backend.rest_port}", port=0, timeout=20) as web_app:
        yield web_app


def call(app, method, path, body=None, timeout=30):
    """-> (status, parsed JSON, whether the server closed the connection after it)."""
    conn = http.client.HTTPConnection(app.host, app.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "image/jpeg"})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    return response.status, json.loads(raw), response.will_close


def frame(make_photo, shift=0, faces=((RED, 40, 50, 80), (BLUE, 250, 120, 100))):
    """A 400x300 frame with the faces moved `shift` px to the right."""
    return make_photo((400, 300), [(c, x + shift, y, s) for c, x, y, s in faces])


def post(app, make_photo, session=SESSION, shift=0, **kwargs):
    status, body, _ = call(app, "POST", f"/api/live?session={session}",
                           frame(make_photo, shift, **kwargs))
    assert status == 200, body
    return sorted(body["faces"], key=lambda f: f["box"][0])


def test_people_keep_their_ids_and_fused_answers_across_frames(app, make_photo):
    session = "keep-ids-" + "0" * 23
    first = post(app, make_photo, session)
    # Seen once: not yet a person (the tracker waits for a second sighting).
    assert [f["track"] for f in first] == [None, None]
    assert [f["frames"] for f in first] == [1, 1]
    ids = None
    for i in range(1, 6):
        faces = post(app, make_photo, session, shift=4 * i)
        red, blue = faces
        if ids is None:
            ids = (red["track"], blue["track"])
            assert sorted(ids) == [1, 2]
        assert (red["track"], blue["track"]) == ids
        assert red["frames"] == blue["frames"] == i + 1
        assert red["box"] == pytest.approx([40 + 4 * i, 50, 120 + 4 * i, 130], abs=1.5)
        # The fused answer: the square's age, an interval around it, the gender.
        assert red["age"] == pytest.approx(34, abs=0.5) and red["gender"] == "F"
        assert red["age_interval_80"][0] < 34 < red["age_interval_80"][1]
        assert red["age_std"] > 0 and red["gender_probability"] > 0.9
        assert blue["age"] == pytest.approx(61, abs=0.5) and blue["gender"] == "M"
        assert "landmarks" not in red
    # Another page's people are its own: numbered from 1 again, nothing of the first page's.
    other = "other-page-" + "0" * 21
    post(app, make_photo, other, faces=((BLUE, 100, 100, 90),))
    (blue,) = post(app, make_photo, other, faces=((BLUE, 104, 100, 90),))
    assert blue["track"] == 1 and blue["frames"] == 2


def test_no_face_and_a_face_that_leaves(app, make_photo):
    session = "leaves-" + "0" * 25
    post(app, make_photo, session)
    post(app, make_photo, session, shift=2)
    assert post(app, make_photo, session, faces=()) == []
    status, body, _ = call(app, "POST", f"/api/live?session={session}", make_photo())
    assert (status, body) == (200, {"faces": []})


@pytest.mark.parametrize("query, reason", [
    ("", "needs one session=ID"),
    ("?session=short", "16 to 64 characters"),
    ("?session=" + "a" * 65, "16 to 64 characters"),
    ("?session=" + "a" * 20 + "%2F..%2Fetc", "16 to 64 characters"),
    ("?session=" + "a" * 20 + "%00", "16 to 64 characters"),
    ("?session=" + "a" * 20 + "%C3%A9", "16 to 64 characters"),
    (f"?session={SESSION}&session={SESSION}", "got 2"),
])
def test_malformed_session_ids_are_refused_before_the_frame_is_read(app, make_photo, query,
                                                                    reason):
    status, body, closed = call(app, "POST", "/api/live" + query, frame(make_photo))
    assert status == 400 and reason in body["error"], body
    assert closed  # the unread frame is not taken for a next request
    assert call(app, "DELETE", "/api/live" + query)[0] == 400


@pytest.mark.parametrize("data, status, reason", [
    (b"", 400, "holds no photo"),
    (b"this is text, not a JPEG", 415, "not a JPEG or PNG"),
    (b"GIF89a" + b"\0" * 64, 415, "send a JPEG or PNG"),
])
def test_bad_frames_are_refused_like_photos(app, data, status, reason):
    got, body, _ = call(app, "POST", f"/api/live?session={SESSION}", data)
    assert got == status and reason in body["error"], body


def test_a_frame_over_the_limits_is_refused(backend, make_photo):
    with WebApp(f"127.0.0.1:{backend.rest_port}", port=0, max_request_bytes=2000,
                max_image_pixels=10_000) as web_app:
        status, body, closed = call(web_app, "POST", f"/api/live?session={SESSION}",
                                    frame(make_photo))
        assert status == 413 and "too large" in body["error"] and closed, body
        small = make_photo((200, 100))  # 20,000 pixels, under 2,000 bytes
        assert len(small) < 2000
        status, body, _ = call(web_app, "POST", f"/api/live?session={SESSION}", small)
        assert status == 413 and "pixels" in body["error"], body


def test_other_methods(app):
    assert call(app, "GET", f"/api/live?session={SESSION}")[0] == 405
    assert call(app, "PUT", f"/api/live?session={SESSION}")[0] == 405
    status, body, closed = call(app, "DELETE", f"/api/live?session={SESSION}", b"x")
    assert status == 400 and "takes no body" in body["error"] and closed


def test_sessions_are_bounded_and_forgotten_on_delete(backend, make_photo):
    with WebApp(f"127.0.0.1:{backend.rest_port}", port=0, max_live_sessions=3,
                max_live_tracks=1) as web_app:
        sessions = [f"page-{i:02d}-" + "x" * 24 for i in range(5)]
        for session in sessions:
            # Two faces per frame, one track per page: the other is answered untracked.
            faces = post(web_app, make_photo, session)
            assert sum(f["track"] is None and f["frames"] == 1 for f in faces) == 2
            faces = post(web_app, make_photo, session, shift=2)
            assert sorted(str(f["track"]) for f in faces) == ["1", "None"]
        assert len(web_app.live) == 3 and web_app.live.open_tracks() == 3
        # The least recently seen pages were evicted: the first one starts anew.
        (first_red, _) = post(web_app, make_photo, sessions[0], shift=4)
        assert first_red["frames"] == 1 and len(web_app.live) == 3
        status, body, _ = call(web_app, "DELETE", f"/api/live?session={sessions[0]}")
        assert (status, body) == (200, {"forgotten": True}) and len(web_app.live) == 2


def test_an_idle_page_is_forgotten(backend, make_photo):
    with WebApp(f"127.0.0.1:{backend.rest_port}", port=0, live_idle_timeout=1) as web_app:
        assert web_app.live.tracker is None  # loaded with the first camera frame
        post(web_app, make_photo)
        assert len(web_app.live) == 1 and web_app.live.open_tracks() == 2
        time.sleep(1.2)  # idle past --live_idle_timeout
        assert len(web_app.live) == 0 and web_app.live.open_tracks() == 0


def test_one_frame_in_flight_per_page():
    sessions = live_lib.LiveSessions()
    with sessions.frame(SESSION):
        with pytest.raises(live_lib.HttpError) as err, sessions.frame(SESSION):
            pass
        assert err.value.status == 429 and err.value.close
        with sessions.frame("another-page-" + "0" * 19):  # other pages are not held up
            pass
    with sessions.frame(SESSION):  # released after its answer, or its failure
        pass


def test_state_stays_bounded_under_many_pages_and_faces():
    """What the live state holds is counted: however many pages and faces a client invents,
    at most max_sessions pages of max_tracks open tracks each."""
    now = [0.0]
    sessions = live_lib.LiveSessions(max_sessions=8, idle_timeout=30, max_tracks=4,
                                     clock=lambda: now[0])
    faces = [Face(box=(x, 10.0, x + 30.0, 40.0), score=0.9, age=30.0, gender="female",
                  gender_probability=0.8) for x in range(0, 2000, 40)]  # 50 faces a frame
    peak_sessions = peak_tracks = 0
    for i in range(400):
        now[0] += 0.05
        answer = sessions.update(f"page-{i % 40:04d}-" + "z" * 20, faces)
        assert len(answer) == 16  # SessionTracker's faces per frame
        peak_sessions = max(peak_sessions, len(sessions))
        peak_tracks = max(peak_tracks, sessions.open_tracks())
    assert peak_sessions == 8 and peak_tracks == 8 * 4


@pytest.mark.parametrize("flag", ["--max_live_sessions=0", "--live_idle_timeout=-1",
                                  "--max_live_tracks=many"])
def test_bad_bounds_are_usage_errors(flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--port=0", flag])
    assert exit_.value.code == 2
    assert flag.split("=")[0] in capsys.readouterr().err
