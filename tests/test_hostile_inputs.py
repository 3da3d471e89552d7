"""Hostile inputs, as a table: every mistake a hurried student or an attacker makes with image files,
class folders, --out folders, numbers on the command line and environment variables ends in one
message naming it and exit code 2, never a traceback, and every file that existed before is unchanged.

One test per class of mistake, each run through the real command line (``cli.main`` in this process;
a few cases in a fresh ``python -m resnet_course``, where the terminal's encoding is the real one).
"""

import contextlib
import errno
import hashlib
import io
import os
import shutil
import stat
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import make_bird_folder, tiny_train_args
from resnet_course import data, standin
from resnet_course.cli import main
from resnet_course.images import check_image

NOT_UTF8 = os.fsdecode(b"bad\xff.jpg")  # a file name whose bytes are not UTF-8 (Python keeps a surrogate)


# ------------------------------------------------------------------------------------------
# Helpers: run the command line, fingerprint a folder tree, make hostile files
# ------------------------------------------------------------------------------------------


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """``python -m resnet_course ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_module(*args, env=None, timeout=120):
    """``python -m resnet_course ARGS`` in a fresh process, with the terminal's real encoding."""
    environment = {**os.environ, "RESNET_COURSE_FAST": "1", "LC_ALL": "C.UTF-8", **(env or {})}
    environment.pop("PYTHONIOENCODING", None)
    return subprocess.run(
        [sys.executable, "-m", "resnet_course", *map(os.fsencode, map(str, args))],
        capture_output=True,
        timeout=timeout,
        env=environment,
    )


def tree_state(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed, pipes not opened) -> what it is and holds."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            key = os.fsencode(path.relative_to(root)).hex()
            if stat.S_ISLNK(info.st_mode):
                state[key] = "link " + os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                state[key] = "folder" if stat.S_ISDIR(info.st_mode) else "special"
    return state


