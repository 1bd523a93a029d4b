"""Fair lanes: one worker's requests in flight, shared by workspaces in turn.

`FairLanes` runs work items, each belonging to one workspace, on up to `lanes` coroutines (a
request in flight each) with at most `per_workspace` of them busy with one workspace:

* a workspace's items start in the order they were put (first in, first out);
* when a lane is free, the workspaces with waiting items take turns (round robin), so one
  workspace's backlog never stands in front of another's items;
* a workspace with `per_workspace` items running waits (its items are *parked*) even when lanes
  are free: its slow or hanging targets hold at most that many lanes, and the others stay free
  for the other workspaces' firings.

`runnable` counts the items that may start as soon as a lane is free (parked ones excluded):
the worker takes its next batch when it reaches 0 (scheduler_api.delivery.dispatch). Nothing here
touches Redis or the clock; the lanes live in the worker's event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FairLanes(Generic[T]):
    """Up to `lanes` items running at once, at most `per_workspace` of one workspace (module docstring).

    `run(item)` must not raise: it is the caller's job to record what went wrong.
    """

    def __init__(self, run: Callable[[T], Awaitable[None]], *, lanes: int, per_workspace: int) -> None:
        self.run = run
        self.lanes = lanes
        self.per_workspace = max(1, min(per_workspace, lanes))
        self.stopping = False  # lanes take nothing more; `take_all` empties the queues
        # Items that may start now: per workspace, its waiting items up to its free slots.
        self.runnable = 0
        self.running = 0
        self._queues: dict[str, deque[T]] = {}  # workspace -> its waiting items, oldest first
        self._in_flight: dict[str, int] = {}  # workspace -> its items running
        self._turns: deque[str] = deque()  # workspaces with runnable items, in turn order
        self._idle: list[asyncio.Future[None]] = []  # lanes waiting for work
        self._woken = 0  # lanes woken (or created) that have not looked for an item yet
        self._tasks: set[asyncio.Task[None]] = set()
        self._drained: list[asyncio.Future[None]] = []  # `wait_runnable` callers

    def waiting(self, workspace: str) -> int:
        """Items of `workspace` not started yet (runnable or parked)."""
        queue = self._queues.get(workspace)
        return len(queue) if queue is not None else 0

    @property
    def busy(self) -> bool:
        return self.running > 0 or bool(self._queues)

    def put(self, workspace: str, item: T) -> bool:
        """Queue `item` behind `workspace`'s earlier items; a free lane starts it when its turn comes.
        False: it is parked (its workspace has as many items running or ahead of it as it may run)."""
        return self.put_many(workspace, [item]) == 0

    def put_many(self, workspace: str, items: list[T]) -> int:
        """`put` each of `items` (in order) at once; return how many of them are parked."""
        if not items:
            return 0
        queue = self._queues.get(workspace)
        if queue is None:
            queue = self._queues[workspace] = deque()
        free = self.per_workspace - self._in_flight.get(workspace, 0)
        before = min(len(queue), free)  # its runnable items so far
        queue.extend(items)
        added = min(len(queue), free) - before
        if added:
            self.runnable += added
            if not before:
                self._turns.append(workspace)
            self._wake(0)
        return len(items) - added

    async def wait_runnable(self) -> None:
        """Return once no item may start now (every lane busy with what it took, or the rest parked),
        or the lanes stop."""
        if self.runnable > 0 and not self.stopping:
            done = asyncio.get_running_loop().create_future()
            self._drained.append(done)
            await done

    def take_all(self) -> list[T]:
        """Stop: lanes finish their items and take no more; return the items never started."""
        self.stopping = True
        left = [item for queue in self._queues.values() for item in queue]
        self._queues.clear()
        self._turns.clear()
        self.runnable = 0
        self._notify_drained()
        self._release_idle()
        return left

    async def join(self) -> None:
        """Wait for the items running now to end (after `take_all`)."""
        self._release_idle()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _release_idle(self) -> None:
        idle, self._idle = self._idle, []
        for waiting in idle:
            if not waiting.done():
                waiting.set_result(None)

    def _wake(self, spare: int) -> None:
        """Get enough lanes looking for items for the runnable ones; `spare`: lanes about to look anyway."""
        while self._woken + spare < self.runnable:
            if self._idle:
                idle = self._idle.pop()
                if idle.done():  # cancelled: its lane is gone
                    continue
                idle.set_result(None)
            elif len(self._tasks) < self.lanes:
                task = asyncio.get_running_loop().create_task(self._lane())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                return
            self._woken += 1

    def _take(self) -> tuple[str, T] | None:
        turns = self._turns
        if not turns:
            return None
        workspace = turns.popleft()
        queue = self._queues[workspace]
        item = queue.popleft()
        running = self._in_flight[workspace] = self._in_flight.get(workspace, 0) + 1
        self.runnable -= 1
        if not queue:
            del self._queues[workspace]
        elif running < self.per_workspace:
            turns.append(workspace)  # its next item waits for the other workspaces' turns
        if self.runnable == 0 and self._drained:
            self._notify_drained()
        return workspace, item

    def _end(self, workspace: str) -> None:
        before = self._in_flight[workspace]
        if before > 1:
            self._in_flight[workspace] = before - 1
        else:
            del self._in_flight[workspace]
        queue = self._queues.get(workspace)
        if queue and not self.stopping and len(queue) > self.per_workspace - before:  # a parked item may start
            self.runnable += 1
            if before == self.per_workspace:
                self._turns.append(workspace)
            self._wake(1)  # this lane looks for its next item itself

    def _notify_drained(self) -> None:
        waiters, self._drained = self._drained, []
        for done in waiters:
            done.set_result(None)

    async def _lane(self) -> None:
        loop = asyncio.get_running_loop()
        self._woken -= 1
        while not self.stopping:
            taken = self._take()
            if taken is None:
                idle = loop.create_future()
                self._idle.append(idle)
                await idle
                self._woken -= 1
                continue
            workspace, item = taken
            self.running += 1
            try:
                await self.run(item)
            finally:
                self.running -= 1
                self._end(workspace)
