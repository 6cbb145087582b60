"""The bird demo of `make demo`, from what can be had offline: the photo cut-outs of birds in Debian's
`tuxpaint-stamps-default` (real photographs, background removed), set on textured backgrounds.

    python -m identify.demo photos DIR      reference gallery, queries, queries.csv, taxonomy.csv
    python -m identify.demo curator DIR     the demo curator: created once, the same login on every run
    python -m identify.demo summary DIR F   what `identify predict --json` (file F) said of each query

References: every cut-out but the held-out ones, each on three backgrounds (meadow, sky, gravel) at different
sizes and places. Queries come in two kinds, counted apart because they mean different things:
  - "another photo": a photo of the species that is in no reference (a rooster where the references are a hen
    and a chicken in profile; a mallard drake where the reference is a duck in eclipse plumage; ...);
  - "new scene": a cut-out that is also a reference, on a background no reference has, mirrored and resized.
    The bird's pixels are the reference's, so this shows the search working, not that it generalises.
There are no labelled bird photo sets to be had offline; the README gives the figures with this caveat.

The model is the ImageNet EfficientNet-Lite0, whose classes include some 59 birds. `taxonomy.csv` maps the
ImageNet bird classes that name one taxon (cock and hen are Gallus gallus) so that the classifier and the
references vote for the same taxa."""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

STAMPS = Path(os.environ.get("IDENTIFY_DEMO_STAMPS", "/usr/share/tuxpaint/stamps/animals/birds"))
SIZE = 384

# stamp file -> scientific name (the stamps are named in English; these are what their photos show)
SPECIES = {
    "adelaide-rosella": "Platycercus elegans", "albino_peahen": "Pavo cristatus", "peacock": "Pavo cristatus",
    "blackbird": "Turdus merula", "chicken_profile": "Gallus gallus", "hen": "Gallus gallus",
    "rooster": "Gallus gallus", "crow": "Corvus corone", "crowned_crane": "Balearica regulorum",
    "cuckoo": "Cuculus canorus", "drake": "Anas platyrhynchos", "duck": "Anas platyrhynchos",
    "gander": "Anser cygnoides", "guineafowl": "Numida meleagris", "helmeted_guineafowl": "Numida meleagris",
    "heron_greatblue": "Ardea herodias", "heron_greatblue_flying": "Ardea herodias",
    "lark": "Eremophila alpestris", "little-penguin": "Eudyptula minor",
    "magellanic_penguin": "Spheniscus magellanicus", "magpie": "Gymnorhina tibicen", "nandou": "Rhea americana",
    "ostrich": "Struthio camelus", "owl": "Bubo scandiacus", "pelican": "Pelecanus erythrorhynchos",
    "penguin": "Aptenodytes patagonicus", "pigeon": "Columba livia", "pink_flamingo": "Phoenicopterus roseus",
    "quetzal": "Pharomachrus mocinno", "rainbow-lorikeet": "Trichoglossus moluccanus",
    "seagull": "Larus argentatus", "silver-gull": "Chroicocephalus novaehollandiae",
    "tucan": "Ramphastos sulfuratus", "turkey": "Meleagris gallopavo", "vulture": "Gyps fulvus",
}
# Photos kept out of the references: each species still has another photo there.
HELD_OUT = ("rooster", "duck", "helmeted_guineafowl", "heron_greatblue_flying", "peacock")

# ImageNet bird classes -> the taxon they name (torchvision's class names; "crane bird" is the bird).
IMAGENET_TAXA = {
    "cock": "Gallus gallus", "hen": "Gallus gallus", "ostrich": "Struthio camelus", "magpie": "Pica pica",
    "peacock": "Pavo cristatus", "lorikeet": "Trichoglossus moluccanus", "drake": "Anas platyrhynchos",
    "goose": "Anser anser", "flamingo": "Phoenicopterus roseus", "toucan": "Ramphastos", "pelican": "Pelecanus",
    "crane bird": "Gruidae", "robin": "Turdus migratorius", "American egret": "Ardea alba",
    "European gallinule": "Porphyrio porphyrio", "redshank": "Tringa totanus", "oystercatcher": "Haematopus",
    "spoonbill": "Platalea", "albatross": "Diomedeidae", "hummingbird": "Trochilidae", "vulture": "Gyps",
    # ImageNet's words for a group of birds, mapped to the group (WordNet's sense of each class), so that pages
    # say "a bee-eater (family Meropidae)" rather than the model's "bee eater"; a species where WordNet names one.
    "goldfinch": "Carduelis carduelis", "bulbul": "Pycnonotidae", "jay": "Corvidae", "chickadee": "Poecile",
    "water ouzel": "Cinclus", "kite": "Milvus", "ptarmigan": "Lagopus", "prairie chicken": "Tympanuchus",
    "quail": "Odontophoridae", "partridge": "Perdix", "African grey": "Psittacus erithacus", "macaw": "Ara",
    "coucal": "Centropus", "bee eater": "Meropidae", "hornbill": "Bucerotidae", "jacamar": "Galbulidae",
    "bittern": "Botaurus", "bustard": "Otididae", "red-backed sandpiper": "Calidris alpina",
    "dowitcher": "Limnodromus",
}

