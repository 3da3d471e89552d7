"""The drawn pretraining set (the course's "ImageNet in miniature"): other species than the four,
the stand-in's kind of pictures, deterministic per seed, and never drawn over anything else."""

import hashlib
import itertools
from pathlib import Path

import pytest
import torchvision
from PIL import Image

from resnet_course import pretraining
from resnet_course.birds import CLASS_ALIASES, CLASS_NAMES, BirdDataError
from resnet_course.cli import main
from resnet_course.data import course_class_for, load_birds, scan_dataset_folder
from resnet_course.drawing import FIELD_MARK_SHAPES
from resnet_course.pretraining import (
    PRETRAINING_MARKER,
    SPECIES,
    make_pretraining_set,
    pretraining_minutes,
    pretraining_set_is_complete,
    species_names,
)

SHAPE_FIELDS = tuple(FIELD_MARK_SHAPES)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) by relative path, with a hash of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return make_pretraining_set(tmp_path_factory.mktemp("pre") / "set", species=3, per_species=5, seed=0)


def test_set_has_the_asked_species_and_counts(small_set):
    folders = sorted(p.name for p in small_set.iterdir() if p.is_dir())
    assert folders == sorted(species_names(3)) == sorted(name for name, _ in SPECIES[:3])
    for name in folders:
        assert sorted(p.name for p in (small_set / name).iterdir()) == [f"{name}_{i:04d}.jpg" for i in range(5)]
    assert (small_set / PRETRAINING_MARKER).is_file()
    assert pretraining_set_is_complete(small_set, species=3, per_species=5, seed=0)
    assert not pretraining_set_is_complete(small_set, species=3, per_species=5, seed=1)
    assert not pretraining_set_is_complete(small_set, species=4, per_species=5, seed=0)


def test_images_are_224_rgb_jpegs(small_set):
    for path in small_set.rglob("*.jpg"):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (224, 224))


def test_marker_says_what_it_is_and_is_not(small_set):
    text = (small_set / PRETRAINING_MARKER).read_text(encoding="utf-8")
    assert "ImageNet in miniature" in text and "NOT the course's four" in text and "not ImageNet" in text
    assert "ImageNet in miniature" in pretraining.__doc__ and "What it is not" in pretraining.__doc__


def test_same_seed_same_bytes_other_seed_other_bytes(small_set, tmp_path):
    again = tree_digest(make_pretraining_set(tmp_path / "again", species=3, per_species=5, seed=0))
    other = tree_digest(make_pretraining_set(tmp_path / "other", species=3, per_species=5, seed=1))
    first = tree_digest(small_set)
    assert again == first
    images = [name for name in first if name.endswith(".jpg")]
    assert len(images) == 15 and all(other[name] != first[name] for name in images)


def test_images_differ_within_a_species(small_set):
    digests = tree_digest(small_set)
    assert len({digests[n] for n in digests if n.endswith(".jpg")}) == 15


def test_no_species_is_named_like_a_course_class():
    names = [name for name, _ in SPECIES]
    assert len(set(names)) == len(names) == 16
    course_words = {w.casefold() for c in (*CLASS_NAMES, *CLASS_ALIASES) for w in c.split()}
    for name in names:
        assert course_class_for(name) is None, name
        assert not course_words & {w.casefold() for w in name.replace("-", " ").split()}, name


def test_species_differ_from_each_other_in_at_least_two_shapes():
    for (a, marks_a), (b, marks_b) in itertools.combinations(SPECIES, 2):
        differing = [f for f in SHAPE_FIELDS if getattr(marks_a, f) != getattr(marks_b, f)]
        assert len(differing) >= 2, (a, b, differing)
    for _, marks in SPECIES:
        for field, shapes in FIELD_MARK_SHAPES.items():
            assert getattr(marks, field) in shapes


def test_loads_as_a_dataset_with_its_species_as_classes(small_set):
    train, val, class_names = load_birds(small_set, image_size=32, batch_size=4)
    assert class_names == sorted(species_names(3)) == torchvision.datasets.ImageFolder(small_set).classes
    assert len(train.dataset) == 12 and len(val.dataset) == 3  # 4 + 1 of each species' 5
    for path, label in train.dataset.samples + val.dataset.samples:
        assert class_names[label] == Path(path).parent.name
    assert scan_dataset_folder(small_set).ignored_folders == []


