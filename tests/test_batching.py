"""Concurrent submissions share one run; a lone one runs at once; errors reach every waiter."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from identify.batching import MicroBatcher


def test_submissions_that_arrive_during_a_run_form_the_next_batch():
    sizes: list[int] = []
    release = threading.Event()

    def run(items):
        sizes.append(len(items))
        if len(sizes) == 1:
            release.wait(5)  # hold the first run while the others queue up
        return [item * 2 for item in items]

    batcher = MicroBatcher(run, max_batch=8)
    with ThreadPoolExecutor(max_workers=12) as pool:
        first = pool.submit(batcher.submit, 0)
        time.sleep(0.2)
        rest = [pool.submit(batcher.submit, i) for i in range(1, 11)]
        time.sleep(0.3)
        release.set()
        assert first.result() == 0 and [f.result() for f in rest] == [2 * i for i in range(1, 11)]
    assert sizes[0] == 1 and sizes[1] == 8 and sum(sizes) == 11  # capped at max_batch


def test_an_error_reaches_every_waiter_and_the_worker_lives_on():
    def run(items):
        if "bad" in items:
            raise ValueError("boom")
        return items

    batcher = MicroBatcher(run)
    with pytest.raises(ValueError, match="boom"):
        batcher.submit("bad")
    assert batcher.submit("good") == "good"