REFERENCE_SCENES = ("meadow", "sky", "gravel")
QUERY_SCENES = ("wall", "water", "stubble")


def _tinted(grey: np.ndarray, dark: tuple[int, int, int], light: tuple[int, int, int]) -> Image.Image:
    """A grey texture coloured from `dark` to `light`, SIZE x SIZE."""
    image = ImageOps.colorize(Image.fromarray(grey).convert("L"), dark, light)
    return ImageOps.fit(image, (SIZE, SIZE))


def _sky() -> Image.Image:
    rows = np.linspace(0, 1, SIZE)[:, None, None]
    top, bottom = np.array([110, 160, 220]), np.array([225, 235, 245])
    noise = np.random.default_rng(1).normal(0, 3, (SIZE, SIZE, 1))
    return Image.fromarray(np.clip(top + (bottom - top) * rows + noise, 0, 255).astype(np.uint8))


def backgrounds() -> dict[str, Image.Image]:
    """Six backgrounds from scikit-image's textures: three for references, three that only queries get."""
    import skimage.data

    grass, gravel, brick, moon = skimage.data.grass(), skimage.data.gravel(), skimage.data.brick(), skimage.data.moon()
    return {
        "meadow": _tinted(grass, (30, 60, 20), (150, 200, 90)),
        "sky": _sky(),
        "gravel": _tinted(gravel, (70, 60, 50), (200, 190, 170)),
        "wall": _tinted(brick, (80, 35, 25), (210, 150, 120)),
        "water": _tinted(moon, (20, 50, 90), (140, 190, 220)).filter(ImageFilter.GaussianBlur(2)),
        "stubble": _tinted(grass, (120, 90, 30), (240, 215, 140)).filter(ImageFilter.GaussianBlur(1.5)),
    }


def scene(bird: Image.Image, background: Image.Image, rng: np.random.Generator, mirrored: bool) -> Image.Image:
    """The bird (RGBA cut-out) at a random size (55-85 % of the frame) and place on the background."""
    bird = bird.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirrored else bird
    bird = bird.crop(bird.getbbox())
    scale = rng.uniform(0.55, 0.85) * SIZE / max(bird.size)
    bird = bird.resize((max(1, round(bird.width * scale)), max(1, round(bird.height * scale))), Image.Resampling.LANCZOS)
    x = int(rng.integers(0, SIZE - bird.width + 1))
    y = int(rng.integers(0, SIZE - bird.height + 1))
    out = background.copy()
    out.paste(bird, (x, y), bird)
    return out


def check_stamps() -> None:
    missing = [name for name in SPECIES if not (STAMPS / f"{name}.png").is_file()]
    if missing:
        sys.exit(f"the demo's bird photos are missing ({STAMPS}/{missing[0]}.png): install Debian's "
                 "tuxpaint-stamps-default (sudo apt-get install tuxpaint-stamps-default), or point "
                 "IDENTIFY_DEMO_STAMPS at its animals/birds folder")