def test_default_size_fits_the_45_minute_budget():
    """ResNet-50, 20 epochs at 112 px, 2 CPU cores (16 training images/s, validation 3x faster)."""
    assert pretraining.DEFAULT_SPECIES * pretraining.DEFAULT_PER_SPECIES == 1800
    assert pretraining_minutes() == pytest.approx((1440 / 16 + 360 / 48) * 20 / 60)
    assert pretraining_minutes() <= 0.8 * 45  # a fifth of the budget left for a busier machine
    assert pretraining_minutes(16, 200) > 45  # the estimate does grow with the set


def test_a_complete_set_is_left_as_it_is(small_set, capsys):
    before = {p: p.stat().st_mtime_ns for p in small_set.rglob("*")}
    args = ["make-pretraining-set", "--out", str(small_set), "--species", "3", "--per-species", "5"]
    assert main(args) == 0
    assert "nothing to draw" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in small_set.rglob("*")} == before


def test_an_other_drawn_set_is_redrawn(tmp_path):
    root = make_pretraining_set(tmp_path / "set", species=3, per_species=5, seed=0)
    make_pretraining_set(root, species=2, per_species=6, seed=2)
    assert pretraining_set_is_complete(root, species=2, per_species=6, seed=2)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(species_names(2))


def test_cli_draws_a_set_and_says_what_it_is(tmp_path, capsys):
    out = tmp_path / "drawn"
    assert main(["make-pretraining-set", "--out", str(out), "--species", "2", "--per-species", "5", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "ImageNet in miniature" in printed and "not the course's four" in printed
    assert pretraining_set_is_complete(out, species=2, per_species=5, seed=3)


def _photo_folder(root: Path) -> None:
    (root / "Bananaquit").mkdir(parents=True)
    Image.new("RGB", (20, 20), (200, 200, 0)).save(root / "Bananaquit" / "mine.jpg")


def _set_with_a_photo_among_drawings(root: Path) -> None:
    make_pretraining_set(root, species=2, per_species=5)
    Image.new("RGB", (20, 20), (0, 0, 200)).save(root / species_names(2)[0] / "photo.jpg")


def _set_with_an_extra_folder(root: Path) -> None:
    make_pretraining_set(root, species=2, per_species=5)
    (root / "my notes").mkdir()
    (root / "my notes" / "todo.txt").write_text("keep me")


def _a_file(root: Path) -> None:
    root.write_text("not a folder")


def _a_note(root: Path) -> None:
    root.mkdir()
    (root / "notes.txt").write_text("keep me")


@pytest.mark.parametrize(
    "make_target",
    [_photo_folder, _set_with_a_photo_among_drawings, _set_with_an_extra_folder, _a_file, _a_note],
    ids=["real photos", "photo among drawings", "foreign folder", "a file", "a note"],
)
def test_refuses_to_draw_into_a_folder_holding_anything_else(tmp_path, capsys, make_target):
    target = tmp_path / "target"
    make_target(target)
    before = tree_digest(tmp_path)
    with pytest.raises(BirdDataError):
        make_pretraining_set(target, species=2, per_species=6, seed=1)
    capsys.readouterr()
    code = main(["make-pretraining-set", "--out", str(target), "--species", "2", "--per-species", "6", "--seed", "1"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--species", "1"], "--species must be a whole number from 2 to 16"),
        (["--species", "17"], "--species must be a whole number from 2 to 16"),
        (["--per-species", "4"], "--per-species must be a whole number from 5"),
        (["--per-species", "5001"], "to 5000"),
        (["--species", "-3"], "not -3"),
    ],
)
def test_bad_values_exit_2_with_one_message(tmp_path, capsys, argv, message):
    existing = tmp_path / "keep.txt"
    existing.write_text("keep")
    code = main(["make-pretraining-set", "--out", str(tmp_path / "set"), *argv])
    captured = capsys.readouterr()
    assert code == 2 and message in captured.err and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"] and existing.read_text() == "keep"


def test_a_word_for_a_number_is_a_usage_error(tmp_path, capsys):
    assert main(["make-pretraining-set", "--out", str(tmp_path / "set"), "--per-species", "many"]) == 2
    err = capsys.readouterr().err
    assert "invalid int value: 'many'" in err and err.count("error:") == 1 and "Traceback" not in err
    assert not (tmp_path / "set").exists()


def test_library_refuses_bad_values_with_one_sentence(tmp_path):
    for species, per_species in ((0, 10), (17, 10), (3, 2), (3, 10**6), (2.5, 10)):
        with pytest.raises(ValueError, match="must be a whole number"):
            make_pretraining_set(tmp_path / "x", species=species, per_species=per_species)
    assert not (tmp_path / "x").exists()
