"""The similar-sightings index: a published snapshot (planned as build-index plans) and the sightings stored
since; a restarted server reads only those from SQL, and a server publishes a new snapshot once they are many.
Likewise a running server follows the reference index to each version a build publishes."""

from __future__ import annotations

import dataclasses
import json
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import store_sightings
from identify.cli import main


@pytest.fixture(autouse=True)
def settled_at_once(monkeypatch):  # type: ignore[no-untyped-def]
    """A snapshot takes the sightings stored a minute ago or more; here, every committed one."""
    monkeypatch.setattr("identify.similar.SETTLE_SECONDS", 0.0)


def with_service(web_settings, **changes):  # type: ignore[no-untyped-def]
    return dataclasses.replace(web_settings, service=dataclasses.replace(web_settings.service, **changes))


def rows_read_at_start(make_service, settings, monkeypatch) -> tuple[object, list[int]]:  # type: ignore[no-untyped-def]
    """A new server process, and the sighting ids it read the vectors of from SQL while starting."""
    from identify.sightings import SightingStore

    read: list[int] = []
    original = SightingStore.vectors

    def counting(self, ids, dim):  # type: ignore[no-untyped-def]
        read.extend(ids)
        return original(self, ids, dim)

    monkeypatch.setattr(SightingStore, "vectors", counting)
    service = make_service(settings)
    monkeypatch.setattr(SightingStore, "vectors", original)
    return service, read


def exact_nearest(embeddings: np.ndarray, first_id: int, query: np.ndarray, k: int) -> list[int]:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (np.argsort(-(unit @ (query / np.linalg.norm(query))), kind="stable")[:k] + first_id).tolist()


def test_a_restarted_server_reads_only_the_sightings_after_the_snapshot(make_service, web_settings, monkeypatch):
    settings = with_service(web_settings, similar_snapshot_rows=0)  # only the explicit snapshot below
    first = make_service(settings)
    before = store_sightings(first, 300)
    manifest = first.similar_index.snapshot()
    assert manifest is not None and manifest.count == 300 and manifest.index_type == "flat"
    after = store_sightings(first, 7, seed=1)

    restarted, read = rows_read_at_start(make_service, settings, monkeypatch)
    assert len(read) == 7 and min(read) > manifest.max_reference_id  # not the 300 in the snapshot
    assert restarted.similar_index.count == 307
    everything = np.concatenate([before, after])
    first_id = manifest.max_reference_id - 299
    for query in (before[5], after[3], np.random.default_rng(9).standard_normal(len(before[0]))):
        _, ids = restarted.similar_index.search(query[None, :].astype(np.float32), 10)
        assert ids[0].tolist() == exact_nearest(everything, first_id, query, 10)
    allowed = np.array([first_id + 3, first_id + 200, first_id + 303])  # a filter: in the snapshot and after it
    _, ids = restarted.similar_index.search(before[0][None, :], 5, allowed)
    assert sorted(ids[0].tolist()) == allowed.tolist()


def test_a_server_publishes_a_snapshot_when_due_and_other_workers_swap_it_in(make_service, web_settings):
    settings = with_service(web_settings, similar_snapshot_rows=50)
    worker_a, worker_b = make_service(settings), make_service(settings)
    embeddings = store_sightings(worker_b, 60)
    worker_b.similar_index.refresh(force=True)
    assert worker_b.similar_index.describe()["newer"] == 60
    worker_b.similar_index.snapshot_if_due()  # as after its next upload: published in the background
    for thread in threading.enumerate():
        if thread.name == "similar-snapshot":
            thread.join(timeout=60)
    assert worker_b.similar_index.describe() == {"snapshot_count": 60, "index_type": "flat", "recall_at_10": None,
                                                 "max_sighting_id": worker_b.similar_index.floor, "newer": 0}
    worker_a.similar_index.refresh(force=True)
    worker_a.similar_index.snapshot_if_due()  # a newer snapshot is there: swapped in, not built again
    assert worker_a.similar_index.describe()["snapshot_count"] == 60
    assert worker_a.similar_index.live.base.manifest.version == worker_b.similar_index.live.base.manifest.version
    _, ids = worker_a.similar_index.search(embeddings[7][None, :], 1)
    assert ids[0, 0] == worker_b.similar_index.floor - 52