def write_demo_photos(root: Path) -> list[Path]:
    """`root/gallery/<species>/*.jpg`, `root/queries/*.jpg`, `root/queries.csv` (path,species,kind) and
    `root/taxonomy.csv`; returns the query paths."""
    check_stamps()
    scenes = backgrounds()
    rng = np.random.default_rng(2026)
    rows = ["path,species,kind"]
    queries = []
    for number, (stamp, species) in enumerate(sorted(SPECIES.items())):
        bird = Image.open(STAMPS / f"{stamp}.png").convert("RGBA")
        if stamp not in HELD_OUT:
            folder = root / "gallery" / species
            folder.mkdir(parents=True, exist_ok=True)
            for index, name in enumerate(REFERENCE_SCENES):
                photo = scene(bird, scenes[name], rng, mirrored=index == 1)
                photo.save(folder / f"{stamp}_{name}.jpg", quality=90)
        (root / "queries").mkdir(parents=True, exist_ok=True)
        path = root / "queries" / f"{stamp}.jpg"
        scene(bird, scenes[QUERY_SCENES[number % len(QUERY_SCENES)]], rng, mirrored=True).save(path, quality=90)
        queries.append(path)
        rows.append(f"queries/{stamp}.jpg,{species},{'another photo' if stamp in HELD_OUT else 'new scene'}")
    (root / "queries.csv").write_text("\n".join(rows) + "\n")
    mapping = ["label,scientific_name"] + [f"{label},{name}" for label, name in IMAGENET_TAXA.items()]
    (root / "taxonomy.csv").write_text("\n".join(mapping) + "\n")
    return queries


@dataclass(frozen=True)
class Outcome:
    photo: str
    truth: str
    kind: str
    answer: str
    decision: str
    score: float

    @property
    def right(self) -> bool:
        return self.answer == self.truth


def _answer(result: dict) -> tuple[str, float]:
    top = result["species"][0] if result.get("species") else None
    if top is None:
        return "-", 0.0
    name = top["taxon"]["scientific_name"] if top.get("taxon") else top["name"]
    return name, float(top["score"])


def summarise(root: Path, predictions: Path) -> list[Outcome]:
    truth = {}
    for line in (root / "queries.csv").read_text().splitlines()[1:]:
        path, species, kind = line.split(",")
        truth[Path(path).name] = (species, kind)
    outcomes = []
    for line in predictions.read_text().splitlines():
        result = json.loads(line)
        name = Path(result["photo"]).name
        species, kind = truth[name]
        answer, score = _answer(result) if "error" not in result else ("error", 0.0)
        outcomes.append(Outcome(name, species, kind, answer, result.get("decision", "error"), score))
    return outcomes


def print_summary(outcomes: list[Outcome]) -> None:
    print(f"{'query':<28} {'kind':<14} {'truth':<32} {'answer':<32} {'score':>5}  decision")
    for o in sorted(outcomes, key=lambda o: (o.kind, o.photo)):
        mark = "" if o.right else "  <- wrong"
        print(f"{o.photo:<28} {o.kind:<14} {o.truth:<32} {o.answer[:32]:<32} {o.score:5.2f}  {o.decision}{mark}")
    for kind in ("another photo", "new scene"):
        chosen = [o for o in outcomes if o.kind == kind]
        right = sum(o.right for o in chosen)
        confident = [o for o in chosen if o.decision == "confident"]
        print(f"{kind}: top-1 right {right} of {len(chosen)}; confident {len(confident)}, of them right "
              f"{sum(o.right for o in confident)}")


def demo_curator(root: Path, name: str = "demo") -> tuple[str, str]:
    """The demo curator's name and password: created on the first run, the same on every later one (the
    password is kept in `root/demo-curator.txt`, readable by its owner only; a demo, not a deployment)."""
    from identify.config import load_settings
    from identify.parts import Parts

    saved = root / "demo-curator.txt"
    parts = Parts(load_settings())
    curators = parts.curators
    if saved.is_file():
        password = saved.read_text().strip()
        if curators.check_password(name, password) is None:  # the database was reset: create it again
            curators.create(name, password, replace=True)
    else:
        password = secrets.token_urlsafe(12)
        curators.create(name, password, replace=True)
        saved.touch(mode=0o600)
        saved.write_text(password + "\n")
    parts.store.engine.dispose()
    return name, password


def main(argv: list[str]) -> None:
    command, root = argv[0], Path(argv[1])
    if command == "photos":
        for path in write_demo_photos(root):
            print(path)
    elif command == "curator":
        name, password = demo_curator(root)
        print(f"log in at /login as {name!r} with password {password!r} (kept in {root / 'demo-curator.txt'})")
    elif command == "summary":
        print_summary(summarise(root, Path(argv[2])))
    else:
        sys.exit(f"unknown command {command!r}: photos, curator or summary")


if __name__ == "__main__":
    main(sys.argv[1:] or ["photos", "var/demo"])
