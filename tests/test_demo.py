"""`make demo`'s pieces: bird photos from Debian's tuxpaint-stamps-default on backgrounds, a curator that stays
across runs, and the summary it prints."""

from __future__ import annotations

import json

from PIL import Image

from identify import demo


def test_demo_photos_keep_queries_apart_from_references(tmp_path):
    queries = demo.write_demo_photos(tmp_path)
    gallery = sorted(p for p in (tmp_path / "gallery").rglob("*.jpg"))
    assert len(queries) == 35 and len(gallery) == 30 * 3
    assert len({p.parent.name for p in gallery}) == 29  # species, by scientific name
    held_out = {f"{stamp}.jpg" for stamp in demo.HELD_OUT}
    assert not {p.stem.rsplit("_", 1)[0] for p in gallery} & set(demo.HELD_OUT)  # held-out photos are no reference
    rows = (tmp_path / "queries.csv").read_text().splitlines()[1:]
    kinds = {row.split(",")[0].split("/")[1]: row.split(",")[2] for row in rows}
    assert {name for name, kind in kinds.items() if kind == "another photo"} == held_out
    reference_backgrounds = {p.stem.rsplit("_", 1)[1] for p in gallery}
    assert reference_backgrounds == set(demo.REFERENCE_SCENES)
    with Image.open(queries[0]) as photo:
        assert photo.size == (demo.SIZE, demo.SIZE) and photo.mode == "RGB"
    mapping = (tmp_path / "taxonomy.csv").read_text().splitlines()
    assert mapping[0] == "label,scientific_name" and "cock,Gallus gallus" in mapping


def test_the_demo_curator_keeps_its_password_across_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("IDENTIFY_DATABASE_URL", raising=False)
    first = demo.demo_curator(tmp_path)
    assert demo.demo_curator(tmp_path) == first
    assert (tmp_path / "demo-curator.txt").stat().st_mode & 0o077 == 0  # the owner's only
    (tmp_path / "identify.db").unlink()  # a fresh database: the same login is made again
    assert demo.demo_curator(tmp_path) == first

    from identify.config import load_settings
    from identify.curators import Curators
    from identify.storage import Store, make_engine

    engine = make_engine(load_settings().database_url)
    assert Curators(Store(engine)).check_password(*first) is not None
    engine.dispose()


def test_the_demo_summary_counts_each_kind_of_query(tmp_path, capsys):
    (tmp_path / "queries.csv").write_text("path,species,kind\nqueries/a.jpg,Gallus gallus,another photo\n"
                                          "queries/b.jpg,Turdus merula,new scene\n")
    taxon = {"scientific_name": "Gallus gallus", "common_name": "Red Junglefowl", "rank": "species"}
    lines = [{"photo": "q/a.jpg", "decision": "confident", "species": [{"name": "hen", "score": 0.8, "taxon": taxon}]},
             {"photo": "q/b.jpg", "decision": "needs_review", "species": [{"name": "x", "score": 0.3, "taxon": None}]}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    demo.print_summary(demo.summarise(tmp_path, tmp_path / "p.jsonl"))
    text = capsys.readouterr().out
    assert "another photo: top-1 right 1 of 1; confident 1, of them right 1" in text
    assert "new scene: top-1 right 0 of 1; confident 0" in text and "<- wrong" in text
