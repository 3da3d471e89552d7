"""The offline stand-in: same classes, counts and image size as the photos; deterministic; clearly
marked; learnable from shapes but not from colour alone."""

import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resnet_course import config, data, evaluation, standin
from resnet_course.data import load_birds, scan_bird_folder, split_samples
from resnet_course.device import torch_threads
from resnet_course.images import eval_transform, load_rgb

COURSE_CLASSES = ("Bananaquit", "Black Skimmer", "Black Throated Bushtiti", "Cockatoo")
COURSE_COUNTS = (166, 122, 111, 166)


@pytest.fixture(scope="session")
def standin_root(tmp_path_factory) -> Path:
    """The full 565-image stand-in, generated once per test session."""
    root = tmp_path_factory.mktemp("standin") / "standin_birds"
    start = time.perf_counter()
    data.make_standin_birds(root, seed=0)
    print(f"\nstand-in generated in {time.perf_counter() - start:.1f} s")
    return root


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_standin_has_the_course_classes_counts_and_split(standin_root):
    folders = sorted(p.name for p in standin_root.iterdir() if p.is_dir())
    assert folders == sorted(COURSE_CLASSES)
    scan = scan_bird_folder(standin_root)
    assert tuple(scan.counts.values()) == COURSE_COUNTS and scan.skipped == []
    train_loader, val_loader, names = load_birds(standin_root, image_size=64)
    assert names == list(COURSE_CLASSES)
    assert (len(train_loader.dataset), len(val_loader.dataset)) == (452, 113)


def test_standin_images_are_224_rgb_jpegs(standin_root):
    for path in standin_root.glob("*/*"):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (224, 224)), path


def test_standin_says_it_is_not_real_photos(standin_root):
    marker = (standin_root / "STANDIN.txt").read_text()
    assert "stand-in" in marker.lower() and "not real photos" in marker
    assert data.is_standin_folder(standin_root)


def test_real_photos_are_not_taken_for_the_standin(birds_sample):
    assert not data.is_standin_folder(birds_sample)


def test_standin_is_deterministic(standin_root, tmp_path):
    # redraw a few images into another folder: same seed, same bytes; another seed, other pixels
    for class_index, name in enumerate(COURSE_CLASSES):
        for number in (0, 57, 110):
            again = standin.draw_standin_jpeg(class_index, number, seed=0)
            assert again == (standin_root / name / f"{name}_{number:03d}.jpg").read_bytes()
            other = standin.draw_standin_jpeg(class_index, number, seed=1)
            assert other != again


def test_standin_images_differ_from_each_other(standin_root):
    digests = {_digest(p) for p in standin_root.glob("*/*.jpg")}
    assert len(digests) == sum(COURSE_COUNTS)
    pixels = np.stack([np.asarray(Image.open(p), np.float32) for p in sorted(standin_root.glob("Cockatoo/*.jpg"))[:20]])
    assert pixels.std(axis=0).mean() > 20  # backgrounds, poses and lighting vary


def test_incomplete_standin_is_detected(standin_root, tmp_path):
    copy = tmp_path / "standin_birds"
    shutil.copytree(standin_root, copy)
    assert standin.standin_is_complete(copy)
    (copy / "Cockatoo" / "Cockatoo_007.jpg").unlink()
    assert not standin.standin_is_complete(copy)
    shutil.copytree(standin_root, tmp_path / "other")
    (tmp_path / "other" / "Cockatoo" / "extra.jpg").write_bytes(b"")
    assert not standin.standin_is_complete(tmp_path / "other")
    shutil.copytree(standin_root, tmp_path / "unmarked")
    (tmp_path / "unmarked" / "STANDIN.txt").unlink()
    assert not standin.standin_is_complete(tmp_path / "unmarked")


@pytest.fixture
def no_real_photos(tmp_path, monkeypatch):
    """Point the course at an empty place for photos and a fresh place for the stand-in."""
    monkeypatch.delenv(config.DATA_ENV, raising=False)
    monkeypatch.setattr(config, "DEFAULT_DATA_DIR", tmp_path / "bird_photos")
    monkeypatch.setattr(config, "STANDIN_DIR", tmp_path / "standin_birds")
    return tmp_path / "standin_birds"


