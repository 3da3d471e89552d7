"""The bird dataset: folder scan, bad input, the deterministic 452/113 split, loaders, Kaggle import."""

import hashlib
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from resnet_course import config, data
from resnet_course.birds import CLASS_NAMES, BirdDataError, BirdDataWarning
from resnet_course.data import load_birds, scan_bird_folder, split_samples
from resnet_course.images import denormalize, eval_transform, load_rgb, train_transform
from resnet_course.kaggle import import_kaggle

# The course's photo set (four classes of Kaggle's "BIRDS 525 SPECIES", README "The bird photos"):
# folder names, photos per class, split sizes.
COURSE_CLASSES = ("Bananaquit", "Black Skimmer", "Black Throated Bushtiti", "Cockatoo")
COURSE_COUNTS = (166, 122, 111, 166)


def _write_tiny_jpeg(path: Path, rng: random.Random, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3))).save(path, quality=90)


@pytest.fixture(scope="session")
def course_sized_folder(tmp_path_factory) -> Path:
    """565 tiny JPEGs in the learners' layout with the course's counts per class."""
    root = tmp_path_factory.mktemp("course_sized")
    rng = random.Random(0)
    for name, count in zip(COURSE_CLASSES, COURSE_COUNTS):
        for i in range(count):
            _write_tiny_jpeg(root / name / f"photo_{i:03d}.jpg", rng)
    return root


def _small_folder(root: Path, per_class: int = 3) -> Path:
    rng = random.Random(1)
    for name in COURSE_CLASSES:
        for i in range(per_class):
            _write_tiny_jpeg(root / name / f"{i}.jpg", rng, size=20)
    return root


# --------------------------------------------------------------------------------------------
# Class names and the split
# --------------------------------------------------------------------------------------------


def test_class_names_are_the_course_folder_names():
    assert CLASS_NAMES == COURSE_CLASSES


def test_split_is_452_train_113_val(course_sized_folder):
    scan = scan_bird_folder(course_sized_folder)
    assert tuple(scan.counts.values()) == COURSE_COUNTS
    train, val = split_samples(scan, val_split=0.2, seed=123)
    assert (len(train), len(val)) == (452, 113)
    assert not {p for p, _ in train} & {p for p, _ in val}
    assert {p for p, _ in train} | {p for p, _ in val} == {p for p, _ in scan.samples}


def test_split_keeps_every_class_in_proportion(course_sized_folder):
    _, val = split_samples(scan_bird_folder(course_sized_folder), val_split=0.2, seed=123)
    per_class = np.bincount([label for _, label in val], minlength=4)
    for count, n_val in zip(COURSE_COUNTS, per_class):
        assert abs(n_val - count * 0.2) < 1  # 33.2 -> 33, 24.4 -> 24 or 25, ...


def test_split_is_identical_across_calls_and_file_listing_orders(course_sized_folder, monkeypatch):
    first = split_samples(scan_bird_folder(course_sized_folder), seed=123)
    again = split_samples(scan_bird_folder(course_sized_folder), seed=123)
    real_walk = os.walk

    def reversed_walk(top, *args, **kwargs):  # a file system that lists files in another order
        for dirpath, dirnames, filenames in real_walk(top, *args, **kwargs):
            yield dirpath, dirnames, list(reversed(filenames))

    monkeypatch.setattr(data.os, "walk", reversed_walk)
    reordered = split_samples(scan_bird_folder(course_sized_folder), seed=123)
    assert first == again == reordered
    other_seed = split_samples(scan_bird_folder(course_sized_folder), seed=7)
    assert {p for p, _ in other_seed[1]} != {p for p, _ in first[1]}


