"""The index builder end to end through `identify build-index` / `identify predict`, on SQLite and PostgreSQL."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from identify.backbone import Backbone, load_backbone
from identify.cli import main
from identify.config import load_settings
from identify.schema import Embedding, IndexBuild, IndexMember, ReferenceImage
from identify.storage import Store, make_engine, upgrade_database
from index_builder.runner import BuildOptions, IndexBuilder
from index_builder.sources import from_folder
from tests.conftest import SPECIES, kept_as, make_species_folder


def identify(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def row_counts(database_url: str) -> tuple[int, int, int]:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        counts = tuple(connection.scalar(select(func.count()).select_from(table))
                       for table in (ReferenceImage, Embedding, IndexMember))
    engine.dispose()
    return counts  # type: ignore[return-value]


def test_build_skip_resume_and_predict(refs, tiny_checkpoint, data_dir, database_url):
    """The issue's acceptance line: 3 species x 6 photos + 1 corrupt; a re-run embeds 0; predict finds the species."""
    (refs / SPECIES[0] / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    env = {"IDENTIFY_DATABASE_URL": database_url}
    args = ["build-index", "--model", tiny_checkpoint, "--images", refs, "--name", "bar", "--json"]
    first = identify(*args, env=env)
    assert first.exit_code == 0, first.output
    summary = last_json(first.stdout)
    assert (summary["embedded"], summary["skipped"], summary["total"]) == (18, 1, 19)
    assert summary["failures"][0]["path"].endswith("broken.jpg")
    manifest = json.loads((Path(summary["index"]) / "manifest.json").read_text())
    assert (manifest["count"], manifest["metric"], manifest["index_type"], manifest["dim"]) == (18, "cosine", "flat", 144)
    again = last_json(identify(*args, env=env).stdout)
    assert (again["embedded"], again["already_indexed"], again["count"]) == (0, 18, 18)
    assert row_counts(database_url) == (18, 18, 18)

    photo = refs / SPECIES[1] / f"{SPECIES[1]}_0.jpg"
    result = identify("predict", "--model", tiny_checkpoint, "--index", "bar", photo, "--json", env=env)
    assert result.exit_code == 0, result.output
    answer = last_json(result.stdout)
    assert answer["neighbours"][0]["species"] == SPECIES[1] and answer["neighbours"][0]["similarity"] > 0.999
    assert answer["neighbours"][0]["name"] == kept_as(SPECIES[1])  # the folder's label; the species it votes for
    assert answer["decision"] in ("confident", "needs_review", "no_match")
    assert [s["name"] for s in answer["species"]][0] == kept_as(SPECIES[1])  # its own photo is among the references


def test_new_photos_are_added_and_the_index_republished(refs, tiny_checkpoint, data_dir):
    args = ["build-index", "--model", tiny_checkpoint, "--images", refs, "--workers", "0", "--json"]
    assert last_json(identify(*args).stdout)["count"] == 18
    make_species_folder(refs, SPECIES, per=2, first_variant=100)
    summary = last_json(identify(*args).stdout)
    assert (summary["embedded"], summary["already_indexed"], summary["count"]) == (6, 18, 24)


class PowerCut(Backbone):
    """A backbone that dies after `survive` batches, as a killed process would."""

    def __init__(self, real: Backbone, survive: int) -> None:
        super().__init__(real.net, real.identity, real.device)
        self.left = survive

    def forward(self, batch):  # type: ignore[no-untyped-def]
        if self.left == 0:
            raise RuntimeError("power cut")
        self.left -= 1
        return super().forward(batch)


def test_interrupted_build_resumes_without_duplicates(refs, tiny_checkpoint, data_dir):
    settings = load_settings()
    engine = make_engine(settings.database_url)
    upgrade_database(engine)
    store = Store(engine)
    sources = from_folder(refs)
    options = BuildOptions("birds", batch_size=4, workers=0, progress=False)
    backbone = load_backbone(str(tiny_checkpoint))
    with pytest.raises(RuntimeError, match="power cut"):
        IndexBuilder(settings, PowerCut(backbone, survive=2), store, options).run(sources)
    assert row_counts(settings.database_url) == (8, 8, 8)  # the two finished batches were kept
    assert not (settings.indexes_dir / "birds").exists()  # nothing half-published
    report = IndexBuilder(settings, backbone, store, options).run(sources)
    assert (report.embedded, report.already_indexed, report.count) == (10, 8, 18)
    assert row_counts(settings.database_url) == (18, 18, 18)


def test_duplicates_and_label_conflicts_are_counted_not_embedded(refs, tiny_checkpoint, data_dir):
    photo = (refs / SPECIES[0] / f"{SPECIES[0]}_0.jpg").read_bytes()
    (refs / SPECIES[0] / "copy.jpg").write_bytes(photo)
    args = ["build-index", "--model", tiny_checkpoint, "--images", refs, "--workers", "0", "--json"]
    summary = last_json(identify(*args).stdout)
    assert (summary["embedded"], summary["duplicates"]) == (18, 1)
    (refs / SPECIES[1] / "mislabelled.jpg").write_bytes(photo)
    summary = last_json(identify(*args).stdout)
    assert summary["skipped"] == 1 and summary["failures"][0]["code"] == "label_conflict"


def test_csv_manifest_with_optional_columns(refs, tiny_checkpoint, data_dir):
    rows = ["path,species,lat,lon,observed_at,source,crop"]
    rows += [f"{SPECIES[i]}/{SPECIES[i]}_{j}.jpg,{SPECIES[i]},51.5,-0.12,2024-05-01T06:30:00,atlas,"
             + ('"0.1,0.2,0.5,0.5"' if (i, j) == (0, 0) else "") for i in range(3) for j in range(2)]
    (refs / "refs.csv").write_text("\n".join(rows) + "\n")
    summary = last_json(identify("build-index", "--model", tiny_checkpoint, "--manifest", refs / "refs.csv",
                                 "--workers", "0", "--json").stdout)
    assert (summary["embedded"], summary["count"]) == (6, 6)
    engine = make_engine(load_settings().database_url)
    with engine.connect() as connection:
        lat, source = connection.execute(select(ReferenceImage.lat, ReferenceImage.source)).first()
    assert (lat, source) == (51.5, "atlas")
    listed = identify("references", "list").stdout.splitlines()  # the cropped reference says which part it is
    assert len(listed) == 6 and [line.endswith("  crop 0.1,0.2,0.5,0.5") for line in listed].count(True) == 1
    crops = [json.loads(line)["crop"] for line in identify("references", "list", "--json").stdout.splitlines()]
    assert crops.count({"x": 0.1, "y": 0.2, "w": 0.5, "h": 0.5}) == 1 and crops.count(None) == 5


def assert_refused(result, code: str) -> None:
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and f"error: {code}:" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content, code", [
    ("path,lat\nx.jpg,1\n", "bad_manifest"),  # no species column
    ("path,species,lat\na.jpg,sp,91\n", "bad_coordinates"),
    ("path,species,observed_at\na.jpg,sp,yesterday\n", "bad_date"),
])
def test_bad_manifest_changes_nothing(tmp_path, tiny_checkpoint, data_dir, content, code):
    (tmp_path / "refs.csv").write_text(content)
    result = identify("build-index", "--model", tiny_checkpoint, "--manifest", tmp_path / "refs.csv")
    assert_refused(result, code)
    assert not data_dir.exists()


