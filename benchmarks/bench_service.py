"""Service: latency of POST /api/v1/identify minus the model's own forward time, throughput with 8 and 32
concurrent clients against the batched forward, and the peak memory of a server holding a 1M-vector index.

A real `identify serve` on loopback (xcit_nano12_p16 at 256 px, random weights, SQLite); the load generator
is a separate process with a fixed number of clients, each sending its next photo when the last is answered.

    .venv/bin/python benchmarks/bench_service.py [--requests 100] [--clients 8,32] [--million]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from identify.synthetic import free_port, jpeg_bytes, make_species_folder, species_photo, write_birder_checkpoint

BIN = Path(sys.executable).parent
SPECIES = ["Passer_domesticus", "Corvus_cornix", "Columba_livia", "Pica_pica"]


def photos(count: int, seed: int) -> list[bytes]:
    """Distinct 640x480 JPEGs, so each upload is a new photo to store."""
    return [jpeg_bytes(species_photo(i % 4, seed + i, size=480).resize((640, 480)), quality=90) for i in range(count)]


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="b.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Client:
    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def identify(self, data: bytes) -> tuple[float, float]:
        """(latency seen by the client, the model's forward time the server reports in Server-Timing), in s."""
        body, content_type = multipart(data)
        started = time.perf_counter()
        self.connection.request("POST", "/api/v1/identify", body=body, headers={"Content-Type": content_type})
        response = self.connection.getresponse()
        response.read()
        latency = time.perf_counter() - started
        if response.status != 201:
            raise SystemExit(f"identify answered {response.status}")
        model = response.getheader("Server-Timing", "").split(";dur=")[1].split(";")[0]
        return latency, float(model) / 1000


def serve(root: Path, checkpoint: Path, index: str, threads: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "IDENTIFY_DATA_DIR": str(root / "var"), "IDENTIFY_MODEL": str(checkpoint),
           "IDENTIFY_INDEX": index, "IDENTIFY_IDENTIFY_LIMIT": "off"}  # a load test is not an abuser
    server = subprocess.Popen([str(BIN / "identify"), "serve", "--port", str(port), "--threads", str(threads)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/api/v1/status")
            if connection.getresponse().status == 200:
                return server, port
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def percentile(ordered: list[float], q: int) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def model_times(backbone, batch: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(median forward ms at batch 1, img/s of batched forward at `batch`), in this process."""
    tensor = backbone.transform(species_photo(0, 1, size=480).resize((640, 480)))
    single = tensor[None]
    for _ in range(5):
        backbone.forward(single)
    times = []
    for _ in range(50):
        started = time.perf_counter()
        backbone.forward(single)
        times.append(time.perf_counter() - started)
    batched = tensor[None].repeat(batch, 1, 1, 1)
    backbone.forward(batched)
    rates = []
    for _ in range(3):  # the best of three: the strictest reference for the throughput ratio
        started = time.perf_counter()
        for _ in range(5):
            backbone.forward(batched)
        rates.append(5 * batch / (time.perf_counter() - started))
    return statistics.median(times) * 1000, max(rates)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(port: int, clients: int, per_client: int, seed: int) -> tuple[float, float]:
    """(requests/s, median forward ms the server reported) with `clients` concurrent clients, each sending
    `per_client` photos back to back."""
    payloads = [photos(per_client, seed + 1000 * c) for c in range(clients)]
    connections = [Client(port) for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    forwards: list[float] = []

    def run(c: int) -> None:
        start.wait()
        for data in payloads[c]:
            forwards.append(connections[c].identify(data)[1])

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return clients * per_client / (time.perf_counter() - started), statistics.median(forwards) * 1000


def publish_million(root: Path, checkpoint: Path, dim: int) -> None:
    """A published flat index of 1M random vectors for this model (SQL knows the index, not the vectors)."""
    from identify.backbone import load_backbone
    from identify.config import load_settings
    from identify.storage import Store, make_engine
    from identify.vectors.plan import build_faiss_index, plan_index
    from identify.vectors.published import new_manifest, publish

    backbone = load_backbone(str(checkpoint))
    settings = load_settings({"IDENTIFY_DATA_DIR": str(root / "var")})
    store = Store(make_engine(settings.database_url))
    store.open_index("million", store.register_model(backbone.identity))
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1_000_000, dim), dtype=np.float32)
    ids = np.arange(10_000_000, 11_000_000, dtype=np.int64)
    plan = plan_index(len(ids), "flat")
    index = build_faiss_index(ids, vectors, plan)
    publish(index, new_manifest(backbone.identity, plan, len(ids), int(ids.max())), settings.indexes_dir, "million")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="xcit_nano12_p16")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--requests", type=int, default=100, help="sequential requests for the latency figures")
    parser.add_argument("--clients", default="8,32")
    parser.add_argument("--per-client", type=int, default=12)
    parser.add_argument("--million", action="store_true", help="also measure peak RSS with a 1M-vector index")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-service-"))
    checkpoint = write_birder_checkpoint(args.network, SPECIES, args.size, root / f"{args.network}_bench.pt")
    refs = make_species_folder(root / "refs", SPECIES, per=16)
    env = {**os.environ, "IDENTIFY_DATA_DIR": str(root / "var")}
    subprocess.run([str(BIN / "identify"), "build-index", "--model", str(checkpoint), "--images", str(refs),
                    "--name", "bench"], env=env, check=True, capture_output=True)
    from identify.backbone import load_backbone

    backbone = load_backbone(str(checkpoint))
    forward_ms, batched_ips = model_times(backbone, 32)

    server, port = serve(root, checkpoint, "bench", threads=40)
    try:
        client = Client(port)
        for data in photos(5, 90_000):
            client.identify(data)  # warm-up
        measured = [client.identify(data) for data in photos(args.requests, 0)]
        latencies = sorted(latency * 1000 for latency, _ in measured)
        overheads = sorted((latency - model) * 1000 for latency, model in measured)  # per request, same pass
        server_forward = statistics.median(model * 1000 for _, model in measured)
        results = {"forward_ms": round(forward_ms, 2), "server_forward_ms": round(server_forward, 2),
                   "p50_ms": round(percentile(latencies, 50), 2), "p99_ms": round(percentile(latencies, 99), 2),
                   "overhead_p50_ms": round(percentile(overheads, 50), 2),
                   "overhead_p99_ms": round(percentile(overheads, 99), 2),
                   "batched_forward_ips": round(batched_ips, 1)}
        server_cpu, client_cpu = cpu_seconds(server.pid), cpu_seconds(os.getpid())
        rates = {int(c): load(port, int(c), args.per_client, seed=10_000 * int(c)) for c in args.clients.split(",")}
        served = args.per_client * sum(rates)
        results["server_cpu_ms_per_request"] = round((cpu_seconds(server.pid) - server_cpu) * 1000 / served, 1)
        results["client_cpu_ms_per_request"] = round((cpu_seconds(os.getpid()) - client_cpu) * 1000 / served, 1)
        # This machine's speed drifts over minutes: the reference is the faster of before and after the load.
        batched_ips = max(batched_ips, model_times(backbone, 32)[1])
        results["batched_forward_ips"] = round(batched_ips, 1)
        for clients, (rps, forward) in rates.items():
            results[f"rps_{clients}"] = round(rps, 1)
            results[f"ratio_{clients}"] = round(rps / batched_ips, 3)
            results[f"forward_ms_{clients}"] = round(forward, 1)
        results["rss_small_index_mb"] = round(peak_rss_mb(server.pid), 1)
    finally:
        server.terminate()
        server.wait(30)
    print(f"{args.network} @{args.size}, torch threads {torch.get_num_threads()}, SQLite, identify serve --threads 40")
    print(f"model forward, batch 1 (median)   {results['forward_ms']:7.2f} ms here, "
          f"{results['server_forward_ms']:.2f} ms in the server (Server-Timing)")
    print(f"POST /identify p50 / p99          {results['p50_ms']:7.2f} / {results['p99_ms']:.2f} ms "
          f"(one client, {args.requests} photos 640x480)")
    print(f"overhead over the forward, p50    {results['overhead_p50_ms']:7.2f} ms (target <= 15)   "
          f"p99 {results['overhead_p99_ms']:.2f} ms  (latency minus the same request's forward)")
    print(f"batched forward (batch 32)        {results['batched_forward_ips']:7.1f} img/s (best of before/after)")
    for clients in (int(c) for c in args.clients.split(",")):
        print(f"{clients:>2} concurrent clients             {results[f'rps_{clients}']:7.1f} req/s   ratio to batched "
              f"forward {results[f'ratio_{clients}']:.2f} (target >= 0.8); a batch's forward took "
              f"{results[f'forward_ms_{clients}']:.0f} ms (median)")
    print(f"CPU per request under load        server {results['server_cpu_ms_per_request']:.1f} ms, load generator "
          f"{results['client_cpu_ms_per_request']:.1f} ms (same 2 cores; the batched forward alone needs "
          f"{2000 / results['batched_forward_ips']:.1f} core-ms per photo)")
    print(f"peak RSS, {len(list(refs.rglob('*.jpg')))}-reference index   {results['rss_small_index_mb']:7.1f} MB")
    if args.million:
        publish_million(root, checkpoint, dim=128)
        server, port = serve(root, checkpoint, "million", threads=8)
        try:
            client = Client(port)
            for data in photos(10, 50_000):
                client.identify(data)
            results["rss_million_mb"] = round(peak_rss_mb(server.pid), 1)
        finally:
            server.terminate()
            server.wait(30)
        print(f"peak RSS, 1M-vector index (128-d)  {results['rss_million_mb']:7.1f} MB "
              f"(the vectors alone: {1_000_000 * 128 * 4 / 2**20:.0f} MB)")
    print("JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