def test_split_is_pinned_so_every_machine_gets_the_same_validation_photos(course_sized_folder):
    # Recorded once: the split hashes (seed, class, file name) with SHA-256, so it may never change
    # with the Python version, the platform or the file system. If this fails, the course's
    # validation set changed for every learner.
    _, val = split_samples(scan_bird_folder(course_sized_folder), seed=123)
    skimmers = [path.name for path, label in val if label == 1]
    assert skimmers[:8] == [
        "photo_003.jpg",
        "photo_006.jpg",
        "photo_009.jpg",
        "photo_014.jpg",
        "photo_017.jpg",
        "photo_018.jpg",
        "photo_019.jpg",
        "photo_020.jpg",
    ]
    listing = "\n".join(f"{path.parent.name}/{path.name}" for path, _ in val)
    assert hashlib.sha256(listing.encode()).hexdigest()[:16] == "a57a1eda981f2156"


def test_load_birds_gives_seeded_loaders_and_file_paths(course_sized_folder):
    train_loader, val_loader, class_names = load_birds(course_sized_folder, image_size=32, batch_size=8)
    assert class_names == list(COURSE_CLASSES)
    assert (len(train_loader.dataset), len(val_loader.dataset)) == (452, 113)
    images, labels = next(iter(train_loader))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert set(labels.tolist()) <= {0, 1, 2, 3}
    # each sample's label is its folder's index in CLASS_NAMES
    for path, label in train_loader.dataset.samples + val_loader.dataset.samples:
        assert COURSE_CLASSES.index(Path(path).parent.name) == label

    # the training order is shuffled anew each epoch, but the same epochs on every call;
    # validation is not shuffled
    def epochs(loader, count=2):
        return [[y for _, ys in loader for y in ys.tolist()] for _ in range(count)]

    first = epochs(load_birds(course_sized_folder, image_size=8, batch_size=8)[0])
    again = epochs(load_birds(course_sized_folder, image_size=8, batch_size=8)[0])
    assert first == again
    assert first[0] != first[1] and first[0] != sorted(first[0])
    assert [y for _, ys in val_loader for y in ys.tolist()] == val_loader.dataset.targets


def test_loaders_work_with_worker_processes(tmp_path):
    root = _small_folder(tmp_path, per_class=4)
    train_loader, val_loader, _ = load_birds(root, image_size=16, batch_size=4, val_split=0.25, num_workers=2)
    assert sum(len(labels) for _, labels in train_loader) == 12
    assert [y for _, ys in val_loader for y in ys.tolist()] == [0, 1, 2, 3]


def test_a_last_training_batch_of_one_is_dropped_so_batchnorm_cannot_fail(course_sized_folder):
    train_loader, _, _ = load_birds(course_sized_folder, image_size=16, batch_size=11)  # 452 = 41 * 11 + 1
    assert all(len(labels) == 11 for _, labels in train_loader)


# --------------------------------------------------------------------------------------------
# Images of any mode and size
# --------------------------------------------------------------------------------------------