def test_unknown_model_and_missing_checkpoint_are_one_line_errors(refs, tmp_path, data_dir):
    assert_refused(identify("build-index", "--model", "no_such_model", "--images", refs), "unknown_model")
    assert_refused(identify("build-index", "--model", tmp_path / "gone.pt", "--images", refs), "model_not_found")
    assert_refused(identify("build-index", "--model", "x", "--images", refs, "--manifest", "m.csv"), "bad_arguments")
    assert not data_dir.exists()


def test_index_of_another_model_is_refused_and_kept(refs, tiny_checkpoint, other_checkpoint, data_dir):
    assert identify("build-index", "--model", tiny_checkpoint, "--images", refs, "--name", "birds",
                    "--workers", "0").exit_code == 0
    manifest = (data_dir / "indexes" / "birds" / "manifest.json").read_text()
    result = identify("build-index", "--model", other_checkpoint, "--images", refs, "--name", "birds", "--json")
    assert_refused(result, "index_model_mismatch")
    assert last_json(result.stdout)["error"]["code"] == "index_model_mismatch"
    assert (data_dir / "indexes" / "birds" / "manifest.json").read_text() == manifest
    photo = refs / SPECIES[0] / f"{SPECIES[0]}_0.jpg"
    assert_refused(identify("predict", "--model", other_checkpoint, "--index", "birds", photo), "index_model_mismatch")


def test_predict_reports_a_bad_photo_and_goes_on(refs, tiny_checkpoint, data_dir, tmp_path):
    identify("build-index", "--model", tiny_checkpoint, "--images", refs, "--workers", "0")
    (tmp_path / "notes.txt").write_text("not a photo")
    good = refs / SPECIES[2] / f"{SPECIES[2]}_3.jpg"
    result = identify("predict", "--model", tiny_checkpoint, tmp_path / "notes.txt", good, "--json")
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert lines[0]["error"]["code"] == "not_an_image"
    assert lines[1]["neighbours"][0]["species"] == SPECIES[2]
    text = identify("predict", "--model", tiny_checkpoint, good).stdout
    assert "nearest reference photos" in text and kept_as(SPECIES[2]) in text


