"""FAISS indexes: type by size, ids are SQL ids, atomic publish with manifest, refusal of another model."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from identify.errors import IdentifyError
from identify.identity import ModelIdentity
from identify.vectors.plan import FLAT_LIMIT, ID_BYTES, build_faiss_index, plan_index
from identify.vectors.published import VectorIndex, check_compatible, load_index, new_manifest, publish


def identity(sha: str = "a", dim: int = 16) -> ModelIdentity:
    return ModelIdentity("m", "net", sha * 64, [], {}, {}, (96, 96), dim)


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_index_type_follows_collection_size():
    assert plan_index(10).index_type == "flat"
    assert plan_index(FLAT_LIMIT).index_type == "flat"
    big = plan_index(1_000_000)
    assert big.index_type == "ivf" and big.factory == "IVF4000,Flat" and 1 <= big.nprobe <= 4000
    assert plan_index(10, "hnsw").factory == "HNSW32"
    assert plan_index(1000, "ivf").factory == "IVF25,Flat"  # few vectors: fewer lists, each well trained
    with pytest.raises(IdentifyError):
        plan_index(10, "lsh")


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_search_returns_sql_ids_and_cosine_similarity(index_type):
    vectors = unit_vectors(2000, 16) * 3.0  # not unit length: the index normalises
    ids = np.arange(2000, dtype=np.int64) * 10 + 7  # SQL ids, not positions
    plan = plan_index(len(ids), index_type)
    index = VectorIndex(build_faiss_index(ids, vectors, plan), new_manifest(identity(), plan, 2000, int(ids.max())))
    similarities, found = index.search(vectors[[5, 99]], k=3)
    assert found[:, 0].tolist() == [ids[5], ids[99]]
    assert similarities[:, 0] == pytest.approx([1.0, 1.0], abs=1e-4)
    second = (found[0, 1] - 7) // 10  # back from SQL id to position
    assert similarities[0, 1] == pytest.approx(float(vectors[5] @ vectors[second]) / 9.0, abs=1e-4)


def test_search_asks_no_more_than_the_index_holds():
    plan = plan_index(2)
    index = VectorIndex(build_faiss_index(np.array([1, 2]), unit_vectors(2, 8), plan), new_manifest(identity(dim=8), plan, 2, 2))
    similarities, ids = index.search(unit_vectors(1, 8), k=20)
    assert ids.shape == (1, 2)


def publish_version(indexes_dir, count: int):
    vectors = unit_vectors(count, 16)
    plan = plan_index(count)
    manifest = new_manifest(identity(), plan, count, count)
    return publish(build_faiss_index(np.arange(1, count + 1), vectors, plan), manifest, indexes_dir, "birds")


def test_publish_swaps_versions_atomically_and_keeps_one_previous(tmp_path):
    link = publish_version(tmp_path, 5)
    assert json.loads((link / "manifest.json").read_text())["count"] == 5
    assert {"model", "model_sha256", "dim", "metric", "count", "index_type", "created"} <= json.loads(
        (link / "manifest.json").read_text()).keys()
    first_version = link.resolve()
    publish_version(tmp_path, 6)
    publish_version(tmp_path, 7)
    loaded = load_index(tmp_path, "birds")
    assert loaded.count == 7 and loaded.manifest.count == 7
    versions = sorted(p.name for p in (tmp_path / ".versions" / "birds").iterdir())
    assert len(versions) == 2 and first_version.name not in versions
    assert not list(tmp_path.glob(".birds.*.tmp"))


def test_index_of_another_model_or_size_is_refused(tmp_path):
    publish_version(tmp_path, 5)
    manifest = load_index(tmp_path, "birds").manifest
    check_compatible(manifest, identity(), "birds")
    for other, code in [(identity("b"), "index_model_mismatch"), (identity(dim=8), "index_dim_mismatch")]:
        with pytest.raises(IdentifyError) as error:
            check_compatible(manifest, other, "birds")
        assert error.value.code == code


def test_missing_or_damaged_index_is_a_clear_error(tmp_path):
    with pytest.raises(IdentifyError) as error:
        load_index(tmp_path, "nothing")
    assert error.value.code == "unknown_index"
    link = publish_version(tmp_path, 5)
    (link.resolve() / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(IdentifyError) as error:
        load_index(tmp_path, "birds")
    assert error.value.code == "index_corrupt"


def _recall_at_10(index, vectors: np.ndarray, queries: np.ndarray, ids: np.ndarray) -> float:
    import faiss

    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    _, exact = faiss.knn(queries, unit, 10, metric=faiss.METRIC_INNER_PRODUCT)
    _, found = index.search(queries, 10)
    return float(np.mean([len(set(ids[e].tolist()) & set(f.tolist())) / 10 for e, f in zip(exact, found, strict=True)]))


def test_tuned_nprobe_reaches_the_target_recall_on_new_queries():
    import faiss

    from identify.vectors.plan import tune_nprobe

    rng = np.random.default_rng(5)
    centres = unit_vectors(50, 32, seed=9)
    vectors = (centres[rng.integers(0, 50, 8000)] + 0.15 * rng.standard_normal((8000, 32))).astype(np.float32)
    ids = np.arange(8000, dtype=np.int64) + 1
    plan = plan_index(len(ids), "ivf")
    index = build_faiss_index(ids, vectors, plan)
    nprobe, recall = tune_nprobe(index, vectors)
    assert nprobe is not None and 1 <= nprobe < faiss.extract_index_ivf(index).nlist  # a fraction of the lists
    assert recall >= 0.95
    queries = (centres[rng.integers(0, 50, 300)] + 0.15 * rng.standard_normal((300, 32))).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    faiss.extract_index_ivf(index).nprobe = nprobe
    assert _recall_at_10(index, vectors, queries, ids) >= 0.93  # tuned on the collection, checked on new photos


@pytest.mark.slow
def test_auto_falls_back_to_exact_search_where_ivf_cannot_win():
    from identify.vectors.plan import build_planned_index

    uniform = unit_vectors(120_000, 64, seed=2)  # no structure: IVF needs most lists for recall 0.95
    index, plan = build_planned_index(np.arange(len(uniform)), uniform)
    assert plan.index_type == "flat" and index.ntotal == len(uniform)
    index, plan = build_planned_index(np.arange(len(uniform)), uniform, "ivf")  # asked for: kept, searched widely
    assert plan.index_type == "ivf" and plan.nprobe >= 64


OLD_MANIFEST = Path(__file__).parent / "data" / "manifest-0.1.0.json"  # as release 0.1.0 wrote it, kept


@pytest.mark.parametrize("edit", ["as_written", "fields_of_a_newer_release", "only_the_first_fields"])
def test_manifests_of_other_releases_still_open(tmp_path, edit):
    link = publish_version(tmp_path, 5)
    manifest = json.loads(OLD_MANIFEST.read_text())
    if edit == "fields_of_a_newer_release":
        manifest.update(memory_budget_bytes=1 << 30, tuned_recall_at_10=0.97)
    elif edit == "only_the_first_fields":  # what every release wrote: the rest came later or may go
        manifest = {key: manifest[key] for key in ("model", "model_sha256", "network", "dim", "metric", "count")}
    (link.resolve() / "manifest.json").write_text(json.dumps(manifest))
    loaded = load_index(tmp_path, "birds")
    assert loaded.count == 5 and loaded.manifest.index_type == "flat"
    assert loaded.manifest.max_reference_id == 5  # read from the file, or from the index's own ids
    check_compatible(loaded.manifest, identity(), "birds")
    _, ids = loaded.search(unit_vectors(1, 16), 5)
    assert sorted(ids[0].tolist()) == [1, 2, 3, 4, 5]


def test_a_manifest_without_what_identifies_the_model_is_corrupt(tmp_path):
    link = publish_version(tmp_path, 5)
    manifest = json.loads(OLD_MANIFEST.read_text())
    del manifest["model_sha256"]
    (link.resolve() / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IdentifyError) as error:
        load_index(tmp_path, "birds")
    assert error.value.code == "index_corrupt"


def test_a_live_index_catches_up_with_a_burst_below_its_own_rows():
    """Other workers commit 3,000 rows while this process adds its own row 3,001 before it next looks: every
    row must be found (the look-back once started below the process's own highest id, and lost 2,000 rows)."""
    from identify.vectors.live import LOOKBACK, LiveIndex, empty_index

    plan = plan_index(0, "flat")
    base = VectorIndex(empty_index(8), new_manifest(identity(dim=8), plan, 0, 0))
    committed: list[int] = []
    vectors = unit_vectors(4000, 8)
    live = LiveIndex(base, 0, ids_after=lambda after: [i for i in committed if i > after],
                     vectors_of=lambda ids: (np.asarray(ids, dtype=np.int64), vectors[np.asarray(ids) - 1]),
                     refresh_seconds=0)
    live.refresh(force=True)
    committed += range(1, 3 * LOOKBACK + 1)  # a burst larger than any look-back, by other workers
    live.add([3 * LOOKBACK + 1], vectors[[3 * LOOKBACK]])  # this process's own row, above the burst
    committed.append(3 * LOOKBACK + 1)
    live.refresh(force=True)
    assert live.count == 3 * LOOKBACK + 1
    committed += [3 * LOOKBACK + 2]
    assert live.refresh(force=True) == 1 and live.count == 3 * LOOKBACK + 2
    late = 3 * LOOKBACK - 10  # a row that commits late, out of id order, within the look-back
    committed.remove(late)
    live2 = LiveIndex(VectorIndex(empty_index(8), new_manifest(identity(dim=8), plan, 0, 0)), 0,
                      ids_after=lambda after: [i for i in committed if i > after],
                      vectors_of=lambda ids: (np.asarray(ids, dtype=np.int64), vectors[np.asarray(ids) - 1]),
                      refresh_seconds=0)
    live2.refresh(force=True)
    committed.append(late)
    committed.sort()
    live2.refresh(force=True)
    assert live2.count == 3 * LOOKBACK + 2


@pytest.mark.slow
def test_past_the_memory_budget_the_plan_is_ivf_pq_with_its_recall():
    """Clustered vectors whose exact index needs 1.1 MiB, given a budget of 200 KiB: OPQ + IVF-PQ codes that
    fit (16 bytes a vector), a re-ranking factor and nprobe tuned on the collection, and the recall@10 it
    reached, which new queries confirm."""
    from identify.vectors.plan import RERANK_FACTORS, TARGET_RECALL, apply_plan, build_planned_index, flat_bytes

    rng = np.random.default_rng(7)
    centres = unit_vectors(40, 64, seed=3)
    vectors = (centres[rng.integers(0, 40, 4_000)] + 0.2 * rng.standard_normal((4_000, 64))).astype(np.float32)
    ids = np.arange(len(vectors), dtype=np.int64) + 1
    budget = 200 * 2**10
    assert flat_bytes(len(vectors), 64) > budget
    index, plan = build_planned_index(ids, vectors, "auto", memory_budget=budget)
    assert plan.index_type == "ivfpq" and plan.factory.startswith("OPQ16,") and ",PQ16" in plan.factory
    code_bytes = int(plan.factory.split(",PQ")[1].split("x")[0])
    assert len(vectors) * (code_bytes + 32) <= budget
    # the codes' best candidates are re-ranked exactly from the full vectors: the target recall is reached
    assert plan.factory.endswith(",RFlat") and plan.k_factor in RERANK_FACTORS
    assert plan.recall_at_10 is not None and TARGET_RECALL <= plan.recall_at_10 <= 1.0
    queries = (centres[rng.integers(0, 40, 300)] + 0.2 * rng.standard_normal((300, 64))).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    apply_plan(index, plan)
    assert abs(_recall_at_10(index, vectors, queries, ids) - plan.recall_at_10) < 0.1  # what it says holds


def test_a_budget_too_small_for_any_code_is_refused():
    from identify.errors import IdentifyError
    from identify.vectors.plan import plan_index

    with pytest.raises(IdentifyError) as refused:
        plan_index(1_000_000, "auto", 128, memory_budget=2**20)
    assert refused.value.code == "memory_budget_too_small"


class _IgnoresSelectors:
    """A FAISS index that drops the search parameters, as FAISS's GPU indexes do with an IDSelector (seen on an
    H100 with FAISS 1.15.1: a restricted search answered ids outside the selection)."""

    def __init__(self, index) -> None:  # type: ignore[no-untyped-def]
        self._index = index

    def search(self, queries, k, params=None):  # type: ignore[no-untyped-def]
        return self._index.search(queries, k)

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self._index, name)


