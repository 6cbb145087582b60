"""The system of record on SQLite and on the local PostgreSQL: migrations, and the reference set's queries."""

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select

from identify.identity import ModelIdentity
from identify.errors import IdentifyError
from identify.schema import Base, Embedding, IndexMember, ReferenceImage, Species
from identify.observation import WhereAndWhen
from identify.references import NewReference, References
from identify.storage import Store, current_revision, downgrade_database, make_engine, upgrade_database


def identity(sha: str, dim: int = 4) -> ModelIdentity:
    return ModelIdentity(f"model-{sha}", "mobilenet_v3_small_0_25", sha * 64, ["a", "b"], {}, {}, (96, 96), dim)


@pytest.fixture
def store(database_url):
    engine = make_engine(database_url)
    upgrade_database(engine)
    yield Store(engine)
    engine.dispose()


def test_migrations_create_exactly_the_models_schema_and_go_back(database_url):
    engine = make_engine(database_url)
    upgrade_database(engine)
    assert current_revision(engine) == "0018"
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    upgrade_database(engine)  # idempotent
    downgrade_database(engine, "0002")
    assert "taxa" not in inspect(engine).get_table_names()
    assert "taxon_id" not in {c["name"] for c in inspect(engine).get_columns("species")}
    downgrade_database(engine, "0001")
    assert "photo_name" not in {c["name"] for c in inspect(engine).get_columns("sightings")}
    downgrade_database(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade_database(engine)
    assert {"models", "species", "reference_images", "embeddings", "index_builds", "sightings", "predictions",
            "reviews", "curators", "indexes", "index_members", "taxa"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_references_are_recorded_once_per_content(store):
    model_id = store.register_model(identity("a"))
    assert store.register_model(identity("a")) == model_id
    index_id = store.open_index("birds", model_id)
    vector = np.arange(4, dtype=np.float32)
    ref = NewReference("f" * 64, "/photos/1.jpg", "Corvus_cornix", vector, WhereAndWhen(51.5, -0.1))
    first = References(store).add_batch(index_id, model_id, [ref])
    again = References(store).add_batch(index_id, model_id, [ref])  # a resumed build writes the same batch again
    assert first == again
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(ReferenceImage)) == 1
        assert session.scalar(select(func.count()).select_from(Embedding)) == 1
        assert session.scalar(select(func.count()).select_from(IndexMember)) == 1
        # the label as written stays, an alias; the reference is kept under its species
        assert set(session.scalars(select(Species.name))) == {"Corvus_cornix", "Corvus cornix"}
    known = References(store).known(model_id, ["f" * 64, "0" * 64])
    assert list(known) == ["f" * 64] and known["f" * 64].embedded and known["f" * 64].species == "Corvus cornix"
    ids, vectors = References(store).index_vectors(index_id, model_id, 4)
    assert ids.tolist() == first and np.array_equal(vectors[0], vector)
    assert References(store).info(first)[first[0]].path == "/photos/1.jpg"


def test_an_index_belongs_to_one_model(store):
    first = store.register_model(identity("a"))
    second = store.register_model(identity("b"))
    store.open_index("birds", first)
    with pytest.raises(IdentifyError) as error:
        store.open_index("birds", second)
    assert error.value.code == "index_model_mismatch"


def test_vectors_come_back_in_chunks_in_id_order(store):
    model_id = store.register_model(identity("a", dim=3))
    index_id = store.open_index("birds", model_id)
    refs = [NewReference(f"{i:064d}", f"/{i}.jpg", "sp", np.full(3, i, np.float32)) for i in range(7)]
    References(store).add_batch(index_id, model_id, refs)
    chunks = list(References(store).iter_index_vectors(index_id, model_id, 3, batch=3))
    assert [len(ids) for ids, _ in chunks] == [3, 3, 1]
    all_ids = np.concatenate([ids for ids, _ in chunks])
    assert all_ids.tolist() == sorted(all_ids.tolist())
    later, _ = References(store).index_vectors(index_id, model_id, 3, after_id=int(all_ids[4]))
    assert later.tolist() == all_ids[5:].tolist()