def test_find_bird_data_uses_a_complete_standin_as_it_is(standin_root, no_real_photos, capsys):
    shutil.copytree(standin_root, no_real_photos)
    before = {p: p.stat().st_mtime_ns for p in no_real_photos.glob("*/*.jpg")}
    root, is_standin = data.find_bird_data()
    assert (root, is_standin) == (no_real_photos, True)
    assert {p: p.stat().st_mtime_ns for p in no_real_photos.glob("*/*.jpg")} == before
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "stand-in" in out[0] and "not real photos" in out[0] and "565 images" in out[0]


@pytest.mark.slow
def test_find_bird_data_redraws_an_incomplete_standin(standin_root, no_real_photos):
    shutil.copytree(standin_root, no_real_photos)
    shutil.rmtree(no_real_photos / "Black Skimmer")
    (no_real_photos / "Cockatoo" / "Cockatoo_000.jpg").write_bytes(b"")
    root, is_standin = data.find_bird_data(verbose=False)
    assert is_standin and standin.standin_is_complete(root)
    for name in ("Black Skimmer", "Cockatoo"):
        for path in (standin_root / name).iterdir():
            assert _digest(path) == _digest(root / name / path.name)
    assert not list(no_real_photos.parent.glob(".standin_birds.tmp*"))  # no temporary left behind


def test_find_bird_data_prefers_real_photos_and_warns_about_a_broken_photo_folder(
    standin_root, no_real_photos, birds_sample, monkeypatch
):
    shutil.copytree(standin_root, no_real_photos)
    photos = no_real_photos.parent / "bird_photos"
    (photos / "Bananaquit").mkdir(parents=True)  # started, but not finished
    with pytest.warns(data.BirdDataWarning, match="Black Skimmer"):
        assert data.find_bird_data(verbose=False) == (no_real_photos, True)
    monkeypatch.setattr(config, "DEFAULT_DATA_DIR", birds_sample)
    assert data.find_bird_data(verbose=False) == (birds_sample, False)


# --------------------------------------------------------------------------------------------
# Learnable, but not from colour alone
# --------------------------------------------------------------------------------------------


def test_mean_colour_alone_classifies_the_standin_poorly(standin_root):
    accuracies = evaluation.mean_colour_baseline(standin_root)
    print(f"\nmean-colour baselines on the 113 validation images: {accuracies}")
    # chance is 29 % (always guessing the biggest class); a small ResNet reaches ~80 % (below)
    assert max(accuracies.values()) < 0.5


def _tensors(samples, size):
    transform = eval_transform(size)
    images = torch.stack([transform(load_rgb(path)) for path, _ in samples])
    return images, torch.tensor([label for _, label in samples])