@pytest.mark.parametrize("allowed_every", [2, 700])  # a common selection (filtered answers), a rare one (exact)
def test_a_restricted_search_of_an_index_that_ignores_selectors_answers_only_allowed_ids(allowed_every):
    from identify.vectors.live import LiveIndex, empty_index

    vectors = unit_vectors(3000, 16)
    ids = np.arange(1, 3001)

    def live(honours: bool) -> LiveIndex:
        index = empty_index(16)
        index.add_with_ids(vectors, ids)
        wrapped = index if honours else _IgnoresSelectors(index)
        base = VectorIndex(wrapped, new_manifest(identity(dim=16), plan_index(0, "flat"), 3000, 3000),
                           honours_selectors=honours)
        return LiveIndex(base, 3000, ids_after=lambda after: [], vectors_of=lambda ids: (ids, vectors[:0]))

    allowed = ids[::allowed_every]
    queries = unit_vectors(6, 16, seed=9)
    expected_similarities, expected = live(True).search(queries, 10, allowed)
    similarities, found = live(False).search(queries, 10, allowed)
    assert np.isin(found[found >= 0], allowed).all()
    assert (found == expected).all()
    assert np.allclose(similarities[found >= 0], expected_similarities[expected >= 0], atol=1e-5)


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf", "ivfpq"])
def test_a_memory_mapped_index_answers_as_a_loaded_one_and_live_rows_go_beside_it(tmp_path, index_type):
    """Server processes map the published index read-only and share it; rows added while serving go into the
    live index's own delta, and every search merges both, exactly as one index holding all the rows would."""
    from identify.vectors.live import LiveIndex

    vectors = unit_vectors(3000, 16)
    plan = plan_index(3000, index_type, 16, 3000 * (ID_BYTES + 4) if index_type == "ivfpq" else None)
    manifest = new_manifest(identity(), plan, 3000, 3000)
    publish(build_faiss_index(np.arange(1, 3001), vectors, plan), manifest, tmp_path, "birds")
    loaded, mapped = load_index(tmp_path, "birds"), load_index(tmp_path, "birds", mapped=True)
    queries = unit_vectors(20, 16, seed=4)
    assert (loaded.search(queries, 10)[1] == mapped.search(queries, 10)[1]).all()

    added = unit_vectors(5, 16, seed=8)
    live = LiveIndex(mapped, 3000, ids_after=lambda after: [], vectors_of=lambda ids: (ids, added[:0]))
    live.add(range(3001, 3006), added)
    assert mapped.count == 3000 and live.count == 3005  # the mapped base is never written
    similarities, ids = live.search(added, 3)
    assert (ids[:, 0] == np.arange(3001, 3006)).all() and np.allclose(similarities[:, 0], 1.0, atol=1e-5)
    _, restricted = live.search(queries, 4, allowed=np.array([7, 3002, 3004]))
    assert restricted.shape == (20, 3) and set(restricted.ravel()) <= {7, 3002, 3004, -1}
    # Exact, or (a selection this rare) exact among the selection: every allowed row, for every query.
    assert all(sorted(row) == [7, 3002, 3004] for row in restricted.tolist())


