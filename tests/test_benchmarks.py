"""Benchmarks that must behave on this machine too: the GPU benchmark says plainly that it measured nothing, and
the start benchmark measures what it says."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_benchmark_says_it_was_skipped_without_a_gpu():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py")], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert run.returncode == 0, run.stderr[-1000:]
    assert run.stdout.startswith("skipped: no GPU") and "No figure was measured" in run.stdout


def test_the_start_benchmark_reads_only_the_sightings_after_the_snapshot():
    import json

    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_similar_start.py"), "--sightings", "3000",
                          "--newer", "25"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-1000:]
    result = json.loads(run.stdout.split("JSON ", 1)[1])
    assert result["cold_rows_read"] == 3000 and result["warm_rows_read"] == 25


@pytest.mark.slow
def test_the_framing_benchmark_measures_every_way_on_the_demo_model():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_framing.py"), "--seeds", "1"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-1000:]
    rows = {line.split("  ")[0].strip(): line for line in run.stdout.splitlines() if " 35 " in line}
    assert set(rows) == {"bird fills the frame", "full frame", "user crop", "auto crop"}, run.stdout
