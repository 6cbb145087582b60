"""Concurrent requests share one forward pass.

One worker thread runs the model. A request hands its photo over and waits. When the worker is free it takes
every photo waiting at that moment, up to `max_batch`, and runs them as one batch. A lone request never waits
for company. Under load, the photos that arrive during one pass form the next batch, which uses the
hardware far better than one pass per request."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    def __init__(self, run: Callable[[Sequence[Item]], Sequence[Result]], max_batch: int = 32, name: str = "batcher"):
        self._run = run
        self._max_batch = max_batch
        self._waiting: queue.SimpleQueue[tuple[Item, Future[Result]]] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._serve, name=name, daemon=True)
        self._worker.start()

    def submit(self, item: Item) -> Result:
        """The result for `item`, computed in a batch with whatever else is waiting; its error is raised here."""
        return self.submit_many([item])[0]

    def submit_many(self, items: Sequence[Item]) -> list[Result]:
        """Results for several items (the photos of one sighting), queued together so they share a pass."""
        futures: list[Future[Result]] = []
        for item in items:
            futures.append(Future())
            self._waiting.put((item, futures[-1]))
        return [future.result() for future in futures]

    def _take_batch(self) -> list[tuple[Item, Future[Result]]]:
        batch = [self._waiting.get()]  # block until there is work
        while len(batch) < self._max_batch:
            try:
                batch.append(self._waiting.get_nowait())
            except queue.Empty:
                break
        return batch

    def _serve(self) -> None:
        while True:
            batch = self._take_batch()
            try:
                results = self._run([item for item, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - every waiter gets the error, the worker lives on
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)
