"""The chaos soak's changes (`bench.chaos`): replaces and PATCHes of some workspaces through the
API while the chaos runs, each written into the ledger (bench.chaos_ledger) with the time its call
started and the time it returned."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import httpx

from bench.chaos_ledger import Ledger

CRON = "*/5 * * * * *"
OTHER_CRON = "*/10 * * * * *"  # what a rescheduling PATCH switches to (and back)
RETRYABLE = {502, 503, 504}  # answers of an API whose Redis is down (or a proxy in front): sent again


def trigger(workspace: str, trigger_id: str, receiver_url: str, cron: str = CRON, version: int = 0) -> dict[str, Any]:
    return {
        "id": trigger_id,
        "cron": cron,
        "url": f"{receiver_url}/hook/{workspace}/{trigger_id}",
        "method": "POST",
        "payload": {"id": trigger_id, "v": version},
    }


class Changes(threading.Thread):
    """Replaces and PATCHes of some workspaces every few seconds, through the API, each logged in
    the ledger (eras begun and ended, and one entry per call)."""

    def __init__(
        self,
        client: httpx.Client,
        lists: dict[str, dict[str, dict[str, Any]]],
        workspaces: list[str],
        ledger: Ledger,
        *,
        rng: random.Random,
        every: tuple[float, float],
        receiver_url: str,
    ) -> None:
        super().__init__(name="chaos-changes", daemon=True)
        self.client = client
        self.lists = lists
        self.workspaces = workspaces
        self.ledger = ledger
        self.rng = rng
        self.every = every
        self.receiver_url = receiver_url
        self.stopping = threading.Event()
        self.serial = 0
        self.retried = 0
        self.failed: list[str] = []

    def run(self) -> None:
        while not self.stopping.wait(self.rng.uniform(*self.every)):
            workspace = self.rng.choice(self.workspaces)
            if self.rng.random() < 0.5:
                self.replace(workspace)
            else:
                self.patch(workspace)

    def call(self, method: str, path: str, body: Any, content_type: str) -> tuple[float, float, int, int] | None:
        """Send until the answer is not 502/503/504 and the API answers at all; (started,
        returned, attempts, status), or None when the run is over first."""
        started = time.time()
        attempts = 0
        data = json.dumps(body).encode()
        while True:
            attempts += 1
            try:
                response = self.client.request(method, path, content=data, headers={"Content-Type": content_type})
                if response.status_code not in RETRYABLE:
                    if response.status_code != 200:
                        self.failed.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
                    return started, time.time(), attempts, response.status_code
            except httpx.TransportError:
                pass
            self.retried += 1
            if self.stopping.wait(0.5) and time.time() - started > 120:
                return None

    def replace(self, workspace: str) -> None:
        current = self.lists[workspace]
        ids = sorted(current)
        k = max(1, len(ids) // 20)
        removed = self.rng.sample(ids, k=min(k, len(ids)))
        kept = [i for i in ids if i not in removed]
        changed = self.rng.sample(kept, k=min(k, len(kept)))
        added = [f"n{self._next()}" for _ in range(k)]
        new = {i: dict(current[i]) for i in kept}
        for i in changed:
            new[i]["payload"] = {"id": i, "v": self._next()}
        for i in added:
            new[i] = trigger(workspace, i, self.receiver_url)
        done = self.call(
            "POST", f"/api/workspaces/{workspace}/triggers", {"triggers": list(new.values())}, "application/json"
        )
        if done is None or done[3] != 200:
            return
        started, returned, attempts, _ = done
        self.lists[workspace] = new
        for i in removed:
            self.ledger.end(f"{workspace}:{i}", (started, returned), "removed")
        for i in added:
            self.ledger.begin(f"{workspace}:{i}", CRON, (started, returned))
        self.ledger.changes.append(
            {
                "kind": "replace",
                "workspace": workspace,
                "started": round(started, 3),
                "returned": round(returned, 3),
                "attempts": attempts,
                "removed": removed,
                "changed": changed,
                "added": added,
            }
        )

    def patch(self, workspace: str) -> None:
        current = self.lists[workspace]
        trigger_id = self.rng.choice(sorted(current))
        old = current[trigger_id]
        reschedule = self.rng.random() < 0.4
        body: dict[str, Any]
        if reschedule:
            body = {"cron": OTHER_CRON if old["cron"] == CRON else CRON}
        else:
            body = {"payload": {"id": trigger_id, "v": self._next()}}
        path = f"/api/workspaces/{workspace}/triggers/{trigger_id}"
        done = self.call("PATCH", path, body, "application/merge-patch+json")
        if done is None or done[3] != 200:
            return
        started, returned, attempts, _ = done
        current[trigger_id] = {**old, **body}
        job_id = f"{workspace}:{trigger_id}"
        if reschedule:
            self.ledger.end(job_id, (started, returned), "rescheduled")
            self.ledger.begin(job_id, body["cron"], (started, returned))
        self.ledger.changes.append(
            {
                "kind": "patch",
                "workspace": workspace,
                "trigger": trigger_id,
                "started": round(started, 3),
                "returned": round(returned, 3),
                "attempts": attempts,
                "set": sorted(body),
            }
        )

    def _next(self) -> int:
        self.serial += 1
        return self.serial