def _odd_images(tmp_path: Path):
    """(name, path, expected RGB of the top-left pixel or None) for images learners might have."""
    cases = []

    def save(name, image, expected=None, **kwargs):
        path = tmp_path / name
        image.save(path, **kwargs)
        cases.append((name, path, expected))

    save("gray.jpg", Image.new("L", (50, 40), 100), (100, 100, 100))
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # transparent: shows as white
    save("rgba.png", rgba, (255, 255, 255))
    palette = Image.new("P", (30, 30), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    save("palette_transparent.png", palette, (255, 255, 255), transparency=0)
    save("palette.gif", Image.new("P", (30, 30), 0), None)
    save("cmyk.jpg", Image.new("CMYK", (40, 40), (0, 0, 0, 0)), (255, 255, 255))
    save("sixteen_bit.png", Image.fromarray(np.full((30, 30), 32896, dtype=np.uint16)), (128, 128, 128))
    save("one_bit.png", Image.new("1", (20, 20), 1), (255, 255, 255))
    save("gray_alpha.png", Image.new("LA", (20, 20), (50, 255)), (50, 50, 50))
    save("tiny.png", Image.new("RGB", (1, 1), (10, 200, 30)), (10, 200, 30))
    save("huge.jpg", Image.new("RGB", (3000, 2000), (0, 0, 250)), None, quality=80)
    save("wide.webp", Image.new("RGB", (300, 20), (0, 250, 0)), None)
    return cases


def test_images_of_every_mode_and_size_become_rgb_tensors(tmp_path):
    for name, path, expected in _odd_images(tmp_path):
        image = load_rgb(path)
        assert image.mode == "RGB", name
        if expected is not None:
            assert np.allclose(image.getpixel((0, 0)), expected, atol=3), (name, image.getpixel((0, 0)))
        for transform in (eval_transform(48), train_transform(48)):
            tensor = transform(Image.open(path))  # the transforms accept any mode too
            assert tensor.shape == (3, 48, 48), name
        assert eval_transform(48)(image).shape == (3, 48, 48)


def test_sixteen_bit_png_is_rescaled_not_clipped(tmp_path):
    path = tmp_path / "ramp16.png"
    Image.fromarray(np.array([[0, 257 * 64, 257 * 255]], dtype=np.uint16)).save(path)
    assert [load_rgb(path).getpixel((x, 0))[0] for x in range(3)] == [0, 64, 255]


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    assert load_rgb(tmp_path / "phone.jpg").size == (20, 40)


def test_denormalize_undoes_the_imagenet_normalisation():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    restored = denormalize(eval_transform(32)(image))
    assert torch.allclose(restored, TF.to_tensor(image), atol=1e-5)
    batch = torch.stack([eval_transform(32)(image)] * 2)
    assert denormalize(batch).shape == (2, 3, 32, 32)


def test_eval_transform_is_fixed_and_train_transform_augments():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    assert torch.equal(eval_transform(32)(image), eval_transform(32)(image))
    torch.manual_seed(0)
    views = [train_transform(32)(image) for _ in range(4)]
    assert any(not torch.equal(views[0], v) for v in views[1:])


def test_transforms_can_be_pickled_for_dataloader_workers():
    for transform in (train_transform(64), eval_transform(64)):
        assert pickle.loads(pickle.dumps(transform)) is not None


# --------------------------------------------------------------------------------------------
# Bad input: ignored, skipped and named, or a clear error
# --------------------------------------------------------------------------------------------


def test_non_image_files_are_ignored_silently(tmp_path):
    root = _small_folder(tmp_path)
    for junk in (".DS_Store", "Thumbs.db", "notes.txt", "desktop.ini", ".hidden.jpg", "._1.jpg"):
        (root / "Cockatoo" / junk).write_bytes(b"not a picture")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "Cockatoo" / ".ipynb_checkpoints").mkdir()
    (root / "Cockatoo" / ".ipynb_checkpoints" / "x.jpg").write_bytes(b"junk")
    scan = scan_bird_folder(root)
    assert scan.counts == {name: 3 for name in COURSE_CLASSES}
    assert scan.skipped == [] and scan.ignored_folders == []


def test_corrupt_images_are_skipped_and_named(tmp_path):
    root = _small_folder(tmp_path, per_class=4)
    good = (root / "Bananaquit" / "0.jpg").read_bytes()
    (root / "Bananaquit" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "Black Skimmer" / "empty.jpg").write_bytes(b"")
    (root / "Cockatoo" / "really_text.jpg").write_text("this is a text file with a .jpg name")
    scan = scan_bird_folder(root)
    assert sorted(p.name for p, _ in scan.skipped) == ["empty.jpg", "really_text.jpg", "truncated.jpg"]
    assert scan.counts == {name: 4 for name in COURSE_CLASSES}
    for name in ("empty.jpg", "really_text.jpg", "truncated.jpg"):
        assert name in scan.report()
    with pytest.warns(BirdDataWarning) as caught:
        train_loader, val_loader, _ = load_birds(root, image_size=16, batch_size=4, val_split=0.25)
    message = " ".join(str(w.message) for w in caught)
    assert all(name in message for name in ("empty.jpg", "really_text.jpg", "truncated.jpg"))
    seen = sum(len(labels) for loader in (train_loader, val_loader) for _, labels in loader)
    assert seen == 16  # every good image, and a whole epoch without a crash