def test_an_unreadable_snapshot_costs_one_full_read_not_the_sightings(make_service, web_settings, monkeypatch):
    settings = with_service(web_settings, similar_snapshot_rows=0)
    first = make_service(settings)
    store_sightings(first, 40)
    first.similar_index.snapshot()
    index_file = first.similar_index.directory / first.similar_index.name / "index.faiss"
    index_file.write_bytes(index_file.read_bytes()[:100])  # a disk that lost it
    restarted, read = rows_read_at_start(make_service, settings, monkeypatch)
    assert len(read) == 40 and restarted.similar_index.count == 40


@pytest.mark.slow
def test_index_sightings_publishes_through_the_planner_with_a_memory_budget(make_service, web_settings):
    from identify.vectors.catalog import published_indexes

    service = make_service(with_service(web_settings, similar_snapshot_rows=0))
    store_sightings(service, 2000)
    env = {"IDENTIFY_DATA_DIR": str(web_settings.data_dir), "IDENTIFY_DATABASE_URL": web_settings.database_url}
    args = ["index-sightings", "--model", web_settings.service.model, "--json"]
    refused = CliRunner().invoke(main, [*args, "--memory-budget", "1KB"], env=env)
    assert refused.exit_code == 1 and json.loads(refused.stdout)["error"]["code"] == "memory_budget_too_small"
    assert not (web_settings.indexes_dir / ".sightings" / f"similar-{service.backbone.identity.sha256[:16]}").exists()
    result = CliRunner().invoke(main, [*args, "--memory-budget", "100KB"], env=env, catch_exceptions=False)
    report = json.loads(result.output)
    assert report["published"] and report["snapshot_count"] == 2000 and report["newer"] == 0
    assert report["index_type"] == "ivfpq" and 0 < report["recall_at_10"] <= 1
    again = json.loads(CliRunner().invoke(main, args, env=env, catch_exceptions=False).output)
    assert not again["published"] and again["snapshot_count"] == 2000  # nothing new: unchanged
    assert [entry.name for entry in published_indexes(web_settings.indexes_dir)] == ["birds"]  # not listed


def test_a_running_server_follows_a_newly_published_reference_index(make_service, web_settings, tiny_backbone,
                                                                     tmp_path):
    """A build that publishes while servers run: they switch to the new version (shared, mapped) instead of
    holding the build's rows in their own exact delta; a version they cannot use is logged and skipped."""
    from dataclasses import replace

    from tests.conftest import SPECIES, build_reference_index, make_species_folder
    from identify.vectors.plan import build_faiss_index, plan_index
    from identify.vectors.published import new_manifest, publish

    service = make_service()
    first = service.reference_index.live.base.manifest.version
    more = make_species_folder(tmp_path / "more", SPECIES, per=2, first_variant=50)
    build_reference_index(web_settings, tiny_backbone, more, "birds")
    service.reference_index.refresh(force=True)
    live = service.reference_index.live
    assert live.base.manifest.version != first
    assert live.delta.count == 0 and live.count == live.base.count == 3 * 6 + 3 * 2

    other_model = replace(tiny_backbone.identity, sha256="0" * 64)  # a version the server cannot search
    vectors = np.random.default_rng(0).standard_normal((4, other_model.embedding_dim)).astype(np.float32)
    publish(build_faiss_index(np.arange(1, 5), vectors, plan_index(4)),
            new_manifest(other_model, plan_index(4), 4, 4), web_settings.indexes_dir, "birds")
    service.reference_index.refresh(force=True)
    assert service.reference_index.live is live and service.reference_index.count == 24
