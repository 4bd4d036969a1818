"""web.connections through web.app: slow and silent clients hold sockets, never the page;
the connection cap, the header and body deadlines. Short deadlines stand in for the real
ones (a header line every 0.3 s against a 2 s deadline, as an attacker's every 10 s against
the 5 s default)."""
import http.client
import json
import socket
import threading
import time

import pytest

from web.app import WebApp

TRICKLE = 0.3  # seconds between an attacker's header lines


def get(app, path="/", timeout=10):
    conn = http.client.HTTPConnection(app.host, app.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def post(app, body, timeout=30):
    conn = http.client.HTTPConnection(app.host, app.port, timeout=timeout)
    try:
        conn.request("POST", "/api/predict", body=body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


class Attackers:
    """`count` sockets that each send a request's first line and `Host`, then (trickle) one
    header line every TRICKLE seconds or (silent) nothing; what each receives is kept."""

    def __init__(self, app, count, silent=False):
        self.app, self.silent = app, silent
        self.stop = threading.Event()
        self.answers = [None] * count
        self.closed_after = [None] * count
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(count)]
        for t in self.threads:
            t.start()

    def _run(self, i):
        start = time.monotonic()
        try:
            with socket.create_connection((self.app.host, self.app.port), timeout=20) as s:
                if not self.silent:
                    s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\n")
                s.settimeout(TRICKLE)
                received = b""
                n = 0
                while not self.stop.is_set():
                    try:
                        chunk = s.recv(65536)
                    except socket.timeout:
                        if not self.silent:
                            s.sendall(f"X-Slow-{n}: {n}\r\n".encode())
                            n += 1
                        continue
                    if not chunk:
                        self.closed_after[i] = time.monotonic() - start
                        break
                    received += chunk
                self.answers[i] = received
        except OSError as e:  # a reset when sending to a closed connection counts as closed
            self.closed_after[i] = time.monotonic() - start
            self.answers[i] = repr(e).encode()

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(deadline - time.monotonic(), 0))
        self.stop.set()
        for t in self.threads:
            t.join(5)


@pytest.mark.parametrize("silent", [False, True], ids=["trickling", "silent"])
def test_slow_connections_do_not_take_the_page_away(backend, make_photo, silent):
    """32 connections trickling their headers (or silent) while good clients GET and POST:
    every good request is answered (it was 503 for as long as they trickled), and each slow
    one is closed at the header deadline, 408 when it had started a request."""
    photo = make_photo()
    with WebApp(f"127.0.0.1:{backend.rest_port}", port=0, header_timeout=2.0,
                idle_timeout=30, timeout=20) as web_app:
        attackers = Attackers(web_app, 32, silent=silent)
        time.sleep(0.5)
        statuses = [get(web_app)[0], post(web_app, photo)[0], get(web_app, "/api/config")[0]]
        time.sleep(1.0)
        statuses += [get(web_app)[0], post(web_app, photo)[0]]
        attackers.join(10)
        assert statuses == [200] * 5
        assert all(t is not None and t < 2.0 + 2.5 for t in attackers.closed_after), \
            attackers.closed_after
        # Each got a 408 as it was closed (trickling or silent: the header deadline runs
        # from the accept for a new connection).
        assert all(a.startswith(b"HTTP/1.1 408") for a in attackers.answers), \
            attackers.answers[:2]
        deadline = time.monotonic() + 5  # the last ones close as their linger ends
        while web_app.connection_counts() != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert web_app.connection_counts() == (0, 0)


def test_at_the_cap_a_newcomer_replaces_a_slow_connection(backend):
    """More slow clients than --max_connections: once they have had EVICTION_GRACE, a good
    client takes the place of the one waiting longest instead of getting 503."""
    with WebApp(f"127.0.0.1:{backend.rest_port}", port=0, max_connections=4,
                header_timeout=20) as web_app:
        attackers = Attackers(web_app, 8)
        time.sleep(1.5)
        assert [get(web_app)[0] for _ in range(3)] == [200] * 3
        assert web_app.connection_counts()[0] <= 4
        attackers.stop.set()
        attackers.join(5)
    # The 4 beyond the cap came within the grace of the first 4: 503 at once. The first
    # good client closed the attacker waiting longest; the next ones found its slot free.
    refused = [a for a in attackers.answers if a.startswith(b"HTTP/1.1 503")]
    assert len(refused) == 4 and b"open connections" in refused[0]
    evicted = [t for t, a in zip(attackers.closed_after, attackers.answers)
               if t is not None and t < 3 and a == b""]
    assert len(evicted) == 1, (attackers.closed_after, attackers.answers)


def test_a_body_sent_too_slowly_is_cut_at_its_deadline(backend):
    """Headers at once, then the body 10 bytes per 0.3 s: 408 at header_timeout + size /
    min_body_rate from the first byte, the connection closed."""
    with WebApp(f"127.0.0.1:{backend.rest_port}", port=0, header_timeout=1.0,
                min_body_rate=1000) as web_app:
        start = time.monotonic()
        with socket.create_connection((web_app.host, web_app.port), timeout=10) as s:
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            answer = b""
            s.settimeout(TRICKLE)
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    s.sendall(b"\0" * 10)
                    continue
                if not chunk:
                    break
                answer += chunk
        elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 2 s" in answer
    assert 1.5 < elapsed < 5  # 1 s + 1000 bytes at 1000 bytes/s


def test_a_keep_alive_connection_has_its_deadline_from_its_next_request(backend):
    """Idle keep-alive time is not taken from the next request's header deadline: a
    request started after 1.5 s idle on a 1 s header deadline is answered."""
    with WebApp(f"127.0.0.1:{backend.rest_port}", port=0, header_timeout=1.0,
                idle_timeout=10) as web_app:
        conn = http.client.HTTPConnection(web_app.host, web_app.port, timeout=10)
        conn.request("GET", "/api/config")
        assert conn.getresponse().read()
        time.sleep(1.5)
        conn.request("GET", "/api/config")
        assert conn.getresponse().status == 200
        conn.close()