@pytest.mark.slow
def test_a_small_resnet_learns_what_mean_colour_cannot(standin_root):
    """ResNet-8 (CIFAR-style, He et al. 2015 Sec. 4.2) at 32 px for 12 epochs on the 452 training
    images beats every mean-colour classifier by a wide margin on the 113 validation images."""
    from resnet_course.models import cifar_resnet

    baseline = max(evaluation.mean_colour_baseline(standin_root).values())
    train, val = split_samples(scan_bird_folder(standin_root), val_split=0.2, seed=123)
    size, pad = 32, 4
    x_train, y_train = _tensors(train, size + pad)
    x_val, y_val = _tensors(val, size + pad)
    x_val = x_val[..., pad // 2 : pad // 2 + size, pad // 2 : pad // 2 + size]

    with torch_threads(1):  # small convolutions run faster on one thread than on two busy ones
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        model = cifar_resnet(8, num_classes=4)
        epochs, batch_size = 12, 32
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=3e-3, total_steps=epochs * -(-len(x_train) // batch_size)
        )
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(x_train), generator=generator)
            for start in range(0, len(x_train), batch_size):
                batch = order[start : start + batch_size]
                dx, dy = torch.randint(0, pad + 1, (2,), generator=generator).tolist()
                images = x_train[batch][..., dy : dy + size, dx : dx + size]  # random crop
                if torch.rand(1, generator=generator) < 0.5:
                    images = images.flip(-1)  # and flip
                loss = F.cross_entropy(model(images), y_train[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
    print(f"\nResNet-8 at 32 px: {accuracy:.1%} on the validation images; best mean-colour classifier: {baseline:.1%}")
    assert accuracy > baseline + 0.2


def test_make_standin_never_writes_into_a_folder_of_real_photos(tmp_path):
    photos = tmp_path / "bird_photos"
    (photos / "Cockatoo").mkdir(parents=True)
    (photos / "Cockatoo" / "mine.jpg").write_bytes(b"a learner's photo")
    with pytest.raises(data.BirdDataError, match="not a generated stand-in"):
        data.make_standin_birds(photos)
    assert [p.name for p in photos.rglob("*")] == ["Cockatoo", "mine.jpg"]


def test_make_standin_leaves_a_complete_standin_as_it_is(standin_root, tmp_path, capsys, monkeypatch):
    from resnet_course.cli import main

    copy = tmp_path / "standin_birds"
    shutil.copytree(standin_root, copy)
    before = {p: p.stat().st_mtime_ns for p in copy.glob("*/*.jpg")}
    drawn = []
    real_draw = standin.draw_standin_jpeg
    monkeypatch.setattr(standin, "draw_standin_jpeg", lambda *args, **kw: drawn.append(args) or real_draw(*args, **kw))
    assert main(["make-standin", "--out", str(copy)]) == 0
    assert drawn == []  # not one image drawn (redrawing the 565 takes ~9 s on one core)
    assert "nothing to draw" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in copy.glob("*/*.jpg")} == before


@pytest.mark.slow
def test_a_photo_put_into_the_standin_survives_a_redraw(standin_root, tmp_path, no_real_photos):
    mine = tmp_path / "my_standin"
    for root in (mine, no_real_photos):
        shutil.copytree(standin_root, root, dirs_exist_ok=True)
        (root / "Cockatoo" / "Cockatoo_007.jpg").unlink()  # incomplete: would be redrawn
        (root / "Cockatoo" / "my_cockatoo.jpg").write_bytes(b"a learner's photo")
    with pytest.raises(data.BirdDataError, match="not its drawings \\(Cockatoo/my_cockatoo.jpg\\)"):
        data.make_standin_birds(mine)
    with pytest.raises(data.BirdDataError, match="my_cockatoo.jpg"):
        data.find_bird_data(verbose=False)  # generates the stand-in in config.STANDIN_DIR when needed
    for root in (mine, no_real_photos):
        assert (root / "Cockatoo" / "my_cockatoo.jpg").read_bytes() == b"a learner's photo"
        assert len(list((root / "Cockatoo").iterdir())) == 166


def test_own_drawings_are_known_by_their_bytes_not_their_names(tmp_path):
    """A drawing cut short by an interrupted write is the stand-in's own (it may be redrawn); bytes
    that are not the drawing its name and the marker's seed say (a photo, another seed's drawing,
    another number's) are foreign and survive."""
    root = tmp_path / "standin_birds"
    (root / "Cockatoo").mkdir(parents=True)
    (root / standin.STANDIN_MARKER).write_text(standin._marker_text(0), encoding="utf-8")
    drawing = standin.draw_standin_jpeg(3, 0, seed=0)
    (root / "Cockatoo" / "Cockatoo_000.jpg").write_bytes(drawing[: len(drawing) // 2])  # cut short
    (root / "Cockatoo" / "Cockatoo_001.jpg").write_bytes(standin.draw_standin_jpeg(3, 1, seed=1))  # another seed
    (root / "Cockatoo" / "Cockatoo_002.jpg").write_bytes(drawing)  # the right bytes under the wrong number
    assert standin.foreign_files(root) == [root / "Cockatoo" / f"Cockatoo_00{i}.jpg" for i in (1, 2)]
    (root / standin.STANDIN_MARKER).write_text(standin._marker_text(0) + "edited by hand\n", encoding="utf-8")
    assert len(standin.foreign_files(root)) == 3  # a marker this version did not write vouches for nothing
