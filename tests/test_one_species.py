"""One taxon, one species: every label of a species-rank taxon (a model class, a folder, a curator's name) is one
species, kept under the taxon's scientific name, and migration 0016 merges what older code split, keeping each
row's history and going back on downgrade. Before: the demo's peacock, corrected to "Indian Peafowl", was stored
under the model's class `peacock` while the peafowl references were `Pavo cristatus` (two species, the second
"without references")."""

from __future__ import annotations

from sqlalchemy import insert, select

from identify.references import References
from identify.schema import (Curator, Model, Prediction, ReferenceChange, ReferenceImage, Review, Sighting, Species,
                             SpeciesMerge)
from identify.schema import Taxon as TaxonRow
from identify.scoring import SpeciesNames
from identify.storage import Store, downgrade_database, make_engine, upgrade_database
from identify.taxonomy import Taxonomy, species_key


def test_labels_of_one_species_are_one_species_and_higher_taxa_stay_apart():
    taxonomy = Taxonomy()
    peafowl = taxonomy.resolve("Indian Peafowl")
    assert peafowl is not None and peafowl.rank == "species"
    for label in ("Indian Peafowl", "Pavo_cristatus", "Pavo cristatus", "indian peafowl"):
        assert species_key(label, taxonomy.resolve(label)) == "Pavo cristatus"
    names = SpeciesNames(["peacock", "partridge"], {"peacock": peafowl, "Pavo_cristatus": peafowl,
                                                    "partridge": None})
    assert names.classes == ["Pavo cristatus", "partridge"]
    assert names.canonical("Pavo_cristatus") == "Pavo cristatus" and names.taxa["Pavo cristatus"] == peafowl
    assert names.counts({"peacock": 1, "Pavo_cristatus": 3}) == {"Pavo cristatus": 4}
    genus = taxonomy.resolve("Passer")
    assert genus is not None and genus.rank == "genus" and species_key("Passer", genus) == "Passer"


def test_every_label_of_a_species_is_stored_as_one_row_with_its_aliases_kept(database_url):
    engine = make_engine(database_url)
    upgrade_database(engine)
    references = References(Store(engine), Taxonomy())
    with references.sessions.begin() as session:
        ids = {label: references.species_id(session, label)
               for label in ("Indian Peafowl", "Pavo_cristatus", "Pavo cristatus")}
        as_named = references.label_named(session, "indian peafowl", model_classes=["peacock"])
    assert len(set(ids.values())) == 1 and as_named == "Pavo cristatus"
    with Store(engine).session() as session:
        names = set(session.scalars(select(Species.name)))
    assert {"Indian Peafowl", "Pavo_cristatus", "Pavo cristatus"} <= names  # the labels stay, as aliases
    engine.dispose()