def clustered_vectors(n: int, dim: int, seed: int = 5) -> np.ndarray:
    """Photos of a few dozen species: points around 50 centres (uniform data gives IVF no structure to use)."""
    rng = np.random.default_rng(seed)
    centres = unit_vectors(50, dim, seed=9)
    return (centres[rng.integers(0, 50, n)] + 0.15 * rng.standard_normal((n, dim))).astype(np.float32)


@pytest.mark.parametrize("allowed_every", [3, 1000])  # a common selection, a rare one
def test_a_restricted_ivf_search_finds_the_nearest_allowed_rows(allowed_every):
    """The tuned nprobe alone visits lists where a rare selection has few members (it found 0.035 of the 10
    nearest among 20 allowed ids of 20,000) before the restricted search scaled nprobe with the rarity."""
    from identify.vectors.live import LiveIndex
    from identify.vectors.plan import exact_knn, tune_nprobe

    vectors = clustered_vectors(20_000, 32)
    ids = np.arange(1, 20_001)
    plan = plan_index(len(ids), "ivf")
    index = build_faiss_index(ids, vectors, plan)
    nprobe, _ = tune_nprobe(index, vectors)
    manifest = new_manifest(identity(dim=32), replace(plan, nprobe=nprobe), 20_000, 20_000)
    live = LiveIndex(VectorIndex(index, manifest), 20_000, ids_after=lambda after: [],
                     vectors_of=lambda ids: (ids, vectors[:0]))
    allowed = ids[::allowed_every]
    queries = clustered_vectors(20, 32, seed=6)
    _, found = live.search(queries, 10, allowed)
    _, positions = exact_knn(queries, vectors[allowed - 1], 10)
    truth = allowed[positions]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth.tolist(), strict=True)])
    assert np.isin(found, allowed).all() and recall >= 0.9
