"""Place and season: importing a 1M-row occurrence CSV (target >= 50,000 rows/s) and what the prior adds to one
identification (target <= 2 ms p50): the prior at a place and week, and its product with a ranking, against
the same explanation without a place. Records are made up: 500 real species (AviList names, so they resolve),
at random places in Europe and the Middle East, on random days of 2015-2025.

    .venv/bin/python benchmarks/bench_prior.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np


def write_records(path: Path, rows: int, species: list[str]) -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    days = pd.to_datetime("2015-01-01") + pd.to_timedelta(rng.integers(0, 11 * 365, rows), unit="D")
    pd.DataFrame({
        "scientificName": np.array(species)[rng.integers(0, len(species), rows)],
        "decimalLatitude": rng.uniform(28.0, 60.0, rows).round(5),
        "decimalLongitude": rng.uniform(-10.0, 45.0, rows).round(5),
        "eventDate": days.strftime("%Y-%m-%d"),
    }).to_csv(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    from identify.fusion import RankedSpecies, with_prior
    from identify.prior import FLOOR, Occurrences, Place
    from identify.storage import Store, make_engine, upgrade_database
    from identify.taxonomy import Taxonomy, _index

    names = Taxonomy()
    species = [t for t in _index().taxa.values() if t.rank == "species"][:500]
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "occurrences.csv"
        write_records(csv_path, args.rows, [t.scientific_name for t in species])
        engine = make_engine(f"sqlite:///{folder}/identify.db")
        upgrade_database(engine)
        occurrences = Occurrences(Store(engine), names)
        started = time.perf_counter()
        report = occurrences.import_file(csv_path)
        seconds = time.perf_counter() - started
        print(f"import: {report.imported:,} of {report.records:,} rows in {seconds:.2f} s = "
              f"{report.records / seconds:,.0f} rows/s = {report.records / seconds / 50_000:.1f}x the 50,000 rows/s target "
              f"({report.cells} cells, {report.taxa} taxa)")
        model = occurrences.model()
        engine.dispose()
    ranking = [RankedSpecies(t.common_name or t.scientific_name, 1.0 / 20, 0.05, 0.05, t) for t in species[:20]]
    rng = np.random.default_rng(1)
    places = [Place(float(rng.uniform(30, 58)), float(rng.uniform(-8, 43)), date(2026, int(rng.integers(1, 13)), 15))
              for _ in range(500)]
    without, added = [], []
    for place in places:
        started = time.perf_counter()
        list(ranking)  # without a place the ranking is left as it is
        without.append(time.perf_counter() - started)
        started = time.perf_counter()
        with_prior(ranking, model.at(place, (s.taxon.scientific_name for s in ranking)), FLOOR)
        added.append(time.perf_counter() - started)
    p50 = statistics.median(added) * 1000
    print(f"prior per identification: p50 {p50:.3f} ms (p99 {np.percentile(added, 99) * 1000:.3f} ms) over "
          f"{statistics.median(without) * 1000:.4f} ms without a place = {p50 / 2:.2f} of the 2 ms budget")


if __name__ == "__main__":
    main()