def _old_rows(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """What the code before 0016 stored for the demo's peacock: the sighting, its prediction and the curator's
    correction under the class label `peacock`, the references under `Pavo cristatus`, a relabel from a third
    label of the same bird."""
    with engine.begin() as connection:
        taxon = connection.execute(insert(TaxonRow).values(
            scientific_name="Pavo cristatus", common_name="Indian Peafowl", rank="species", genus="Pavo",
            family="Phasianidae", order_name="Galliformes", authority="avilist", authority_version="2025")
            .returning(TaxonRow.id)).scalar_one()
        genus = connection.execute(insert(TaxonRow).values(
            scientific_name="Pavo", rank="genus", authority="avilist", authority_version="2025")
            .returning(TaxonRow.id)).scalar_one()

        def species(name: str, taxon_id: int | None) -> int:
            return connection.execute(insert(Species).values(name=name, taxon_id=taxon_id)
                                      .returning(Species.id)).scalar_one()

        ids = {"peacock": species("peacock", taxon), "Pavo cristatus": species("Pavo cristatus", taxon),
               "Indian peafowl": species("Indian peafowl", taxon), "Pavo": species("Pavo", genus),
               "peafowls": species("peafowls", genus), "mystery": species("mystery", None)}
        model = connection.execute(insert(Model).values(name="m", sha256="0" * 64, network="n", signature={},
                                                        classes=["peacock"], embedding_dim=4)
                                   .returning(Model.id)).scalar_one()
        refs = [connection.execute(insert(ReferenceImage).values(file_sha256=f"{i:064x}", path=f"r{i}.jpg",
                                                                 species_id=ids[label])
                                   .returning(ReferenceImage.id)).scalar_one()
                for i, label in enumerate(["Pavo cristatus", "Pavo cristatus", "Indian peafowl", "peafowls"])]
        connection.execute(insert(ReferenceChange).values(reference_id=refs[2], action="relabel", reason="x",
                                                          from_species_id=ids["peafowls"],
                                                          to_species_id=ids["Indian peafowl"], version=1))
        sighting = connection.execute(insert(Sighting).values(
            photo_sha256="1" * 64, photo_name="p.jpg", model_id=model, embedding=b"\0" * 16, decision="needs_review",
            uncertainty=0.5, status="corrected", species_id=ids["peacock"]).returning(Sighting.id)).scalar_one()
        connection.execute(insert(Prediction).values(sighting_id=sighting, rank=1, species_id=ids["peacock"],
                                                     score=0.4, classifier=0.4, knn=0.4))
        curator = connection.execute(insert(Curator).values(name="ann", password_hash="x")
                                     .returning(Curator.id)).scalar_one()
        connection.execute(insert(Review).values(sighting_id=sighting, curator_id=curator, action="correct",
                                                 species_id=ids["peacock"], version=1, added_as_reference=True))
    return {**ids, "sighting": sighting, "relabelled": refs[2], "other_genus_ref": refs[3]}


def test_migration_merges_labels_of_one_taxon_made_by_the_old_code_and_goes_back(database_url):
    engine = make_engine(database_url)
    upgrade_database(engine, "0015")
    ids = _old_rows(engine)
    upgrade_database(engine)
    peafowl = ids["Pavo cristatus"]
    with engine.connect() as connection:
        def species_of(table, column, row_id):  # type: ignore[no-untyped-def]
            return connection.execute(select(column).where(table.id == row_id)).scalar_one()

        assert species_of(Sighting, Sighting.species_id, ids["sighting"]) == peafowl
        assert connection.execute(select(Prediction.species_id)).scalar_one() == peafowl
        assert connection.execute(select(Review.species_id)).scalar_one() == peafowl
        assert set(connection.execute(select(ReferenceImage.species_id))) == {(peafowl,), (ids["peafowls"],)}
        # each reference keeps its label as its build wrote it: answers show it as the neighbour's `species`
        assert connection.execute(select(ReferenceImage.label).where(
            ReferenceImage.id == ids["relabelled"])).scalar_one() == "Indian peafowl"
        change = connection.execute(select(ReferenceChange.from_species_id, ReferenceChange.to_species_id)).one()
        assert tuple(change) == (ids["peafowls"], peafowl)  # a genus label stays its own species
        # the history: every move names the label the row pointed at before
        merges = {(m.table_name, m.from_species_id) for m in connection.execute(select(SpeciesMerge))}
        assert ("reviews", ids["peacock"]) in merges and ("reference_images", ids["Indian peafowl"]) in merges
        names = set(connection.execute(select(Species.name)).scalars())
        assert {"peacock", "Indian peafowl", "Pavo", "peafowls", "mystery"} <= names  # aliases kept
    downgrade_database(engine, "0015")
    with engine.connect() as connection:
        assert connection.execute(select(Sighting.species_id)).scalar_one() == ids["peacock"]
        assert connection.execute(select(Review.species_id)).scalar_one() == ids["peacock"]
        assert connection.execute(select(ReferenceImage.species_id).where(
            ReferenceImage.id == ids["relabelled"])).scalar_one() == ids["Indian peafowl"]
        change = connection.execute(select(ReferenceChange.to_species_id)).scalar_one()
        assert change == ids["Indian peafowl"]
    engine.dispose()


def test_migration_makes_the_scientific_names_row_when_only_a_class_label_was_used(database_url):
    engine = make_engine(database_url)
    upgrade_database(engine, "0015")
    with engine.begin() as connection:
        taxon = connection.execute(insert(TaxonRow).values(
            scientific_name="Gallus gallus", common_name="Red Junglefowl", rank="species", authority="avilist",
            authority_version="2025").returning(TaxonRow.id)).scalar_one()
        cock = connection.execute(insert(Species).values(name="cock", taxon_id=taxon).returning(Species.id)).scalar_one()
        connection.execute(insert(ReferenceImage).values(file_sha256="2" * 64, path="c.jpg", species_id=cock))
    upgrade_database(engine)
    with engine.connect() as connection:
        stored = connection.execute(select(Species.name).join(ReferenceImage,
                                                              ReferenceImage.species_id == Species.id)).scalar_one()
        assert stored == "Gallus gallus"
    downgrade_database(engine, "0015")
    with engine.connect() as connection:
        assert connection.execute(select(ReferenceImage.species_id)).scalar_one() == cock
        assert "Gallus gallus" not in set(connection.execute(select(Species.name)).scalars())  # made, then undone
    engine.dispose()
