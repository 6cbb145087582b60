"""Labels to taxa with birdnames: the label styles of birder's bird models and of reference folders, every
authority in order, the operator's mapping file, the cache, suggestions, and `identify taxonomy check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from identify import taxonomy
from identify.cli import main
from identify.errors import IdentifyError
from identify.taxonomy import AUTHORITIES, Taxonomy, name_key

# (label as a model, a folder or a manifest writes it, scientific name, family). birder's regional models name
# classes in English with the first word capitalised ("House sparrow", "White-spectacled bulbul"); folders use
# underscores, scientific names, or codes.
LABELS = [
    ("House sparrow", "Passer domesticus", "Passeridae"),
    ("White-spectacled bulbul", "Pycnonotus xanthopygos", "Pycnonotidae"),
    ("Graceful prinia", "Prinia gracilis", "Cisticolidae"),
    ("Common myna", "Acridotheres tristis", "Sturnidae"),
    ("Hooded crow", "Corvus cornix", "Corvidae"),  # a species in eBird's list, a subspecies in AviList's
    ("Eurasian hoopoe", "Upupa epops", "Upupidae"),  # eBird's name; AviList says "Common Hoopoe"
    ("Common hoopoe", "Upupa epops", "Upupidae"),
    ("Gray heron", "Ardea cinerea", "Ardeidae"),  # American spelling of AviList's "Grey Heron"
    ("Grey Heron", "Ardea cinerea", "Ardeidae"),
    ("Cetti's warbler", "Cettia cetti", "Cettiidae"),
    ("Cettis warbler", "Cettia cetti", "Cettiidae"),  # apostrophe dropped by a file system
    ("HOUSE SPARROW", "Passer domesticus", "Passeridae"),
    ("house-sparrow", "Passer domesticus", "Passeridae"),
    ("House_Sparrow", "Passer domesticus", "Passeridae"),
    ("  house   sparrow ", "Passer domesticus", "Passeridae"),
    ("Passer_domesticus", "Passer domesticus", "Passeridae"),  # a scientific folder name
    ("passer domesticus", "Passer domesticus", "Passeridae"),
    ("graher1", "Ardea cinerea", "Ardeidae"),  # an eBird species code
    ("HOSP", "Passer domesticus", "Passeridae"),  # a four-letter alpha code
    ("PASDOM", "Passer domesticus", "Passeridae"),  # a six-letter one
    ("Eurasian moorhen", "Gallinula chloropus", "Rallidae"),  # an eBird name of AviList's "Common Moorhen"
    ("Spur-winged lapwing", "Vanellus spinosus", "Charadriidae"),
    ("Palestine sunbird", "Cinnyris osea", "Nectariniidae"),
    ("Laughing dove", "Spilopelia senegalensis", "Columbidae"),
    ("Eurasian collared-dove", "Streptopelia decaocto", "Columbidae"),
    ("Eurasian collared dove", "Streptopelia decaocto", "Columbidae"),
    ("Crested lark", "Galerida cristata", "Alaudidae"),
]


@pytest.fixture(scope="module")
def names() -> Taxonomy:
    return Taxonomy()


@pytest.mark.parametrize(("label", "scientific", "family"), LABELS)
def test_label_styles_resolve_to_their_taxon(names, label, scientific, family):
    taxon = names.resolve(label)
    assert taxon is not None, label
    assert (taxon.scientific_name, taxon.family, taxon.rank) == (scientific, family, "species")
    assert taxon.genus == scientific.split()[0] and taxon.order and taxon.order.endswith("iformes")
    assert (taxon.authority, int(taxon.version)) in AUTHORITIES


def test_one_scientific_name_is_one_taxon_whatever_the_label(names):
    """The taxon comes from the first authority that lists the scientific name, so labels agree."""
    hoopoes = {names.resolve(label) for label in ("Eurasian hoopoe", "Common Hoopoe", "Upupa epops", "upupa_epops")}
    assert len(hoopoes) == 1
    (hoopoe,) = hoopoes
    assert (hoopoe.authority, hoopoe.common_name) == ("avilist", "Common Hoopoe")
    crow = names.resolve("Hooded crow")
    assert crow is not None and crow.authority == "ebird"  # AviList has no species Corvus cornix


def test_higher_ranks_resolve_and_unknown_labels_stay_unresolved(names):
    genus, family = names.resolve("Passer"), names.resolve("Passeridae")
    assert genus is not None and (genus.rank, genus.genus, genus.family) == ("genus", "Passer", "Passeridae")
    assert family is not None and (family.rank, family.genus, family.family) == ("family", None, "Passeridae")
    for label in ("tabby", "Egyptian cat", "", "Avis inventa", "Passer domesticus x italiae", "banana", "vase"):
        assert names.resolve(label) is None  # banana and vase are eBird codes, but not written as codes


def test_a_mapping_file_overrides_resolution(tmp_path: Path):
    mapping = tmp_path / "taxonomy.csv"
    mapping.write_text("label,scientific_name\nHooded crow,Corvus corone\nLocal form,Passer hybridus\n"
                       "Sparrow (house),Passer domesticus\nspatula,-\n")
    names = Taxonomy.with_mapping_file(mapping)
    assert names.resolve("hooded_crow").scientific_name == "Corvus corone"  # type: ignore[union-attr]
    assert names.resolve("Sparrow (house)").family == "Passeridae"  # type: ignore[union-attr]
    local = names.resolve("Local form")
    assert local is not None and (local.scientific_name, local.authority, local.genus) == (
        "Passer hybridus", "mapping", "Passer")
    assert names.resolve("spatula") is None  # the kitchen tool, not the duck genus
    assert Taxonomy().resolve("spatula").rank == "genus"  # type: ignore[union-attr]
    assert Taxonomy().resolve("Hooded crow").scientific_name == "Corvus cornix"  # type: ignore[union-attr]


@pytest.mark.parametrize("content", ["label,species\nx,y\n", "label,scientific_name\nHooded crow,\n"])
def test_a_bad_mapping_file_is_refused(tmp_path: Path, content: str):
    mapping = tmp_path / "taxonomy.csv"
    mapping.write_text(content)
    with pytest.raises(IdentifyError) as error:
        Taxonomy.with_mapping_file(mapping)
    assert error.value.code == "bad_mapping"


def test_the_index_is_cached_and_lookups_need_no_tables(monkeypatch: pytest.MonkeyPatch):
    """A second process loads the cached index: birdnames' tables (pandas) are not read again."""
    taxonomy._index()  # built (or loaded) once
    assert taxonomy._cache_path().is_file()
    taxonomy._index.cache_clear()

    def tables_read(*_args: object) -> None:
        raise AssertionError("the taxonomy tables were read although the index is cached")

    monkeypatch.setattr("birdnames.utils.load_taxonomy", tables_read)
    try:
        assert Taxonomy().resolve("Graceful prinia").scientific_name == "Prinia gracilis"  # type: ignore[union-attr]
    finally:
        taxonomy._index.cache_clear()