def _assert_helpful(error: pytest.ExceptionInfo, *fragments: str) -> None:
    text = str(error.value)
    for fragment in ("data/bird_photos", "import-kaggle", "make-standin") + fragments:
        assert fragment in text, (fragment, text)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BirdDataError) as error:
        scan_bird_folder(tmp_path / "nowhere")
    _assert_helpful(error, "does not exist")
    with pytest.raises(BirdDataError):
        load_birds(tmp_path / "nowhere")


def test_folder_without_class_folders_is_a_clear_error(tmp_path):
    _write_tiny_jpeg(tmp_path / "loose_photo.jpg", random.Random(0))
    with pytest.raises(BirdDataError) as error:
        scan_bird_folder(tmp_path)
    _assert_helpful(error, "no class folders")


def test_empty_class_folder_is_a_clear_error(tmp_path):
    root = _small_folder(tmp_path)
    for path in (root / "Black Skimmer").iterdir():
        path.unlink()
    (root / "Black Skimmer" / ".DS_Store").write_bytes(b"")
    with pytest.raises(BirdDataError) as error:
        scan_bird_folder(root)
    _assert_helpful(error, "Black Skimmer")


def test_class_folder_of_only_broken_images_is_an_error_naming_them(tmp_path):
    root = _small_folder(tmp_path)
    for path in (root / "Cockatoo").iterdir():
        path.write_bytes(b"")
    with pytest.raises(BirdDataError) as error:
        scan_bird_folder(root)
    _assert_helpful(error, "Cockatoo", "0.jpg")


def test_missing_class_folder_names_it(tmp_path):
    root = _small_folder(tmp_path)
    shutil.rmtree(root / "Bananaquit")
    with pytest.raises(BirdDataError) as error:
        scan_bird_folder(root)
    _assert_helpful(error, "Bananaquit")


def test_a_kaggle_download_given_as_data_points_to_import_kaggle(tmp_path):
    for split in ("train", "valid", "test"):
        _write_tiny_jpeg(tmp_path / split / "BANANAQUIT" / "1.jpg", random.Random(0))
    with pytest.raises(BirdDataError) as error:
        scan_bird_folder(tmp_path)
    _assert_helpful(error, f"import-kaggle {tmp_path}")


def test_bushtit_spelling_is_accepted(tmp_path):
    root = _small_folder(tmp_path)
    (root / "Black Throated Bushtiti").rename(root / "Black Throated Bushtit")
    scan = scan_bird_folder(root)
    assert scan.counts["Black Throated Bushtiti"] == 3
    train_loader, val_loader, names = load_birds(root, image_size=16, val_split=0.25)
    assert names[2] == "Black Throated Bushtiti"
    assert {
        label
        for path, label in train_loader.dataset.samples + val_loader.dataset.samples
        if path.parent.name == "Black Throated Bushtit"
    } == {2}


def test_extra_folders_are_ignored_and_reported(tmp_path):
    root = _small_folder(tmp_path)
    _write_tiny_jpeg(root / "GANG GANG COCKATOO" / "1.jpg", random.Random(0))
    scan = scan_bird_folder(root)
    assert scan.ignored_folders == ["GANG GANG COCKATOO"]
    assert scan.total == 12
    with pytest.warns(BirdDataWarning, match="GANG GANG COCKATOO"):
        load_birds(root, image_size=16, val_split=0.25)


def test_two_folders_for_one_class_is_an_error(tmp_path):
    root = _small_folder(tmp_path)
    shutil.copytree(root / "Black Throated Bushtiti", root / "Black Throated Bushtit")
    with pytest.raises(BirdDataError, match="more than one folder"):
        scan_bird_folder(root)


