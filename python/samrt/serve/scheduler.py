"""Inference off the event loop: a fixed pool of worker threads, each with its own
Predictor over the one shared Model, fed from one bounded priority queue.

- Priorities: interactive work (a click's predict, the encode it waits for) runs before
  background work (everything-mode jobs), which runs before prefetch (encoding the next
  images of the queue). A long background task hands its worker to waiting interactive
  tasks between its decoder batches (:meth:`Scheduler.serve_interactive`).
- Bounded: at most ``max_queue`` tasks wait; :meth:`Scheduler.submit` raises
  :class:`QueueFullError` beyond that (the service answers 503 with Retry-After) and never
  lets a backlog grow without bound. Prefetch is dropped rather than refused.
- Cancellable: a task that has not started can be cancelled (a client that disconnected);
  it is then never run.

A Predictor is not thread-safe; each belongs to one worker thread and no other thread
touches it.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, TypeVar

from .. import Model, Predictor

__all__ = ["Priority", "QueueFullError", "Scheduler", "Task", "Worker"]

log = logging.getLogger("samrt.serve")

T = TypeVar("T")


class Priority(IntEnum):
    INTERACTIVE = 0
    BACKGROUND = 1
    PREFETCH = 2


class QueueFullError(Exception):
    """The work queue is full: try again later."""

    def __init__(self, depth: int, retry_after_s: int = 1) -> None:
        super().__init__(f"the inference queue is full ({depth} tasks waiting); retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Worker:
    """What a task gets: its worker's own Predictor (and a second one for the automatic
    mask generator, whose image is a crop and must not replace a click's image)."""

    def __init__(self, index: int, model: Model, max_image_pixels: int | None, scheduler: Scheduler) -> None:
        self.index = index
        self.model = model
        self.max_image_pixels = max_image_pixels
        self.predictor = Predictor(model, max_image_pixels=max_image_pixels)
        self._scheduler = scheduler

    def serve_interactive(self) -> None:
        """Runs the interactive tasks waiting now, on this worker (from a background task)."""
        self._scheduler._run_interactive(self)


@dataclass(eq=False)
class Task(Generic[T]):
    fn: Callable[[Worker], T]
    priority: Priority
    name: str
    future: Future[T] = field(default_factory=Future)
    claimed: bool = False


class Scheduler:
    def __init__(
        self,
        model: Model,
        *,
        workers: int,
        max_queue: int,
        max_image_pixels: int | None,
        on_cancel: Callable[[Task[Any]], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.model = model
        self.n_workers = workers
        self.max_queue = max_queue
        self.max_image_pixels = max_image_pixels
        self._on_cancel = on_cancel
        self._heap: list[tuple[int, int, Task[Any]]] = []
        self._seq = itertools.count()
        self._depth = {p: 0 for p in Priority}
        self._cv = threading.Condition(threading.RLock())
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.running = 0

    # -- submitting ----------------------------------------------------------------------

    def submit(self, fn: Callable[[Worker], T], priority: Priority, name: str) -> Task[T]:
        """Queues ``fn(worker)``. Raises QueueFullError when ``max_queue`` tasks wait
        (for PREFETCH: when half of it does, so that prefetch never crowds out clicks)."""
        task: Task[T] = Task(fn, priority, name)
        with self._cv:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            depth = self.depth()
            limit = self.max_queue // 2 if priority == Priority.PREFETCH else self.max_queue
            if depth >= limit:
                raise QueueFullError(depth)
            self._start_threads()
            self._depth[priority] += 1
            heapq.heappush(self._heap, (int(priority), next(self._seq), task))
            task.future.add_done_callback(functools.partial(self._cancelled, task))
            self._cv.notify()
        return task

    def raise_priority(self, task: Task[Any], priority: Priority) -> None:
        """Moves a waiting task up (a prefetched encode that a click now waits for)."""
        with self._cv:
            if task.claimed or task.future.done() or priority >= task.priority:
                return
            self._depth[task.priority] -= 1
            self._depth[priority] += 1
            task.priority = priority
            heapq.heappush(self._heap, (int(priority), next(self._seq), task))  # the old entry is skipped
            self._cv.notify()

    def cancel(self, task: Task[Any]) -> bool:
        """Cancels a task that has not started; False when it already runs or ran."""
        return task.future.cancel()

    def _cancelled(self, task: Task[Any], future: Future[Any]) -> None:
        if not future.cancelled():
            return
        with self._cv:
            if not task.claimed:
                task.claimed = True
                self._depth[task.priority] -= 1
        if self._on_cancel is not None:
            self._on_cancel(task)

    def depth(self, priority: Priority | None = None) -> int:
        with self._cv:
            if priority is None:
                return sum(self._depth.values())
            return self._depth[priority]

    # -- running -------------------------------------------------------------------------

    def _start_threads(self) -> None:
        if self._threads:
            return
        for i in range(self.n_workers):
            thread = threading.Thread(target=self._loop, args=(i,), name=f"samrt-serve-worker-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _claim(self, task: Task[Any], entry_priority: int) -> bool:
        """With the lock held: whether this heap entry's task runs now (once)."""
        if task.claimed or entry_priority != int(task.priority):
            return False
        if not task.future.set_running_or_notify_cancel():
            return False  # cancelled; _cancelled did the bookkeeping
        task.claimed = True
        self._depth[task.priority] -= 1
        return True

    def _next(self, only_interactive: bool) -> Task[Any] | None:
        with self._cv:
            while True:
                while self._heap:
                    if only_interactive and self._heap[0][0] != Priority.INTERACTIVE:
                        return None
                    entry_priority, _, task = heapq.heappop(self._heap)
                    if self._claim(task, entry_priority):
                        self.running += 1
                        return task
                if only_interactive:
                    return None
                if self._closed:
                    return None
                self._cv.wait()

    def _loop(self, index: int) -> None:
        worker = Worker(index, self.model, self.max_image_pixels, self)
        while True:
            task = self._next(only_interactive=False)
            if task is None:
                return
            self._execute(task, worker)

    def _run_interactive(self, worker: Worker) -> None:
        while (task := self._next(only_interactive=True)) is not None:
            self._execute(task, worker)

    def _execute(self, task: Task[Any], worker: Worker) -> None:
        error: BaseException | None = None
        result: Any = None
        try:
            result = task.fn(worker)
        except BaseException as e:  # handed to the awaiting request, which answers for it
            error = e
        with self._cv:  # not running any more once its result can be seen
            self.running -= 1
        if error is not None:
            task.future.set_exception(error)
        else:
            task.future.set_result(result)

    def close(self) -> None:
        """Stops the workers once the running tasks finish; cancels the waiting ones."""
        with self._cv:
            self._closed = True
            waiting = [task for _, _, task in self._heap]
            self._heap.clear()
            self._cv.notify_all()
        for task in waiting:
            task.future.cancel()
        for thread in self._threads:
            thread.join(timeout=30)