@pytest.mark.slow
def test_killed_build_process_loses_nothing_and_resumes(tmp_path, data_dir):
    """A real crash: SIGKILL the build once some batches are committed; the re-run completes without duplicates."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from sqlalchemy.exc import OperationalError

    from tests.conftest import write_birder_checkpoint

    refs = make_species_folder(tmp_path / "many", SPECIES, per=30)
    checkpoint = write_birder_checkpoint("xcit_nano12_p16", SPECIES, 256, tmp_path / "xcit_nano12_p16.pt")
    database_url = load_settings().database_url
    command = [sys.executable, "-m", "identify.cli", "build-index", "--model", str(checkpoint), "--images", str(refs),
               "--batch-size", "4", "--workers", "0", "--json"]
    build = subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    def embedded_so_far() -> int:
        try:
            return row_counts(database_url)[1]
        except OperationalError:  # the database or its tables are not there yet
            return 0

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and build.poll() is None and embedded_so_far() < 8:
        time.sleep(0.05)
    assert build.poll() is None, "the build finished before it could be killed"
    build.send_signal(signal.SIGKILL)
    build.wait()
    kept = row_counts(database_url)
    assert kept[0] == kept[1] == kept[2] and kept[1] % 4 == 0  # whole batches only, every row consistent
    resumed = subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, check=True)
    summary = last_json(resumed.stdout)
    assert summary["embedded"] + summary["already_indexed"] == 90 and summary["count"] == 90
    assert row_counts(database_url) == (90, 90, 90)
    engine = make_engine(database_url)
    with engine.connect() as connection:  # the killed build is marked, not left `running` for ever
        statuses = connection.execute(select(IndexBuild.status).order_by(IndexBuild.id)).scalars().all()
    engine.dispose()
    assert statuses == ["abandoned", "published"]


def test_a_second_build_of_the_same_index_waits_its_turn(refs, tiny_checkpoint, data_dir):
    """While one build holds an index, another of the same index is refused at once; other indexes go on."""
    from index_builder.runner import build_lock

    settings = load_settings()
    with build_lock(settings.indexes_dir, "birds"):
        busy = identify("build-index", "--model", tiny_checkpoint, "--images", refs, "--name", "birds", "--workers", "0")
        assert busy.exit_code == 1 and "error: build_running:" in busy.stderr
        other = identify("build-index", "--model", tiny_checkpoint, "--images", refs, "--name", "other", "--workers", "0")
        assert other.exit_code == 0
    assert identify("build-index", "--model", tiny_checkpoint, "--images", refs, "--name", "birds",
                    "--workers", "0").exit_code == 0


def test_predict_takes_folders_recursively_and_the_environment(refs, tiny_checkpoint, data_dir, tmp_path):
    """IDENTIFY_MODEL and IDENTIFY_INDEX stand for --model and --index; a folder stands for every photo below it."""
    identify("build-index", "--model", tiny_checkpoint, "--images", refs, "--name", "birds", "--workers", "0")
    env = {"IDENTIFY_MODEL": str(tiny_checkpoint), "IDENTIFY_INDEX": "birds"}
    result = identify("predict", refs / SPECIES[0], "--json", env=env)
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(answers) == 6 and all(a["neighbours"][0]["species"] == SPECIES[0] for a in answers)
    assert "/6 [" in result.stderr  # a progress bar past a few photos
    # drawn once and moved on, not drawn again after every answer written to a file (`make demo` showed it 35
    # times): the bar's stream holds as many redraws as updates, not one per answer more
    assert result.stderr.count("0/6 [") <= 1, result.stderr
    assert "[" not in identify("predict", *sorted((refs / SPECIES[0]).iterdir())[:2], env=env).stderr
    listing = identify("indexes", "--json")
    (entry,) = json.loads(listing.stdout)
    assert (entry["name"], entry["vectors"], entry["index_type"], entry["model"]) == ("birds", 18, "flat",
                                                                                     tiny_checkpoint.stem)
    assert entry["size_bytes"] > 0 and entry["created"]
    assert "birds" in identify("indexes").stdout


def _timed_cli(*args: str, env: dict) -> tuple[subprocess.CompletedProcess, float, set[str]]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "identify", *args], capture_output=True,
                            text=True, env={**os.environ, **env})
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    return result, time.perf_counter() - start, imported


def test_predict_mistakes_are_reported_at_once_without_the_model_stack(refs, tiny_checkpoint, data_dir):
    """A missing photo, model file or index fails before torch, birder or FAISS load, naming what there is."""
    identify("build-index", "--model", tiny_checkpoint, "--images", refs, "--name", "birds", "--workers", "0")
    photo = str(refs / SPECIES[0] / f"{SPECIES[0]}_0.jpg")
    env = {"IDENTIFY_DATA_DIR": str(data_dir)}
    cases = [(["--model", str(tiny_checkpoint), "--index", "birds", "/no/such.jpg"], "photo_not_found"),
             (["--model", "/no/such/model.pt", "--index", "birds", photo], "model_not_found"),
             (["--model", str(tiny_checkpoint), "--index", "nosuch", photo], "unknown_index")]
    for args, code in cases:
        result, seconds, imported = _timed_cli("predict", *args, env=env)
        message = [line for line in result.stderr.splitlines() if not line.startswith("import time:")][-1]
        assert result.returncode == 1 and message.startswith(f"error: {code}:"), (code, message)
        assert not imported & {"torch", "birder", "faiss", "torchvision"}, (code, imported & {"torch", "birder"})
        assert seconds < 2.0, (code, seconds)  # the process start included; the check itself takes milliseconds
    result, _, _ = _timed_cli("predict", "--model", str(tiny_checkpoint), "--index", "nosuch", photo, env=env)
    assert "known: birds" in result.stderr


def _vectors_by_photo(database_url: str) -> dict[str, np.ndarray]:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(select(ReferenceImage.file_sha256, Embedding.vector)
                                  .join(Embedding, Embedding.reference_id == ReferenceImage.id)).all()
    engine.dispose()
    return {sha: np.frombuffer(vector, dtype=np.float32) for sha, vector in rows}


@pytest.mark.slow
def test_a_torchrun_build_of_two_ranks_equals_one_process(refs, tiny_checkpoint, tmp_path):
    """Two CPU processes under torchrun (gloo) store the same rows and vectors as one process, without
    duplicates; rank 0 reports the whole build, rank 1 its shard; a rerun of both embeds nothing."""
    args = ["build-index", "--model", str(tiny_checkpoint), "--images", str(refs), "--name", "birds", "--json",
            "--workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("IDENTIFY_DATABASE_URL", None)
    one = subprocess.run([sys.executable, "-m", "identify", *args], capture_output=True, text=True, check=True,
                         env={**env, "IDENTIFY_DATA_DIR": str(tmp_path / "one")})
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "identify"]

    def two_ranks() -> list[dict]:
        run = subprocess.run([*torchrun, *args], capture_output=True, text=True, timeout=600,
                             env={**env, "IDENTIFY_DATA_DIR": str(tmp_path / "two")})
        assert run.returncode == 0, run.stderr[-2000:]
        return sorted((json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")),
                      key=lambda report: report["rank"])

    leader, other = two_ranks()
    assert (leader["rank"], leader["world_size"], other["rank"], other["world_size"]) == (0, 2, 1, 2)
    assert "count" not in other and other["embedded"] == 9  # its shard: every second of 18 photos
    assert leader["embedded"] == 18 and leader["count"] == last_json(one.stdout)["count"] == 18
    alone = _vectors_by_photo(f"sqlite:///{tmp_path / 'one' / 'identify.db'}")
    shared = _vectors_by_photo(f"sqlite:///{tmp_path / 'two' / 'identify.db'}")
    assert set(shared) == set(alone) and len(shared) == 18
    assert all(np.allclose(shared[sha], alone[sha], atol=1e-5) for sha in alone)
    assert row_counts(f"sqlite:///{tmp_path / 'two' / 'identify.db'}") == (18, 18, 18)
    again = two_ranks()
    assert [r["embedded"] for r in again] == [0, 0] and again[0]["already_indexed"] == 18


def test_a_small_memory_budget_gives_an_ivf_pq_index_and_its_recall(refs, tiny_checkpoint, data_dir):
    args = ["build-index", "--model", tiny_checkpoint, "--images", refs, "--name", "birds", "--workers", "0", "--json"]
    report = last_json(identify(*args, "--memory-budget", "4KB").stdout)
    assert report["index_type"] == "ivfpq" and report["count"] == 18
    assert 0 < report["recall_at_10"] <= 1
    listed = json.loads(identify("indexes", "--json").stdout)[0]
    assert (listed["index_type"], listed["recall_at_10"]) == ("ivfpq", report["recall_at_10"])
    photo = refs / SPECIES[1] / f"{SPECIES[1]}_0.jpg"
    answer = last_json(identify("predict", "--model", tiny_checkpoint, "--index", "birds", photo, "--json").stdout)
    assert answer["neighbours"]  # an IVF-PQ index is searched like any other
    again = last_json(identify(*args).stdout)  # no budget: the published index stays as it is
    assert (again["published"], again["index_type"]) == (False, "ivfpq")
    roomy = last_json(identify(*args, "--memory-budget", "1GiB").stdout)  # room enough: exact again
    assert (roomy["published"], roomy["index_type"], roomy["recall_at_10"]) == (True, "flat", None)
    bad = identify(*args, "--memory-budget", "lots")
    assert bad.exit_code == 2 and "not a size" in bad.output