# --------------------------------------------------------------------------------------------
# Kaggle import
# --------------------------------------------------------------------------------------------

KAGGLE_FOLDERS = {
    "BANANAQUIT": "Bananaquit",
    "BLACK SKIMMER": "Black Skimmer",
    "BLACK THROATED BUSHTIT": "Black Throated Bushtiti",
    "COCKATOO": "Cockatoo",
}
DECOYS = ("GANG GANG COCKATOO", "ROSE BREASTED COCKATOO", "BLACK THROATED WARBLER")


def _fake_kaggle(src: Path) -> dict:
    """train/valid/test/<UPPER NAME>/N.jpg, with the same file names in every split, plus decoys."""
    rng = random.Random(2)
    expected = {name: 0 for name in COURSE_CLASSES}
    for split, per_class in (("train", 4), ("valid", 2), ("test", 2)):
        for folder in list(KAGGLE_FOLDERS) + list(DECOYS):
            for i in range(1, per_class + 1):
                _write_tiny_jpeg(src / split / folder / f"{i}.jpg", rng)
            if folder in KAGGLE_FOLDERS:
                expected[KAGGLE_FOLDERS[folder]] += per_class
    (src / "birds.csv").write_text("class id,filepaths,labels\n")
    return expected


def test_import_kaggle_keeps_exactly_the_four_classes_and_every_photo(tmp_path):
    expected = _fake_kaggle(tmp_path / "kaggle")
    dst = tmp_path / "bird_photos"
    counts = import_kaggle(tmp_path / "kaggle", dst, verbose=False)
    assert counts == expected == {"Bananaquit": 8, "Black Skimmer": 8, "Black Throated Bushtiti": 8, "Cockatoo": 8}
    assert sorted(p.name for p in dst.iterdir()) == sorted(COURSE_CLASSES)
    for folder, name in KAGGLE_FOLDERS.items():
        copied = sorted(p.read_bytes() for p in (dst / name).iterdir())
        originals = sorted(p.read_bytes() for p in (tmp_path / "kaggle").glob(f"*/{folder}/*.jpg"))
        assert copied == originals
    assert scan_bird_folder(dst).counts == expected


def test_import_kaggle_never_overwrites_and_can_run_twice(tmp_path):
    _fake_kaggle(tmp_path / "kaggle")
    dst = tmp_path / "bird_photos"
    (dst / "Cockatoo").mkdir(parents=True)
    (dst / "Cockatoo" / "train_1.jpg").write_bytes(b"the learner's own file")
    import_kaggle(tmp_path / "kaggle", dst, verbose=False)
    import_kaggle(tmp_path / "kaggle", dst, verbose=False)  # again: nothing doubles
    assert (dst / "Cockatoo" / "train_1.jpg").read_bytes() == b"the learner's own file"
    assert len(list((dst / "Cockatoo").iterdir())) == 8 + 1
    assert len(list((dst / "Bananaquit").iterdir())) == 8


def test_import_kaggle_accepts_a_folder_of_class_folders(tmp_path):
    rng = random.Random(3)
    for folder in list(KAGGLE_FOLDERS) + ["ROSE BREASTED COCKATOO"]:
        _write_tiny_jpeg(tmp_path / "flat" / folder / "a.jpg", rng)
    counts = import_kaggle(tmp_path / "flat", tmp_path / "out", verbose=False)
    assert counts == {name: 1 for name in COURSE_CLASSES}


def test_import_kaggle_finds_the_download_one_folder_down(tmp_path):
    expected = _fake_kaggle(tmp_path / "archive" / "birds 525 species")
    assert import_kaggle(tmp_path / "archive", tmp_path / "out", verbose=False) == expected


