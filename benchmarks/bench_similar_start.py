"""What a server reads at start for its similar-sightings index: every sighting's embedding from SQL (no
snapshot) against only the sightings stored after a published snapshot (issue 13, item 2).

N sightings of one model go into a fresh database (SQLite here unless --database-url names another), then a
`SimilarSightings` is opened the way `IdentificationService` opens it, three times, each timed in one run:

- cold: no snapshot yet, so every embedding is read from SQL and held in the process (what every start did);
- snapshot: `identify index-sightings`'s work, the planner building and publishing the snapshot;
- warm: `--newer` more sightings stored after the snapshot; the start maps the snapshot and reads only those.

    .venv/bin/python benchmarks/bench_similar_start.py [--sightings 200000] [--dim 256] [--newer 1000]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from benchmarks.bench_search import random_unit  # noqa: E402
from identify.config import Settings  # noqa: E402
from identify.identity import ModelIdentity  # noqa: E402
from identify.references import References  # noqa: E402
from identify.schema import Sighting  # noqa: E402
from identify.sightings import SightingStore  # noqa: E402
from identify.similar import SimilarSightings  # noqa: E402
from identify.storage import Store, make_engine, upgrade_database  # noqa: E402

CHUNK = 5_000  # rows per INSERT statement


def store_rows(store: Store, model_id: int, count: int, dim: int, seed: int) -> None:
    """`count` sightings of 1,000 species (clustered embeddings), stored an hour ago (settled), in bulk."""
    embeddings = random_unit(count, dim, seed, clusters=1_000)
    when = datetime.now(timezone.utc) - timedelta(hours=1)
    for start in range(0, count, CHUNK):
        rows = [{"public_id": secrets.token_urlsafe(12), "photo_sha256": secrets.token_hex(32),
                 "model_id": model_id, "embedding": embeddings[start + n].tobytes(),
                 "decision": "needs_review", "uncertainty": 0.5, "status": "open", "version": 1,
                 "hide_location": False, "created_at": when}
                for n in range(min(CHUNK, count - start))]
        with store.sessions.begin() as session:
            session.execute(insert(Sighting), rows)


def open_timed(settings: Settings, identity: ModelIdentity, model_id: int, sightings: SightingStore) -> tuple[float, SimilarSightings]:
    started = time.perf_counter()
    similar = SimilarSightings(settings.indexes_dir, identity, model_id, sightings, refresh_seconds=2.0,
                               snapshot_rows=0)
    return time.perf_counter() - started, similar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sightings", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--newer", type=int, default=1_000)
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=args.database_url or f"sqlite:///{tmp}/bench.db")
        engine = make_engine(settings.database_url)
        upgrade_database(engine)
        store = Store(engine)
        identity = ModelIdentity("bench", "bench_net", secrets.token_hex(32), [], {}, {}, (224, 224), args.dim)
        model_id = store.register_model(identity)
        sightings = SightingStore(store, References(store))
        store_rows(store, model_id, args.sightings, args.dim, seed=0)

        cold_seconds, cold = open_timed(settings, identity, model_id, sightings)
        cold_read = cold.describe()["newer"]  # before the snapshot replaces what it searches
        started = time.perf_counter()
        manifest = cold.snapshot()
        snapshot_seconds = time.perf_counter() - started
        store_rows(store, model_id, args.newer, args.dim, seed=1)
        warm_seconds, warm = open_timed(settings, identity, model_id, sightings)
        engine.dispose()
    assert manifest is not None and warm.count == args.sightings + args.newer
    held_mb = args.dim * 4 / 1e6
    result = {
        "sightings": args.sightings, "dim": args.dim, "newer": args.newer, "index_type": manifest.index_type,
        "recall_at_10": manifest.recall_at_10,
        "cold_start_s": round(cold_seconds, 2), "cold_rows_read": cold_read,
        "cold_own_vectors_mb": round(cold_read * held_mb),
        "snapshot_s": round(snapshot_seconds, 2),
        "warm_start_s": round(warm_seconds, 3), "warm_rows_read": warm.describe()["newer"],
        "warm_own_vectors_mb": round(warm.live.delta.count * held_mb),
        "cold_over_warm": round(cold_seconds / warm_seconds, 1),
    }
    print(f"{args.sightings:,} sightings x {args.dim} in SQL ({settings.database_url.split(':')[0]}), "
          f"{args.newer:,} stored after the snapshot")
    print(f"start without a snapshot: {cold_seconds:7.2f} s, {result['cold_rows_read']:,} embeddings read, "
          f"{result['cold_own_vectors_mb']} MB held by the process")
    recall = f", recall@10 {manifest.recall_at_10:.3f}" if manifest.recall_at_10 is not None else ""
    print(f"publishing the snapshot:  {snapshot_seconds:7.2f} s ({manifest.index_type}{recall})")
    print(f"start from the snapshot:  {warm_seconds:7.3f} s, {result['warm_rows_read']:,} embeddings read, "
          f"{result['warm_own_vectors_mb']} MB held by the process (the snapshot is mapped, shared)")
    print(f"start: without / with the snapshot = {result['cold_over_warm']}x")
    print("JSON " + json.dumps(result))


if __name__ == "__main__":
    main()
