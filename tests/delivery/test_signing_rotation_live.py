"""A signing secret rotated through the API while a batch is being delivered: the firings the batch
starts after the rotation are signed with the new secret (and, inside the window, the previous one
too), those started before it with the old one only; checked at the receiver with the real
`standardwebhooks` package. The burst worker runs in-process; the API call comes from a thread
watching the receiver.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api.api import create_app
from scheduler_api.triggers import Trigger
from tests.support.arrivals import verifies
from tests.support.engine import deliver, fire_now
from tests.support.factories import make_engine_settings
from tests.support.receiver import Receiver, headers_of

FIRINGS = 40
LANES = 4
DELAY = 0.2  # each request held this long: the batch takes FIRINGS / LANES * DELAY = 2 s
ROTATE_AFTER = 8  # requests received before the rotation
TAKES_EFFECT = 1.0  # seconds after the rotation by which every firing started carries the new secret


@pytest.mark.slow
@pytest.mark.parametrize("window", [86_400, 0])
def test_a_rotation_during_a_batch_signs_the_firings_started_after_it(
    redis_url: str, conn: Redis, receiver: Receiver, window: int
) -> None:
    settings = make_engine_settings(redis_url, worker_concurrency=LANES, signing_rotation_seconds=window)
    receiver.on("/slow", *[(200, DELAY)] * FIRINGS)
    with TestClient(create_app(settings)) as api:
        old = api.get("/api/workspaces/ws/signing-secret").json()["secret"]
        rotated: dict[str, Any] = {}

        def rotate_mid_batch() -> None:
            receiver.wait_for(lambda reqs: len(reqs) >= ROTATE_AFTER, timeout=10)
            rotated["at"] = time.time()
            rotated["body"] = api.post("/api/workspaces/ws/signing-secret/rotate").json()

        rotator = threading.Thread(target=rotate_mid_batch)
        rotator.start()
        triggers = [
            Trigger(cron="* * * * *", url=receiver.url + "/slow", method="POST", payload={"i": i})
            for i in range(FIRINGS)
        ]
        fire_now(conn, Queue(settings.queue_name, connection=conn), settings, triggers)
        deliver(conn, settings)  # one batch of FIRINGS
        rotator.join(10)

    new = rotated["body"]["secret"]
    assert new != old and (rotated["body"]["previous"] is None) == (window == 0)
    sent = receiver.to("/slow")
    assert len(sent) == FIRINGS
    before = [r for r in sent if r.at < rotated["at"]]
    after = [r for r in sent if r.at >= rotated["at"] + TAKES_EFFECT]
    assert len(before) >= ROTATE_AFTER and len(after) >= LANES  # the rotation fell mid-batch
    for r in before:
        assert len(headers_of(r)["webhook-signature"].split(" ")) == 1
        assert verifies(old, r) and not verifies(new, r)
    for r in after:
        signatures = headers_of(r)["webhook-signature"].split(" ")
        assert verifies(new, r)
        if window:
            assert len(signatures) == 2 and verifies(old, r)
        else:
            assert len(signatures) == 1 and not verifies(old, r)
