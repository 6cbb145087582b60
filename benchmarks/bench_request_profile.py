"""Where a request's CPU goes besides the forward pass (issue 13, item 5): a CPU-time profile of
`POST /api/v1/identify`, stage by stage, in core-ms per request.

bench_service.py measures the whole server from outside: under load it spent 43.2 core-ms a request, of which
the batched forward took 30.6. A sampling profiler perturbed that server too much (BENCHMARKS.md: service), so this
profiles the same work in one process, deterministically: the app (xcit_nano12_p16 at 256 px, random weights,
SQLite, the same photos as bench_service) serves N uploads through Flask's test client.

- Each stage of the request thread is timed where the code calls it, with `time.thread_time`: its CPU, not
  its waiting (the wait for the batcher costs nothing). cProfile was tried first and inflated Python-heavy
  stages up to 20× (werkzeug's multipart parsing: 5.9 ms profiled, 0.74 ms alone), so it is not used.
- The batcher thread (transform, forward, search) is timed the same way; torch runs on one thread here, so
  its forward's CPU is that thread's.
- Not in it: waitress (reading the socket, parsing HTTP headers), which bench_service's server includes.

    .venv/bin/python benchmarks/bench_request_profile.py [--requests 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.bench_service import BIN, SPECIES, multipart, photos  # noqa: E402
from identify.synthetic import make_species_folder, write_birder_checkpoint  # noqa: E402

def timed_in_thread(function: Callable[..., Any], totals: dict[str, float], key: str) -> Callable[..., Any]:
    """`function`, adding the CPU time of the calling thread it takes to totals[key]."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.thread_time() - started
    return wrapper


def time_stages(service: Any, totals: dict[str, float]) -> list[str]:
    """Wrap each stage of an upload where the code calls it (none calls another, so they add up); their
    labels, in the order a request meets them."""
    import flask.wrappers

    from identify.batching import MicroBatcher
    from identify.uploads import UploadPipeline
    from identify.web import api

    stages = [
        ("multipart parsing (werkzeug)", flask.wrappers.Request, "_load_form_data"),
        ("checking the fields, reading the photo", api, "parse_upload"),
        ("reading the photos: EXIF and pixels (Pillow)", UploadPipeline, "read_all"),
        ("framing the photos (crops, detector)", UploadPipeline, "frame"),
        ("handing to the batcher, waiting", MicroBatcher, "submit_many"),
        ("fusion, prior, decision (explain)", service.identifier, "explain"),
        ("storing the photo file", service.photos, "save"),
        ("SQL: the sighting and its predictions", service.sightings, "add"),
        ("similar-sightings index add", service.similar_index, "add"),
        ("the answer's JSON body (views)", api.views, "identification_json"),
        ("jsonify", api, "jsonify"),
    ]
    for label, owner, name in stages:
        setattr(owner, name, timed_in_thread(getattr(owner, name), totals, label))
    batcher = service.identifier
    batcher.backbone.batch = timed_in_thread(batcher.backbone.batch, totals, "batcher: transform")
    batcher.backbone.forward = timed_in_thread(batcher.backbone.forward, totals, "batcher: forward")
    batcher.index.search = timed_in_thread(batcher.index.search, totals, "batcher: search")
    return [label for label, _, _ in stages]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--network", default="xcit_nano12_p16")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the batcher thread's CPU is then its forward's CPU
    root = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    os.environ.update({"IDENTIFY_DATA_DIR": str(root / "var"), "IDENTIFY_IDENTIFY_LIMIT": "off",
                       "IDENTIFY_CHECK_RESPONSES": "0", "IDENTIFY_INDEX": "bench"})
    checkpoint = write_birder_checkpoint(args.network, SPECIES, args.size, root / f"{args.network}_bench.pt")
    os.environ["IDENTIFY_MODEL"] = str(checkpoint)
    refs = make_species_folder(root / "refs", SPECIES, per=16)
    subprocess.run([str(BIN / "identify"), "build-index", "--model", str(checkpoint), "--images", str(refs),
                    "--name", "bench"], check=True, capture_output=True)
    from identify.web import create_app

    app = create_app()
    service = app.extensions["identify"]
    totals: dict[str, float] = {}
    labels = time_stages(service, totals)
    client = app.test_client()

    def upload(data: bytes) -> None:
        body, content_type = multipart(data)
        response = client.post("/api/v1/identify", data=body, content_type=content_type)
        assert response.status_code == 201, response.get_data(as_text=True)

    for data in photos(5, 90_000):
        upload(data)  # warm-up
    totals.clear()
    uploads = photos(args.requests, 0)
    started_thread, started_process = time.thread_time(), time.process_time()
    for data in uploads:
        upload(data)
    n = args.requests
    request_ms = (time.thread_time() - started_thread) * 1000 / n
    process_ms = (time.process_time() - started_process) * 1000 / n
    per_request = {key: seconds * 1000 / n for key, seconds in totals.items()}
    named = sum(per_request[label] for label in labels)
    print(f"{args.network} @{args.size}, {n} uploads of 640x480 JPEGs, torch on 1 thread, SQLite; core-ms a request")
    print(f"request thread, all of it                {request_ms:6.2f}")
    for label in labels:
        print(f"  {label:<38} {per_request[label]:6.2f}")
    print(f"  Flask, routing, rate limiter, logging  {request_ms - named:6.2f}")
    for key in ("batcher: transform", "batcher: forward", "batcher: search"):
        print(f"{key:<40} {per_request[key]:6.2f}")
    print(f"process CPU, all threads                 {process_ms:6.2f}")
    print("JSON " + json.dumps({"request_thread_ms": round(request_ms, 2), "process_ms": round(process_ms, 2),
                               **{key: round(ms, 2) for key, ms in per_request.items()}}))


if __name__ == "__main__":
    main()