def assert_one_refusal(code: int, err: str, *says: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "Warning" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for words in says:
        assert words in lines[0], (words, err)


def jpeg_bytes(colour=(200, 30, 30), size=(40, 36)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header that claims ``width`` x ``height`` pixels, with almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def write(path: Path, content: bytes) -> None:
    path.write_bytes(content)


#: name -> (how to make it at a path, what the message says about it). Each is named x.jpg by the tests.
HOSTILE_FILES = {
    "decompression bomb (400 megapixels)": (
        lambda p: write(p, png_claiming(20_000, 20_000)),
        "too large to open safely (400 megapixels)",
    ),
    "bomb header in the warning zone": (lambda p: write(p, png_claiming(10_000, 10_000)), "truncated"),
    "truncated jpeg": (lambda p: write(p, jpeg_bytes()[:300]), "truncated"),
    "zero bytes": (lambda p: write(p, b""), "empty file (0 bytes)"),
    "text named .jpg": (lambda p: write(p, b"not a photo\n"), "not an image"),
    "ppm with a bad maxval (ValueError)": (lambda p: write(p, b"P6\n17 13\n70000\n" + b"x" * 100), "maxval"),
    "a folder named x.jpg": (lambda p: p.mkdir(), "a folder, not an image file"),
    "a pipe named x.jpg": (lambda p: os.mkfifo(p), "not a regular file"),
    "a link that leads nowhere": (lambda p: os.symlink(p.parent / "gone.jpg", p), "gone.jpg, which does not exist"),
    "a link to itself": (lambda p: os.symlink(p.name, p), "too many levels of symbolic links"),
}


@pytest.fixture(scope="module")
def tiny_birds(tmp_path_factory) -> Path:
    """6 small JPEGs per course class, each class its own colour."""
    return make_bird_folder(tmp_path_factory.mktemp("tiny_birds"), per_class=6, shade_step=4)


@pytest.fixture(scope="module")
def checkpoint(tiny_birds, tmp_path_factory, one_torch_thread) -> Path:
    """best.pt of one epoch of resnet18 at 32 px on ``tiny_birds``."""
    out = tmp_path_factory.mktemp("run")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(tiny_train_args(tiny_birds, out)) == 0
    return out / "best.pt"


@pytest.fixture
def birds_copy(tiny_birds, tmp_path) -> Path:
    copy = tmp_path / "birds"
    shutil.copytree(tiny_birds, copy)
    return copy


# ------------------------------------------------------------------------------------------
# 1. Image files that cannot be read: predict names each one, exit 2; a class folder skips it by name
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", HOSTILE_FILES)
def test_predict_names_an_unreadable_image_and_exits_2(case, checkpoint, tmp_path, capsys):
    make, says = HOSTILE_FILES[case]
    make(tmp_path / "x.jpg")
    before = tree_state(tmp_path)
    code, out, err = run_cli(["predict", "--checkpoint", checkpoint, tmp_path / "x.jpg"], capsys)
    assert_one_refusal(code, err, f"cannot read {tmp_path / 'x.jpg'}: ", says)
    assert out == "" and tree_state(tmp_path) == before


@pytest.mark.parametrize("case", [case for case in HOSTILE_FILES if case != "a folder named x.jpg"])  # a subfolder
def test_a_class_folder_skips_an_unreadable_image_by_name_and_uses_the_others(case, birds_copy):
    make, says = HOSTILE_FILES[case]
    make(birds_copy / "Cockatoo" / "x.jpg")
    before = tree_state(birds_copy)
    with pytest.warns(data.BirdDataWarning) as warned:
        train_loader, val_loader, _ = data.load_birds(birds_copy, image_size=16)
    assert len(train_loader.dataset) + len(val_loader.dataset) == 24
    message = str(warned[0].message)
    assert "Skipped 1 unreadable image" in message and "Cockatoo/x.jpg: " in message and says in message
    assert tree_state(birds_copy) == before


@pytest.mark.parametrize(
    "raised",
    [
        Image.DecompressionBombError("Image size (400000000 pixels) exceeds limit"),
        ValueError("bad"),
        SyntaxError("broken PNG file"),
        struct.error("unpack"),
        EOFError(),
        IndexError("tile"),
        TypeError("mode"),
        ZeroDivisionError(),
        KeyError("tag"),
        MemoryError(),
        OSError("decoder error -2"),
        PermissionError(errno.EACCES, "Permission denied"),
    ],
)
@pytest.mark.parametrize("when", ["opening", "decoding"])
def test_every_exception_pillow_raises_is_one_message(raised, when, checkpoint, tmp_path, capsys, monkeypatch):
    """Pillow raises many types besides OSError while opening or decoding a damaged file."""

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(Image, "open", fail) if when == "opening" else monkeypatch.setattr(
        ImageFile.ImageFile, "load", fail
    )
    photo = tmp_path / "photo.png"
    Image.new("RGB", (20, 20), "red").save(photo)
    code, out, err = run_cli(["predict", "--checkpoint", checkpoint, photo], capsys)
    assert_one_refusal(code, err, f"cannot read {photo}: ")
    assert out == ""


def test_pillows_decompression_bomb_limits_are_one_refusal_and_no_warning(checkpoint, tmp_path, capsys, monkeypatch):
    """Above Pillow's MAX_IMAGE_PIXELS it warns, above twice that it refuses. The course opens the
    first without the raw warning and refuses the second in its own words."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (40, 40), "red").save(tmp_path / "warned.png")  # 1600 pixels: Pillow only warns
    Image.new("RGB", (50, 50), "red").save(tmp_path / "refused.png")  # 2500 pixels: Pillow refuses
    code, out, err = run_cli(["predict", "--checkpoint", checkpoint, tmp_path / "warned.png"], capsys)
    assert code == 0 and "warned.png: " in out and err == ""
    code, out, err = run_cli(["predict", "--checkpoint", checkpoint, tmp_path / "refused.png"], capsys)
    assert_one_refusal(code, err, "refused.png: too large to open safely", "over 0 megapixels")


def test_a_class_folder_reads_an_image_in_pillows_warning_zone_without_its_warning(birds_copy, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    Image.new("RGB", (50, 50), "red").save(birds_copy / "Cockatoo" / "large.png")  # 2500 pixels: a warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_loader, val_loader, _ = data.load_birds(birds_copy, image_size=16)
        batches = [labels for loader in (train_loader, val_loader) for _, labels in loader]  # every image decoded
    assert sum(len(labels) for labels in batches) == 25
    assert len(train_loader.dataset) + len(val_loader.dataset) == 25
    assert [w for w in caught if not issubclass(w.category, data.BirdDataWarning)] == []


# ------------------------------------------------------------------------------------------
# 2. Names: not UTF-8, control characters, links; shown escaped, never a crash
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_in_a_fresh_process_a_bomb_is_one_line_and_a_name_that_is_not_utf8_is_printed_escaped(checkpoint, tmp_path):
    """The real terminal: stdout is strict UTF-8 there, so an unescaped name would crash the print."""
    (tmp_path / "bomb.png").write_bytes(png_claiming(60_000, 60_000))
    (tmp_path / NOT_UTF8).write_bytes(jpeg_bytes())
    finished = run_module("predict", "--checkpoint", checkpoint, tmp_path / "bomb.png", tmp_path / NOT_UTF8)
    assert_one_refusal(
        finished.returncode, finished.stderr.decode(), "bomb.png: too large to open safely (3,600 megapixels)"
    )
    lines = finished.stdout.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(tmp_path / "bad\\xff.jpg") + ": ")


@pytest.mark.parametrize("content", [jpeg_bytes(), b"broken"], ids=["readable", "unreadable"])
@pytest.mark.slow
def test_a_class_folder_with_a_name_that_is_not_utf8_stays_usable(content, birds_copy, tmp_path, capsys):
    (birds_copy / "Cockatoo" / NOT_UTF8).write_bytes(content)
    before = tree_state(birds_copy)
    scan = data.scan_bird_folder(birds_copy)
    assert scan.counts["Cockatoo"] == (7 if content != b"broken" else 6)
    assert "bad\\xff.jpg" in scan.report() or content != b"broken"
    code, out, err = run_cli(tiny_train_args(birds_copy, tmp_path / "run"), capsys)
    assert code == 0 and "Traceback" not in err, err
    assert ("Cockatoo/bad\\xff.jpg: not an image" in err) == (content == b"broken")
    assert tree_state(birds_copy) == before


def test_a_name_with_a_newline_or_terminal_escape_is_shown_on_one_line(checkpoint, tmp_path, capsys):
    photo = tmp_path / "two\nlines\x1b[31m.jpg"
    photo.write_bytes(b"")
    code, _, err = run_cli(["predict", "--checkpoint", checkpoint, photo], capsys)
    assert_one_refusal(code, err, "two\\nlines\\x1b[31m.jpg: empty file")


@pytest.mark.parametrize("target", ["../Bananaquit", ".."], ids=["another class", "its parent (a loop if followed)"])
def test_a_linked_folder_is_named_not_followed(target, birds_copy):
    os.symlink(target, birds_copy / "Cockatoo" / "more")
    scan = data.scan_bird_folder(birds_copy)
    assert [(path.name, reason) for path, reason in scan.skipped] == [("more", data.LINKED_FOLDER)]
    assert scan.counts["Cockatoo"] == 6


@pytest.mark.parametrize("case", ["a file", "a link that leads nowhere", "a link to itself"])
def test_a_class_folder_that_is_not_a_folder_is_named(case, birds_copy, tmp_path, capsys):
    shutil.rmtree(birds_copy / "Cockatoo")
    if case == "a file":
        (birds_copy / "Cockatoo").write_text("notes")
    else:
        os.symlink(birds_copy / "gone" if case == "a link that leads nowhere" else "Cockatoo", birds_copy / "Cockatoo")
    before = tree_state(birds_copy)
    code, _, err = run_cli(["train", "--data", birds_copy, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "Traceback" not in err
    says = {
        "a file": "Cockatoo: a file, not a folder",
        "a link that leads nowhere": "gone, which does not exist",
        "a link to itself": "Cockatoo: too many levels of symbolic links",
    }[case]
    assert "missing the class folder(s) Cockatoo (" in err and says in err
    assert tree_state(birds_copy) == before and not (tmp_path / "run").exists()


def test_a_class_folder_of_nothing_but_hostile_files_is_one_message_naming_each(birds_copy, tmp_path, capsys):
    for path in (birds_copy / "Cockatoo").iterdir():
        path.unlink()
    for case in ("decompression bomb (400 megapixels)", "a pipe named x.jpg", "a link that leads nowhere"):
        HOSTILE_FILES[case][0](birds_copy / "Cockatoo" / f"{case}.jpg")
    before = tree_state(birds_copy)
    code, _, err = run_cli(["train", "--data", birds_copy, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "Traceback" not in err and err.startswith("error: No readable images in the class folder")
    for case in ("decompression bomb (400 megapixels)", "a pipe named x.jpg", "a link that leads nowhere"):
        assert f"Cockatoo/{case}.jpg: " in err and HOSTILE_FILES[case][1] in err
    assert tree_state(birds_copy) == before and not (tmp_path / "run").exists()


def test_import_kaggle_names_what_is_not_a_readable_file_and_copies_the_rest(kaggle, tmp_path, capsys):
    os.mkfifo(kaggle / "train" / "COCKATOO" / "pipe.jpg")  # reading it would wait forever
    os.symlink(kaggle / "gone.jpg", kaggle / "train" / "COCKATOO" / "gone.jpg")
    before = tree_state(kaggle)
    code, out, err = run_cli(["import-kaggle", kaggle, "--out", tmp_path / "photos"], capsys)
    assert code == 0 and err == ""
    assert "16 photos copied" in out and "2 not copied as they are not readable files: " in out
    assert "train/COCKATOO/gone.jpg (a link to" in out and "train/COCKATOO/pipe.jpg (not a regular file" in out
    assert tree_state(kaggle) == before


@pytest.mark.parametrize(
    "target, says",
    [
        (".", "the photo folder itself"),
        ("..", "a folder above it"),
        ("Bananaquit", "overlap"),
        ("Bananaquit/inner", "overlap"),
    ],
)
def test_a_class_folder_linked_to_another_or_above_is_refused_not_mislabelled(
    target, says, birds_copy, tmp_path, capsys
):
    shutil.rmtree(birds_copy / "Cockatoo")
    (birds_copy / "Bananaquit" / "inner").mkdir()
    os.symlink(target, birds_copy / "Cockatoo")
    before = tree_state(birds_copy)
    code, _, err = run_cli(["train", "--data", birds_copy, "--out", tmp_path / "run"], capsys)
    assert_one_refusal(code, err, says)
    assert tree_state(birds_copy) == before and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------
# 3. Unusual but valid images are read, without a warning
# ------------------------------------------------------------------------------------------


def save_as(mode_or_array, file_name, **options):
    def make(folder: Path) -> Path:
        image = (
            Image.fromarray(mode_or_array)
            if isinstance(mode_or_array, np.ndarray)
            else Image.new(mode_or_array, (30, 20))
        )
        if image.mode == "P":
            image.info["transparency"] = b"\x00" * 256  # transparency expressed in bytes: Pillow warns
        image.save(folder / file_name, **options)
        return folder / file_name

    return make


VALID_BUT_UNUSUAL = {
    "PNG with alpha": save_as("RGBA", "alpha.png"),
    "16-bit PNG": save_as(np.full((20, 30), 60000, np.uint16), "deep.png"),
    "CMYK JPEG": save_as("CMYK", "cmyk.jpg"),
    "float TIFF with NaN and inf": save_as(np.array([[np.nan, np.inf, -np.inf, 0.5]], np.float32), "float.tif"),
    "palette with transparency in bytes": save_as("P", "palette.png"),
    "one pixel": save_as(np.zeros((1, 1, 3), np.uint8), "dot.bmp"),
}


@pytest.mark.parametrize("case", VALID_BUT_UNUSUAL)
def test_unusual_but_valid_images_are_classified_without_a_warning(case, checkpoint, tmp_path, capsys):
    photo = VALID_BUT_UNUSUAL[case](tmp_path)
    code, out, err = run_cli(["predict", "--checkpoint", checkpoint, photo], capsys)
    assert code == 0 and err == "" and out.startswith(f"{photo}: ")


def test_predict_given_a_folder_or_no_image_is_one_message(checkpoint, tmp_path, capsys):
    code, out, err = run_cli(["predict", "--checkpoint", checkpoint, tmp_path], capsys)
    assert_one_refusal(code, err, f"cannot read {tmp_path}: a folder, not an image file")
    code, out, err = run_cli(["predict", "--checkpoint", checkpoint], capsys)
    assert_one_refusal(code, err, "the following arguments are required: IMAGE")


# ------------------------------------------------------------------------------------------
# 4. --out folders: inside the source, a file, under a file, read-only, a full disk
# ------------------------------------------------------------------------------------------


@pytest.fixture
def kaggle(tmp_path) -> Path:
    """A small Kaggle-style download: train/ and valid/ with the four classes and another species."""
    src = tmp_path / "birds-525"
    for shade, split in enumerate(("train", "valid")):
        for index, folder in enumerate(
            ("BANANAQUIT", "BLACK SKIMMER", "BLACK THROATED BUSHTIT", "COCKATOO", "GANG GANG COCKATOO")
        ):
            (src / split / folder).mkdir(parents=True)
            for number in range(2):
                colour = (40 * index, 100 * shade, 120 * number)
                (src / split / folder / f"{number}.jpg").write_bytes(jpeg_bytes(colour))
    return src


def a_file(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_text("mine")
    return tmp_path / "notes.txt"


BAD_OUT_FOLDERS = {  # name -> (--out given the temporary folder and the source, what the message says)
    "the source itself": (lambda tmp, src: src, "is the same folder as the source"),
    "a class folder of the source": (lambda tmp, src: src / "train" / "COCKATOO", "lies inside the source"),
    "a folder holding the source": (lambda tmp, src: tmp, "holds the source"),
    "a file": (lambda tmp, src: a_file(tmp), "is a file, not a folder"),
    "under a file": (lambda tmp, src: a_file(tmp) / "birds", "is a file, not a folder"),
    "a place nobody can write": (lambda tmp, src: Path("/proc/resnet_course_birds"), "cannot write into"),
}


@pytest.mark.parametrize("case", BAD_OUT_FOLDERS)
def test_import_kaggle_refuses_a_bad_out_folder_before_copying(case, kaggle, tmp_path, capsys):
    out, says = BAD_OUT_FOLDERS[case]
    out = out(tmp_path, kaggle)
    if str(out).startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("needs /proc, a folder nobody can write")
    before = tree_state(tmp_path)
    code, stdout, err = run_cli(["import-kaggle", kaggle, "--out", out], capsys)
    assert_one_refusal(code, err, says)
    assert stdout == "" and tree_state(tmp_path) == before


@pytest.mark.parametrize("case", ["a file", "under a file", "a place nobody can write", "a folder of photos"])
def test_make_standin_refuses_a_bad_out_folder(case, tmp_path, capsys):
    if case == "a folder of photos":
        out, says = tmp_path / "photos", "is not empty and is not a generated stand-in"
        (out / "Cockatoo").mkdir(parents=True)
        (out / "Cockatoo" / "mine.jpg").write_bytes(jpeg_bytes())
    else:
        out, says = BAD_OUT_FOLDERS[case][0](tmp_path, None), BAD_OUT_FOLDERS[case][1]
    if str(out).startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("needs /proc, a folder nobody can write")
    before = tree_state(tmp_path)
    code, _, err = run_cli(["make-standin", "--out", out], capsys)
    assert_one_refusal(code, err, says)
    assert tree_state(tmp_path) == before


def test_make_standin_never_overwrites_a_photo_named_like_a_drawing(tmp_path, capsys):
    """An incomplete stand-in (its marker, one drawing) with a learner's photo saved as Cockatoo_000.jpg."""
    out = tmp_path / "standin_birds"
    (out / "Cockatoo").mkdir(parents=True)
    (out / standin.STANDIN_MARKER).write_text(standin._marker_text(0), encoding="utf-8")
    (out / "Cockatoo" / "Cockatoo_001.jpg").write_bytes(standin.draw_standin_jpeg(3, 1, seed=0))
    (out / "Cockatoo" / "Cockatoo_000.jpg").write_bytes(jpeg_bytes())  # the photo
    before = tree_state(tmp_path)
    code, _, err = run_cli(["make-standin", "--out", out], capsys)
    assert_one_refusal(code, err, "holds 1 file(s) that are not its drawings (Cockatoo/Cockatoo_000.jpg)")
    assert tree_state(tmp_path) == before
    assert standin.foreign_files(out) == [out / "Cockatoo" / "Cockatoo_000.jpg"]  # its own drawing is known


def fail_when_full(monkeypatch, module, name, after: int):
    """Make ``module.name`` (a writer) fail like a full disk after ``after`` calls, leaving half a file."""
    real, calls = getattr(module, name), []

    def write_then_fill_the_disk(*args, **kwargs):
        calls.append(args)
        if len(calls) > after:
            with open(args[-1] if module is shutil else args[0], "wb") as half:
                half.write(b"\xff\xd8 half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, write_then_fill_the_disk)


def test_import_kaggle_on_a_full_disk_says_so_and_leaves_no_half_photo(kaggle, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bird_photos"
    (out / "Cockatoo").mkdir(parents=True)
    (out / "Cockatoo" / "mine.jpg").write_bytes(jpeg_bytes((1, 2, 3)))
    before = tree_state(tmp_path)
    fail_when_full(monkeypatch, shutil, "copy2", after=3)
    code, _, err = run_cli(["import-kaggle", kaggle, "--out", out], capsys)
    assert_one_refusal(code, err, "no space left on device", "The 3 photo(s) copied before it are in place")
    after = tree_state(tmp_path)
    assert {key: after[key] for key in before} == before  # nothing that was there changed
    copied = [p for p in out.rglob("*") if p.is_file() and p.name != "mine.jpg"]
    assert len(copied) == 3 and all(check_image(p) is None for p in copied)  # whole photos, no temporaries


def test_make_standin_on_a_full_disk_says_so_and_leaves_only_whole_drawings(tmp_path, capsys, monkeypatch):
    out = tmp_path / "standin_birds"
    fail_when_full(monkeypatch, Path, "write_bytes", after=3)
    code, stdout, err = run_cli(["make-standin", "--out", out], capsys)
    assert_one_refusal(code, err, f"could not write the stand-in into {out}: no space left on device")
    drawings = sorted(p for p in out.rglob("*") if p.is_file() and p.name != standin.STANDIN_MARKER)
    assert [p.name for p in drawings] == ["Bananaquit_000.jpg", "Bananaquit_001.jpg", "Bananaquit_002.jpg"]
    assert all(p.read_bytes() == standin.draw_standin_jpeg(0, i) for i, p in enumerate(drawings))


# ------------------------------------------------------------------------------------------
# 5. Numbers on the command line and the environment
# ------------------------------------------------------------------------------------------

TRAIN_NUMBERS = (
    [("--epochs", v) for v in ("0", "-1", "1000000000", "1.5", "nan")]
    + [("--image-size", v) for v in ("0", "8", "100000", "-5")]
    + [("--batch-size", v) for v in ("0", "-1", "1000000")]
    + [("--lr", v) for v in ("0", "-0.1", "nan", "inf", "1e400")]
    + [("--weight-decay", v) for v in ("-0.1", "nan", "inf")]
    + [("--warmup-epochs", v) for v in ("-1", "nan", "inf")]
    + [("--label-smoothing", v) for v in ("1", "-0.1", "nan")]
    + [("--seed", v) for v in ("-1", str(2**64), "nan")]
    + [("--num-workers", v) for v in ("-1", "1000000")]
)


@pytest.mark.parametrize("option, value", TRAIN_NUMBERS)
def test_an_out_of_range_number_for_train_is_one_line(option, value, tiny_birds, tmp_path, capsys):
    code, _, err = run_cli(["train", "--data", tiny_birds, "--out", tmp_path / "run", option, value], capsys)
    assert_one_refusal(code, err, f"error: {option} must be ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "--topk", "0"],
        ["predict", "--topk", "-3"],
        ["predict", "--topk", "nan"],
        ["make-standin", "--seed", "-1"],
        ["make-standin", "--seed", "1e3"],
    ],
)
def test_an_out_of_range_number_for_predict_or_make_standin_is_one_line(argv, checkpoint, tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_bytes())
    extra = ["--checkpoint", checkpoint, photo] if argv[0] == "predict" else ["--out", tmp_path / "standin"]
    before = tree_state(tmp_path)
    code, _, err = run_cli(argv + extra, capsys)
    assert_one_refusal(code, err, f"error: {argv[1]} must be ")
    assert tree_state(tmp_path) == before


BAD_ENVIRONMENTS = {  # variable -> (value given the temporary folder, what the message says)
    "RESNET_COURSE_FAST": (lambda tmp: "maybe", "is neither on nor off"),
    "RESNET_COURSE_FP32": (lambda tmp: "2", "is neither on nor off"),
    "RESNET_COURSE_OFFLINE": (lambda tmp: "perhaps", "is neither on nor off"),
    "RESNET_COURSE_DATA": (lambda tmp: str(a_file(tmp)), "is a file; it should name a folder"),
    "RESNET_COURSE_RUNS": (lambda tmp: str(a_file(tmp) / "runs"), "lies under"),
    "TORCH_HOME": (lambda tmp: str(a_file(tmp)), "is a file; it should name a folder"),
    "KERAS_HOME": (lambda tmp: str(a_file(tmp) / "keras"), "lies under"),
    "WORLD_SIZE": (lambda tmp: "two", "is not a process count"),
    "LOCAL_RANK": (lambda tmp: "-1", "is not a process count"),
}


@pytest.mark.parametrize("variable", BAD_ENVIRONMENTS)
def test_garbage_in_an_environment_variable_is_one_line_naming_it(variable, checkpoint, tmp_path, capsys, monkeypatch):
    value, says = BAD_ENVIRONMENTS[variable]
    monkeypatch.setenv(variable, value(tmp_path))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_bytes())
    before = tree_state(tmp_path)
    code, out, err = run_cli(["predict", "--checkpoint", checkpoint, photo], capsys)
    assert_one_refusal(code, err, f"error: {variable}=", says)
    assert out == "" and tree_state(tmp_path) == before


def test_world_size_without_torchrun_is_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = run_cli(["train", "--data", tmp_path, "--out", tmp_path / "run"], capsys)
    assert_one_refusal(code, err, "WORLD_SIZE=2 asks for a distributed run", "launch it with torchrun")


def test_a_data_variable_naming_a_missing_folder_says_which_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RESNET_COURSE_DATA", str(tmp_path / "no_such_folder"))
    code, _, err = run_cli(["train", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: RESNET_COURSE_DATA names a folder the course cannot use: The bird photo folder")
    assert not (tmp_path / "run").exists()
