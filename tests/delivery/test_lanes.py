"""FairLanes (scheduler_api.delivery.lanes): round robin across workspaces, the per-workspace cap,
parked items and `runnable`, and stopping. Items are coroutines that wait on events the test sets,
so the order is the lanes' own, not the clock's."""

from __future__ import annotations

import asyncio

from scheduler_api.delivery.lanes import FairLanes


class Recorder:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    async def run(self, item: str) -> None:
        self.started.append(item)
        event = self.release.setdefault(item, asyncio.Event())
        await event.wait()

    def finish(self, item: str) -> None:
        self.release.setdefault(item, asyncio.Event()).set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_workspace_never_runs_more_than_its_cap_and_the_others_go_past_it() -> None:
    async def main() -> None:
        rec = Recorder()
        lanes: FairLanes[str] = FairLanes(rec.run, lanes=10, per_workspace=3)
        for i in range(20):
            assert lanes.put("noisy", f"noisy-{i}") is (i < 3)  # the rest is parked
        assert lanes.put("quiet", "quiet-0") is True
        await settle()
        assert rec.started == ["noisy-0", "quiet-0", "noisy-1", "noisy-2"]  # quiet's turn comes second
        assert lanes.runnable == 0 and lanes.waiting("noisy") == 17
        await asyncio.wait_for(lanes.wait_runnable(), 1)  # nothing more can start: a new batch may come
        rec.finish("noisy-1")
        await settle()
        assert rec.started[-1] == "noisy-3"  # one ended, the next parked one starts, in order
        assert lanes.running == 4
        lanes.take_all()
        for item in list(rec.release) + [f"noisy-{i}" for i in range(20)]:
            rec.finish(item)
        await asyncio.wait_for(lanes.join(), 1)

    asyncio.run(main())


def test_free_lanes_are_shared_by_workspaces_in_turn() -> None:
    async def main() -> None:
        rec = Recorder()
        lanes: FairLanes[str] = FairLanes(rec.run, lanes=1, per_workspace=1)
        for i in range(3):
            lanes.put("a", f"a{i}")
        for i in range(2):
            lanes.put("b", f"b{i}")
        lanes.put("c", "c0")
        order = []
        for _ in range(6):
            await settle()
            order.append(rec.started[-1])
            rec.finish(rec.started[-1])
        await settle()
        assert order == ["a0", "b0", "c0", "a1", "b1", "a2"]
        assert not lanes.busy and lanes.running == 0
        lanes.take_all()
        await asyncio.wait_for(lanes.join(), 1)

    asyncio.run(main())


def test_wait_runnable_returns_once_every_startable_item_has_started() -> None:
    async def main() -> None:
        rec = Recorder()
        lanes: FairLanes[str] = FairLanes(rec.run, lanes=2, per_workspace=2)
        for i in range(4):
            lanes.put(f"w{i}", f"w{i}")
        waiter = asyncio.ensure_future(lanes.wait_runnable())
        await settle()
        assert not waiter.done()  # two lanes busy, two items could start as soon as one is free
        rec.finish("w0")
        await settle()
        assert not waiter.done()
        rec.finish("w1")
        await settle()
        assert waiter.done() and rec.started == ["w0", "w1", "w2", "w3"]
        lanes.take_all()
        rec.finish("w2"), rec.finish("w3")
        await asyncio.wait_for(lanes.join(), 1)

    asyncio.run(main())


def test_stopping_hands_back_the_items_not_started_and_waits_for_the_running_ones() -> None:
    async def main() -> None:
        rec = Recorder()
        lanes: FairLanes[str] = FairLanes(rec.run, lanes=4, per_workspace=2)
        for i in range(5):
            lanes.put("a", f"a{i}")
        await settle()
        left = lanes.take_all()
        assert left == ["a2", "a3", "a4"] and lanes.runnable == 0
        lanes.put("b", "late")  # after stopping nothing more starts
        joined = asyncio.ensure_future(lanes.join())
        await settle()
        assert not joined.done()  # a0 and a1 are still running
        rec.finish("a0"), rec.finish("a1")
        await asyncio.wait_for(joined, 1)
        assert rec.started == ["a0", "a1"]

    asyncio.run(main())


def test_put_many_queues_a_batch_of_one_workspace_as_put_would() -> None:
    async def main() -> None:
        rec = Recorder()
        lanes: FairLanes[str] = FairLanes(rec.run, lanes=10, per_workspace=2)
        assert lanes.put_many("a", ["a0", "a1", "a2"]) == 1  # two may start, one is parked
        assert lanes.put_many("a", ["a3"]) == 1 and lanes.put_many("b", []) == 0
        assert lanes.put_many("b", ["b0"]) == 0
        await settle()
        assert rec.started == ["a0", "b0", "a1"] and lanes.waiting("a") == 2 and lanes.runnable == 0
        rec.finish("a0")
        await settle()
        assert rec.started[-1] == "a2"
        lanes.take_all()
        for item in ("a1", "a2", "b0"):
            rec.finish(item)
        await asyncio.wait_for(lanes.join(), 1)

    asyncio.run(main())
