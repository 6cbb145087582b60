"""Memory of four server processes holding one published index: each loading its own copy against all four
memory-mapping the same file (what `identify serve` does on a machine without a GPU; issue 13, item 2).

A 1M x 128 flat index (512 MB of vectors) is published once. Then, for each way, four processes open it with
`identify.vectors.published.load_index` (the server's own call), run searches that read every vector, and
report their memory from /proc/PID/smaps_rollup while all four are alive:

- RSS: what `top` shows; it counts a shared page in every process that touched it;
- PSS: each shared page divided among the processes sharing it, so the four PSS add up to the memory used;
- anonymous: memory that is the process's own (not backed by the index file).

    .venv/bin/python benchmarks/bench_shared_index.py [--vectors 1000000] [--processes 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `benchmarks.bench_search` from a checkout

HOLDER = """
import sys, time
import numpy as np
from identify.vectors.published import load_index
index = load_index(__import__("pathlib").Path(sys.argv[1]), "shared", mapped=sys.argv[2] == "mapped")
queries = np.random.default_rng(1).standard_normal((64, index.manifest.dim)).astype(np.float32)
index.search(queries, 10)  # an exact search reads every vector
print("ready", flush=True)
sys.stdin.read()  # until the parent has measured
"""


def memory_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) / 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"], "anonymous": fields["Anonymous"]}


def hold(indexes_dir: Path, how: str, processes: int) -> list[dict[str, float]]:
    """The memory of `processes` holders of the index, measured while all of them are alive."""
    holders = [subprocess.Popen([sys.executable, "-c", HOLDER, str(indexes_dir), how], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(processes)]
    try:
        for holder in holders:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        return [memory_mb(holder.pid) for holder in holders]
    finally:
        for holder in holders:
            holder.communicate("")


def main() -> None:
    from benchmarks.bench_search import random_unit
    from identify.identity import ModelIdentity
    from identify.vectors.plan import build_faiss_index, plan_index
    from identify.vectors.published import new_manifest, publish

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        indexes_dir = Path(folder)
        vectors = random_unit(args.vectors, args.dim, 3, clusters=1000)
        plan = plan_index(args.vectors, "flat")
        identity = ModelIdentity(name="bench", network="bench", sha256="0" * 64, classes=["a"], signature={},
                                 rgb_stats={}, size=(224, 224), embedding_dim=args.dim)
        ids = np.arange(1, args.vectors + 1)
        publish(build_faiss_index(ids, vectors, plan), new_manifest(identity, plan, args.vectors, args.vectors),
                indexes_dir, "shared")
        del vectors
        file_mb = (indexes_dir / "shared" / "index.faiss").stat().st_size / 2**20
        results = {}
        for how in ("loaded", "mapped"):
            alone = hold(indexes_dir, how, 1)[0]
            together = hold(indexes_dir, how, args.processes)
            results[how] = {"one_rss": alone["rss"], "sum_rss": sum(m["rss"] for m in together),
                            "sum_pss": sum(m["pss"] for m in together),
                            "sum_anonymous": sum(m["anonymous"] for m in together)}
    n = args.processes
    print(f"{args.vectors:,} x {args.dim} flat index, {file_mb:.0f} MB file; {n} processes each way (MB)")
    print(f"{'':8s} {'RSS of 1':>9s} {f'RSS of {n}':>9s} {f'PSS of {n}':>9s} {f'own of {n}':>9s}")
    for how, r in results.items():
        print(f"{how:8s} {r['one_rss']:9.0f} {r['sum_rss']:9.0f} {r['sum_pss']:9.0f} {r['sum_anonymous']:9.0f}")
    loaded, mapped = results["loaded"], results["mapped"]
    print(f"memory of {n} (PSS): mapped / loaded = {mapped['sum_pss'] / loaded['sum_pss']:.2f}; "
          f"{n} mapped against 1 loaded = {mapped['sum_pss'] / loaded['one_rss']:.2f}")
    print("JSON " + json.dumps({how: {key: round(value) for key, value in r.items()} for how, r in results.items()}))


if __name__ == "__main__":
    main()