@pytest.mark.slow
def test_a_damaged_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    taxonomy._index.cache_clear()
    taxonomy._cache_path().parent.mkdir(parents=True)
    taxonomy._cache_path().write_bytes(b"not a pickle")
    try:
        assert Taxonomy().resolve("House sparrow").scientific_name == "Passer domesticus"  # type: ignore[union-attr]
        assert taxonomy._cache_path().stat().st_size > 1_000_000
    finally:
        taxonomy._index.cache_clear()


def test_suggestions_cover_common_and_scientific_names_species_first(names):
    hoopoes = names.suggest("hoopo")
    assert [s.name for s in hoopoes[:2]] == ["Common Hoopoe", "Eurasian Hoopoe"]
    assert all(s.taxon.rank == "species" for s in hoopoes)
    assert names.suggest("Upupa ep")[0].taxon.scientific_name == "Upupa epops"
    assert "Hooded Crow" in [s.name for s in names.suggest("Hodded crow")]  # a typo: close spellings
    assert names.suggest("") == [] and len(names.suggest("a", limit=3)) == 3


def test_name_keys_ignore_what_labels_differ_by():
    assert name_key("Cetti's  Warbler") == name_key("cettis-warbler") == name_key("CETTI'S_WARBLER")
    assert name_key("Grey Heron") == name_key("gray heron") and name_key("St. Helena") == name_key("St Helena")


def test_taxonomy_check_lists_what_does_not_resolve(tmp_path: Path, tiny_checkpoint: Path, monkeypatch):
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(tmp_path / "var"))
    refs = tmp_path / "refs"
    for label in ("House sparrow", "Hodded crow", "Tabby"):
        (refs / label).mkdir(parents=True)
        (refs / label / "a.jpg").write_bytes(b"x")
    runner = CliRunner()
    result = runner.invoke(main, ["taxonomy", "check", "--model", str(tiny_checkpoint), "--references", str(refs),
                                  "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["labels"] == 6 and report["resolved"] == 4  # 3 model classes + House sparrow
    unresolved = {u["label"]: u["suggestions"] for u in report["unresolved"]}
    assert set(unresolved) == {"Hodded crow", "Tabby"} and "Hooded Crow" in unresolved["Hodded crow"]
    assert report["taxa"]["Corvus_cornix"]["family"] == "Corvidae"
    mapping = tmp_path / "map.csv"
    mapping.write_text("label,scientific_name\nHodded crow,Corvus cornix\nTabby,Felis catus\n")
    result = runner.invoke(main, ["taxonomy", "check", "--references", str(refs), "--mapping", str(mapping)])
    assert result.exit_code == 0 and "3 of 3 labels resolve" in result.output
    result = runner.invoke(main, ["taxonomy", "check"])
    assert result.exit_code == 1 and "bad_arguments" in result.stderr