def test_import_kaggle_rejects_a_folder_that_is_not_the_kaggle_set(tmp_path):
    _write_tiny_jpeg(tmp_path / "holiday" / "beach.jpg", random.Random(0))
    with pytest.raises(BirdDataError, match="BIRDS 525 SPECIES"):
        import_kaggle(tmp_path / "holiday", tmp_path / "out", verbose=False)
    with pytest.raises(BirdDataError):
        import_kaggle(tmp_path / "absent", tmp_path / "out", verbose=False)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# The real photos (20-photo sample, read in place) and choosing the data
# --------------------------------------------------------------------------------------------


def test_real_photo_sample_loads_with_the_right_labels(birds_sample):
    scan = scan_bird_folder(birds_sample)
    assert scan.counts == {name: 5 for name in COURSE_CLASSES} and scan.skipped == []
    for path, label in scan.samples:
        assert path.parent.name == COURSE_CLASSES[label]
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (224, 224))
    train_loader, val_loader, _ = load_birds(birds_sample, image_size=224, batch_size=4)
    assert (len(train_loader.dataset), len(val_loader.dataset)) == (16, 4)
    images, labels = next(iter(val_loader))
    assert images.shape == (4, 3, 224, 224)
    assert labels.tolist() == [label for _, label in val_loader.dataset.samples[:4]]


def test_find_bird_data_uses_real_photos_when_they_are_there(birds_sample, monkeypatch, capsys):
    monkeypatch.setenv(config.DATA_ENV, str(birds_sample))
    root, is_standin = data.find_bird_data()
    assert (root, is_standin) == (birds_sample, False)
    assert "Using real photos" in capsys.readouterr().out


def test_find_bird_data_reports_a_broken_data_folder_named_in_the_environment(tmp_path, monkeypatch):
    (tmp_path / "Bananaquit").mkdir()
    monkeypatch.setenv(config.DATA_ENV, str(tmp_path))
    with pytest.raises(BirdDataError, match="Black Skimmer"):
        data.find_bird_data()


def test_import_kaggle_never_copies_a_photo_already_there_under_another_name(tmp_path, capsys):
    expected = _fake_kaggle(tmp_path / "kaggle")
    kaggle = tmp_path / "kaggle"
    # the download repeats a photo across splits, and the learner already has one under their own name
    shutil.copy(kaggle / "train" / "COCKATOO" / "1.jpg", kaggle / "test" / "COCKATOO" / "2.jpg")
    dst = tmp_path / "bird_photos"
    (dst / "Bananaquit").mkdir(parents=True)
    shutil.copy(kaggle / "valid" / "BANANAQUIT" / "2.jpg", dst / "Bananaquit" / "my_bananaquit.jpg")
    counts = import_kaggle(kaggle, dst)
    on_disk = {
        name: sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in (dst / name).iterdir())
        for name in COURSE_CLASSES
    }
    assert all(len(set(digests)) == len(digests) for digests in on_disk.values())  # no duplicate bytes
    assert counts == {name: len(digests) for name, digests in on_disk.items()}  # counts are the folder's
    assert counts == {**expected, "Cockatoo": expected["Cockatoo"] - 1}  # Bananaquit: 7 copied + the learner's
    printed = capsys.readouterr().out
    assert "2 skipped as already there" in printed and "Cockatoo: 7" in printed
    assert import_kaggle(kaggle, dst, verbose=False) == counts  # a second import adds nothing


def test_classes_without_a_validation_or_training_image_are_named_in_a_warning(tmp_path):
    _small_folder(tmp_path, per_class=1)
    with pytest.warns(BirdDataWarning) as warned:
        train_loader, val_loader, _ = load_birds(tmp_path, image_size=32, batch_size=2)
    messages = " ".join(str(w.message) for w in warned)
    no_val = [CLASS_NAMES[label] for label in range(4) if label not in val_loader.dataset.targets]
    no_train = [CLASS_NAMES[label] for label in range(4) if label not in train_loader.dataset.targets]
    assert len(no_val) == 3 and len(no_train) == 1
    assert f"No validation image for {', '.join(no_val)}" in messages
    assert f"No training image for {no_train[0]}" in messages
