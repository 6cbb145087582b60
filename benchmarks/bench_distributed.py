"""A build over two torchrun ranks against one process, on this machine: the whole `identify build-index`
command, wall time, same photos, same model (the ImageNet EfficientNet-Lite0 of the demo), each build into a
fresh data dir. Issue 13 asks that two ranks be no more than 10 % slower than one on a single machine; on more
cores or GPUs they should be faster.

    .venv/bin/python benchmarks/bench_distributed.py [--images 400] [--ranks 2]
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

from identify.demo_model import convert_demo_model
from identify.synthetic import make_species_folder

BIN = Path(sys.executable).parent
SPECIES = ["Passer domesticus", "Corvus cornix", "Columba livia", "Upupa epops"]


def timed_build(command: list[str], data_dir: Path, extra_env: dict[str, str]) -> tuple[float, dict]:
    env = {**os.environ, "IDENTIFY_DATA_DIR": str(data_dir), **extra_env}
    env.pop("IDENTIFY_DATABASE_URL", None)
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        sys.exit(f"build failed: {run.stderr[-1500:]}")
    reports = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return seconds, next(r for r in reports if r.get("rank", 0) == 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="pairs of builds, the order alternating")
    options = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        refs = make_species_folder(root / "refs", SPECIES, per=options.images // len(SPECIES))
        model = convert_demo_model(root / "lite0.pt")
        args = ["build-index", "--model", str(model), "--images", str(refs), "--name", "bench", "--json"]
        for repeat in range(options.repeat):
            def alone(repeat: int = repeat) -> tuple[float, dict]:
                return timed_build([str(BIN / "identify"), *args], root / f"one{repeat}", {})

            def ranked(repeat: int = repeat) -> tuple[float, dict]:
                return timed_build([str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={options.ranks}",
                                    "-m", "identify", *args], root / f"many{repeat}", {"OMP_NUM_THREADS": "1"})

            if repeat % 2 == 0:  # alternate which goes first: the second may find warmer caches
                (one, single), (many, shared) = alone(), ranked()
            else:
                (many, shared), (one, single) = ranked(), alone()
            assert single["count"] == shared["count"] == options.images // len(SPECIES) * len(SPECIES)
            ratios.append(many / one)
            print(f"build of {single['count']} photos: one process {one:.1f} s, {options.ranks} ranks {many:.1f} s; "
                  f"ranks/one {many / one:.2f} (target <= 1.10 on one machine); cores {os.cpu_count()}", flush=True)
    if len(ratios) > 1:
        print(f"ranks/one over {len(ratios)} pairs: median {sorted(ratios)[len(ratios) // 2]:.2f}, "
              f"range {min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
