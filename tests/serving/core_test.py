"""The serving core's own rules: the in-flight request budget shared by REST and gRPC."""
import threading
import time

import pytest

from serving.core import ServingCore
from serving.errors import ServingError


def _hold(core, nbytes, entered, release):
    with core.admit(nbytes):
        entered.set()
        release.wait(10)


def test_requests_over_the_in_flight_budget_wait_for_room():
    core = ServingCore(store=None, request_timeout=5, max_inflight_request_bytes=100)
    release = threading.Event()
    holders = []
    for _ in range(2):  # 2 x 45 bytes being decoded
        entered = threading.Event()
        holders.append(threading.Thread(target=_hold, args=(core, 45, entered, release)))
        holders[-1].start()
        assert entered.wait(5)
    with core.admit(10):  # fits beside them
        pass
    waited = threading.Event()
    big = threading.Thread(target=_hold, args=(core, 45, waited, release))
    try:
        big.start()
        time.sleep(0.3)
        assert not waited.is_set()  # 45 + 90 > 100: it waits
        release.set()
        assert waited.wait(5)  # and goes once the others are done
    finally:
        release.set()
        for t in holders + [big]:
            t.join(10)


def test_a_request_larger_than_the_budget_runs_alone_and_a_full_budget_times_out():
    core = ServingCore(store=None, request_timeout=0.3, max_inflight_request_bytes=100)
    with core.admit(500):  # alone: admitted, so a request within --max_request_bytes always can
        with pytest.raises(ServingError) as err:
            with core.admit(1):
                pass
    assert err.value.code == "UNAVAILABLE" and "--max_inflight_request_bytes" in err.value.message
    with core.admit(100):  # the budget is free again
        pass
