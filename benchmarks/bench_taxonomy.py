"""Taxonomy at start-up: what resolving a model's labels adds to a server's start (target: at most 1 s), with
the cached name index (every start after the first) and without it (the very first, which builds the cache),
and what one lookup costs once resolved (target: a dict access). Each figure runs in a fresh process, so
nothing is warm that a real start would not have warm.

    .venv/bin/python benchmarks/bench_taxonomy.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

PROBE = r"""
import json, sys, time
started = time.perf_counter()
from identify.demo_model import imagenet_classes
labels = imagenet_classes()  # 1000 labels, 59 of them birds: the demo model's classes
loaded = time.perf_counter()
from identify.taxonomy import Taxonomy
names = Taxonomy()
resolved = names.resolve_all(labels)
done = time.perf_counter()
for _ in range(100):
    for label in labels:
        names.resolve(label)
lookups = (time.perf_counter() - done) / (100 * len(labels))
print(json.dumps({"resolve_seconds": done - loaded, "resolved": sum(t is not None for t in resolved.values()),
                  "labels": len(labels), "lookup_seconds": lookups}))
"""


def run(cache: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={"XDG_CACHE_HOME": cache, "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        cold = run(cache)  # builds the index from birdnames' tables and caches it
        warm = run(cache)
    print(f"{warm['labels']} labels, {warm['resolved']} resolve to a taxon")
    print(f"start-up cost, cached index: {warm['resolve_seconds']:.3f} s = {warm['resolve_seconds'] / 1.0:.2f} of the "
          f"1 s budget")
    print(f"start-up cost, first start ever (builds the cache): {cold['resolve_seconds']:.3f} s = "
          f"{cold['resolve_seconds'] / warm['resolve_seconds']:.1f}x the cached start")
    print(f"one lookup once resolved: {warm['lookup_seconds'] * 1e9:.0f} ns")
    print("JSON " + json.dumps({"cold": cold, "warm": warm}))


if __name__ == "__main__":
    main()
