"""ImageNet weights, offline: look-alike files made here load exactly, wrong files fail clearly.

The references are torchvision's ResNet-50 (a state_dict saved to .pth) and Keras Applications'
ResNet50V2 (Keras 3 on the torch backend, saved with Keras' own legacy HDF5 writer, the format of
the published ``resnet50v2_weights_tf_dim_ordering_tf_kernels[_notop].h5``, in Keras 3 naming and
renamed to the published files' Keras 2 naming ``layer/kernel:0``). BatchNorm statistics and
biases are randomised first, as in a trained net, so that a wrong mapping cannot hide. Nothing
here touches the network: downloads go through ``imagenet._open_url``, patched in every test.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import urllib.error

import h5py
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

os.environ.setdefault("KERAS_BACKEND", "torch")

from resnet_course import finetune, imagenet, pretrained  # noqa: E402
from resnet_course.birds import CLASS_NAMES  # noqa: E402
from resnet_course.cli import main  # noqa: E402
from resnet_course.data import load_birds
from resnet_course.evaluation import load_checkpoint, load_model  # noqa: E402
from resnet_course.models import V1_NAMES, V2_NAMES, get_model, like_a_trained_net  # noqa: E402
from resnet_course.porting import like_a_trained_keras_net  # noqa: E402
from resnet_course.pretrained import keras_v2_module_name  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.usefixtures("one_torch_thread")]
RTOL = 1e-4


def assert_close_relative(ours, reference, rtol=RTOL):
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape
    error = np.abs(ours - reference).max() / np.abs(reference).max()
    assert error <= rtol, f"relative error {error:.2e} > {rtol}"


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Every test: an empty torch.hub / Keras cache and a network that must not be used."""

    def refuse(url, timeout):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(imagenet, "_open_url", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


# --------------------------------------------------------------------------------------------
# Look-alike files
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """(torchvision resnet50 with non-trivial BN statistics, its state_dict saved to .pth)."""
    torch.manual_seed(0)
    reference = like_a_trained_net(torchvision.models.resnet50()).eval()
    path = tmp_path_factory.mktemp("tv") / "resnet50-look-alike.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


def _as_keras2_names(src, dst):
    """A copy of a Keras 3 legacy HDF5 weights file with the published files' Keras 2 names
    (``conv1_conv/kernel:0``), laid out as Keras 2 wrote them."""
    with h5py.File(src, "r") as source, h5py.File(dst, "w") as target:
        for key, value in source.attrs.items():
            target.attrs[key] = value
        target.attrs["keras_version"] = b"2.2.4"
        target.attrs["backend"] = b"tensorflow"
        for layer in source.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            group = target.create_group(layer)
            names = [n.decode() if isinstance(n, bytes) else n for n in source[layer].attrs["weight_names"]]
            group.attrs["weight_names"] = np.array([f"{n}:0".encode() for n in names])
            for name in names:
                group.create_dataset(f"{name}:0", data=source[layer][name][()])
    return dst


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """Keras' ResNet50V2 with and without top (randomised BN and biases), saved by Keras' legacy
    HDF5 writer in both naming styles; with NHWC test images and Keras' outputs (logits for the
    top, average-pooled features for notop). Built once: Keras model building is slow."""
    keras = pytest.importorskip("keras")
    from keras.src.legacy.saving import legacy_h5_format

    folder = tmp_path_factory.mktemp("keras")
    images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype("float32")
    files = {}
    keras.utils.set_random_seed(0)
    for include_top in (True, False):
        model = keras.applications.ResNet50V2(
            weights=None, include_top=include_top, pooling="avg", classifier_activation=None, input_shape=(64, 64, 3)
        )
        like_a_trained_keras_net(model, seed=int(include_top))
        outputs = keras.ops.convert_to_numpy(model(images, training=False))
        suffix = "" if include_top else "_notop"
        keras3 = folder / f"resnet50v2_keras3{suffix}.h5"
        with h5py.File(keras3, "w") as handle:
            legacy_h5_format.save_weights_to_hdf5_group(handle, model)
        keras2 = _as_keras2_names(keras3, folder / f"resnet50v2_keras2{suffix}.h5")
        files[include_top] = {"keras3": keras3, "keras2": keras2, "outputs": outputs, "model": model}
    return images, files


def _ours(model, images_nhwc):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).numpy()


def _pooled(model, images_nchw):
    head, model.fc = model.fc, nn.Identity()
    try:
        with torch.no_grad():
            return model.eval()(images_nchw).numpy()
    finally:
        model.fc = head


# --------------------------------------------------------------------------------------------
# Exact loading
# --------------------------------------------------------------------------------------------


def test_resnet50_from_torchvision_file_gives_torchvision_logits(torchvision_file):
    reference, path = torchvision_file
    ours = get_model("resnet50", weights=path)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(images).numpy()
    assert_close_relative(
        _pooled(ours, images) @ ours.fc.weight.detach().numpy().T + ours.fc.bias.detach().numpy(), expected
    )
    with torch.no_grad():
        assert_close_relative(ours.eval()(images).numpy(), expected)
    assert ours.weights_source["fresh_head"] is False and ours.weights_source["format"] == "torchvision"
    assert ours.input_normalization == "imagenet"
    assert torch.equal(ours.layer3[2].bn2.running_var, reference.layer3[2].bn2.running_var)


def test_a_file_without_bn_step_counters_loads_as_torchvision_would(torchvision_file, tmp_path):
    """Files saved before PyTorch 0.4.1 have no num_batches_tracked; torchvision loads them anyway."""
    reference, path = torchvision_file
    state = {k: v for k, v in torch.load(path, weights_only=True).items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    ours = get_model("resnet50", weights=tmp_path / "old.pth")
    assert ours.weights_source["tensors_loaded"] == len(state) == 267  # 161 weights/biases + 106 BN statistics
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_close_relative(ours.eval()(images).numpy(), reference(images).numpy())


def test_resnet50_for_4_classes_loads_the_backbone_and_a_fresh_head(torchvision_file):
    reference, path = torchvision_file
    torch.manual_seed(0)
    ours = get_model("resnet50", num_classes=4, weights=path)
    assert ours.fc.weight.shape == (4, 2048) and ours.weights_source["fresh_head"] is True
    assert ours.weights_source["tensors_loaded"] == 265  # all but fc.weight and fc.bias
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert_close_relative(_pooled(ours, images), _pooled(reference, images))


@pytest.mark.parametrize("naming", ["keras2", "keras3"])
@pytest.mark.slow
def test_resnet50v2_from_keras_h5_gives_keras_logits(keras_files, naming):
    images, files = keras_files
    ours = get_model("resnet50v2", weights=files[True][naming])
    assert_close_relative(_ours(ours, images), files[True]["outputs"])
    assert ours.weights_source == {
        "file": str(files[True][naming]),
        "tensors_loaded": 272,
        "fresh_head": False,
        "format": "keras",
    }
    assert ours.input_normalization == "tf"


@pytest.mark.parametrize("naming", ["keras2", "keras3"])
def test_resnet50v2_from_notop_h5_gives_keras_pooled_features(keras_files, naming):
    images, files = keras_files
    ours = get_model("resnet50v2", num_classes=4, weights=files[False][naming])
    assert ours.weights_source["fresh_head"] is True
    assert_close_relative(_pooled(ours, torch.from_numpy(images).permute(0, 3, 1, 2)), files[False]["outputs"])


def test_keras2_names_are_the_published_style(keras_files):
    _, files = keras_files
    with h5py.File(files[True]["keras2"]) as handle:
        names = [pretrained._text(n) for n in handle["conv1_conv"].attrs["weight_names"]]
        assert names == ["conv1_conv/kernel:0", "conv1_conv/bias:0"]
        assert handle["conv1_conv"]["conv1_conv"]["kernel:0"].shape == (7, 7, 3, 64)
    with h5py.File(files[True]["keras3"]) as handle:
        assert [pretrained._text(n) for n in handle["post_bn"].attrs["weight_names"]] == [
            "post_bn/gamma",
            "post_bn/beta",
            "post_bn/moving_mean",
            "post_bn/moving_variance",
        ]


@pytest.mark.slow
def test_our_h5_writer_is_read_by_keras_itself(keras_files, tmp_path):
    """write_keras_h5 (used when the real file is absent) writes what Keras' own loader reads."""
    from keras.src.legacy.saving import legacy_h5_format

    images, files = keras_files
    ours = get_model("resnet50v2", weights=files[True]["keras3"])
    path = pretrained.write_keras_h5(ours, tmp_path / "ours.h5")
    keras_model = files[True]["model"]
    like_a_trained_keras_net(keras_model, seed=99)  # overwritten by the load below
    with h5py.File(path) as handle:
        legacy_h5_format.load_weights_from_hdf5_group_by_name(handle, keras_model)
    import keras

    assert_close_relative(keras.ops.convert_to_numpy(keras_model(images, training=False)), files[True]["outputs"])
    again = get_model("resnet50v2", weights=path)
    assert_close_relative(_ours(again, images), files[True]["outputs"])


def test_every_course_model_has_published_weights_torchvisions_for_v1_keras_for_v2():
    assert imagenet.WEIGHTS_SOURCE == {**dict.fromkeys(V1_NAMES, "torchvision"), **dict.fromkeys(V2_NAMES, "keras")}


def test_keras_layer_name_inverts_keras_v2_module_name():
    model = get_model("resnet50v2")
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            assert keras_v2_module_name(pretrained.keras_layer_name(name)) == name


def test_keras_to_torch_moves_the_axes_and_renames_as_the_layouts_say():
    kernel = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # (kh, kw, in, out)
    name, weight = pretrained.keras_to_torch("conv2_block1_1_conv/kernel:0", kernel)
    assert name == "weight" and weight.shape == (5, 4, 2, 3) and weight[4, 3, 1, 2] == kernel[1, 2, 3, 4]
    dense = np.arange(6, dtype=np.float32).reshape(2, 3)  # (in, out)
    assert torch.equal(pretrained.keras_to_torch("predictions/kernel", dense)[1], torch.from_numpy(dense).T)
    for keras_name, ours in (
        ("gamma", "weight"),
        ("beta", "bias"),
        ("moving_mean", "running_mean"),
        ("moving_variance", "running_var"),
        ("bias", "bias"),
    ):
        assert pretrained.keras_to_torch(f"post_bn/{keras_name}", np.ones(3))[0] == ours
    with pytest.raises(ValueError, match=r"'post_bn/scale' \(3,\) has no place in a ResNet\*V2"):
        pretrained.keras_to_torch("post_bn/scale", np.ones(3))


# --------------------------------------------------------------------------------------------
# Wrong files
# --------------------------------------------------------------------------------------------


def test_v1_file_for_a_v2_model_is_a_clear_error(torchvision_file):
    with pytest.raises(
        pretrained.WeightsError, match=r"not an HDF5 file; resnet50v2 takes the Keras Applications file"
    ):
        get_model("resnet50v2", weights=torchvision_file[1])


def test_keras_file_for_a_v1_model_is_a_clear_error(keras_files):
    with pytest.raises(pretrained.WeightsError, match=r"HDF5 \(Keras\) file; resnet50 takes torchvision's"):
        get_model("resnet50", weights=keras_files[1][True]["keras2"])


def test_resnet50_file_for_resnet101_names_the_first_missing_tensor(torchvision_file):
    with pytest.raises(pretrained.WeightsError, match=r"no tensor for layer3\.6\.conv1\.weight \(256, 1024, 1, 1\)"):
        get_model("resnet101", weights=torchvision_file[1])


def test_resnet50v2_file_for_resnet101v2_names_the_first_missing_tensor(keras_files):
    with pytest.raises(pretrained.WeightsError, match=r"no tensor for conv4\.block7\.preact_bn\.weight"):
        get_model("resnet101v2", weights=keras_files[1][True]["keras2"])


def test_resnet50_file_for_resnet34_names_the_first_wrong_shape(torchvision_file):
    with pytest.raises(
        pretrained.WeightsError,
        match=r"layer1\.0\.conv1\.weight is \(64, 64, 1, 1\) in the file, "
        r"\(64, 64, 3, 3\) in the model",
    ):
        get_model("resnet34", weights=torchvision_file[1])


def test_a_wrong_tensor_in_a_keras_file_is_named_by_its_keras_name(keras_files, tmp_path):
    src = keras_files[1][True]["keras2"]
    path = tmp_path / "edited.h5"
    path.write_bytes(src.read_bytes())
    with h5py.File(path, "a") as handle:
        group = handle["conv3_block2_2_conv"]
        del group["conv3_block2_2_conv/kernel:0"]
        group.create_dataset("conv3_block2_2_conv/kernel:0", data=np.zeros((3, 3, 128, 64), "float32"))
    with pytest.raises(
        pretrained.WeightsError,
        match=r"conv3\.block2\.conv2\.weight \(conv3_block2_2_conv/kernel:0 "
        r"in the file\) is \(64, 128, 3, 3\) in the file",
    ):
        get_model("resnet50v2", weights=path)


def test_an_extra_tensor_in_the_file_is_an_error(torchvision_file, tmp_path):
    state = torch.load(torchvision_file[1], weights_only=True)
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(pretrained.WeightsError, match=r"layer5\.0\.conv1\.weight has no place in the model"):
        get_model("resnet50", weights=tmp_path / "extra.pth")


@pytest.mark.parametrize("which", ["pth", "h5"])
def test_truncated_files_are_a_clear_error(torchvision_file, keras_files, tmp_path, which):
    src = torchvision_file[1] if which == "pth" else keras_files[1][True]["keras3"]
    path = tmp_path / f"truncated.{which}"
    data = src.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(pretrained.WeightsError, match=rf"Cannot read .*truncated\.{which} .*incomplete download"):
        get_model("resnet50" if which == "pth" else "resnet50v2", weights=path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(pretrained.WeightsError, match="No weights file at"):
        get_model("resnet18", weights=tmp_path / "nothing.pth")


# --------------------------------------------------------------------------------------------
# "imagenet": the cache, the download, failing fast offline
# --------------------------------------------------------------------------------------------


def test_imagenet_uses_the_torchvision_enum_and_torch_hub_cache(tmp_path):
    file = imagenet.imagenet_file("resnet50")
    assert file.url == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    assert file.path == tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    v2 = imagenet.imagenet_file("resnet50v2", include_top=False)
    assert v2.filename == "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert v2.url.startswith("https://storage.googleapis.com/tensorflow/keras-applications/resnet/")


def test_imagenet_without_network_or_cache_fails_fast_and_says_what_to_do(monkeypatch, tmp_path):
    calls = []

    def dead_network(url, timeout):
        calls.append((url, timeout))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(imagenet, "_open_url", dead_network)
    with pytest.raises(imagenet.WeightsUnavailable) as error:
        get_model("resnet50", num_classes=4, weights="imagenet")
    message = str(error.value)
    assert "resnet50-0676ba61.pth" in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet50-0676ba61.pth") in message
    assert "download-weights --model resnet50" in message and "name resolution" in message
    assert calls and calls[0][1] <= imagenet.DOWNLOAD_TIMEOUT
    assert not list((tmp_path / "torch_home" / "hub" / "checkpoints").iterdir())  # no partial file left


def test_imagenet_offline_never_touches_the_network(monkeypatch):
    monkeypatch.setenv(imagenet.OFFLINE_ENV, "1")  # the autouse fixture fails the test on any download
    with pytest.raises(imagenet.WeightsUnavailable, match=r"resnet50v2_weights_tf_dim_ordering_tf_kernels_notop\.h5"):
        get_model("resnet50v2", num_classes=4, weights="imagenet")


@pytest.mark.slow
def test_imagenet_loads_a_cached_file_without_the_network(torchvision_file, keras_files):
    file = imagenet.imagenet_file("resnet50")
    file.path.parent.mkdir(parents=True)
    file.path.write_bytes(torchvision_file[1].read_bytes())
    model = get_model("resnet50", weights="imagenet")
    assert model.weights_source["file"] == str(file.path)
    # v2 for 4 classes wants the notop file; the full file does too (its classifier is left out)
    top = imagenet.imagenet_file("resnet50v2", include_top=True)
    top.path.write_bytes(keras_files[1][True]["keras2"].read_bytes())
    v2 = get_model("resnet50v2", num_classes=4, weights="imagenet")
    assert v2.weights_source["fresh_head"] is True and v2.input_normalization == "tf"


@pytest.mark.slow
def test_download_weights_verifies_the_checksum_and_writes_the_cache(monkeypatch, keras_files):
    top, notop = keras_files[1][True]["keras2"].read_bytes(), keras_files[1][False]["keras2"].read_bytes()
    served = {
        imagenet.imagenet_file("resnet50v2", True).url: top,
        imagenet.imagenet_file("resnet50v2", False).url: notop,
    }
    monkeypatch.setattr(imagenet, "_open_url", lambda url, timeout: io.BytesIO(served[url]))
    # the real checksums do not fit look-alike files: the download is refused and nothing is kept
    with pytest.raises(imagenet.WeightsUnavailable, match="checksum"):
        imagenet.download_weights("resnet50v2")
    assert not imagenet.cache_dir().exists() or not list(imagenet.cache_dir().iterdir())
    monkeypatch.setitem(
        imagenet.KERAS_WEIGHTS_MD5, "resnet50v2", (hashlib.md5(top).hexdigest(), hashlib.md5(notop).hexdigest())
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["download-weights", "--model", "resnet50v2"]) == 0
    assert imagenet.imagenet_file("resnet50v2", False).path.read_bytes() == notop
    assert "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5" in printed.getvalue()
    model = get_model("resnet50v2", weights="imagenet")
    assert_close_relative(_ours(model, keras_files[0]), keras_files[1][True]["outputs"])


def test_download_weights_command_without_network_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(
        imagenet, "_open_url", lambda url, timeout: (_ for _ in ()).throw(urllib.error.URLError("offline"))
    )
    assert main(["download-weights", "--model", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert "resnet18-f37072fd.pth" in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------
# Normalisation, freezing, the linear probe, the command line
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_birds(tmp_path_factory):
    """6 small JPEGs per class, each class its own colour with a gradient."""
    root = tmp_path_factory.mktemp("tiny_birds")
    for k, name in enumerate(CLASS_NAMES):
        (root / name).mkdir()
        for i in range(6):
            pixels = np.zeros((40, 40, 3), np.uint8)
            pixels[..., k % 3] = 60 + 30 * k + 3 * i
            pixels[:, :, (k + 1) % 3] = np.linspace(0, 255, 40, dtype=np.uint8)[None, :]
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_normalisation_follows_the_weights():
    assert pretrained.normalization_for("resnet50", None) == "imagenet"
    assert pretrained.normalization_for("resnet50v2", None) == "imagenet"
    assert pretrained.normalization_for("resnet50", "imagenet") == "imagenet"
    assert pretrained.normalization_for("resnet152v2", "some/file.h5") == "tf"


def test_tf_normalisation_is_kerass_preprocess_input(tiny_birds):
    """Keras' resnet_v2.preprocess_input (mode "tf"): x / 127.5 - 1 on the 0..255 pixels."""
    keras = pytest.importorskip("keras")
    _, val, _ = load_birds(tiny_birds, image_size=40, batch_size=4, normalization="tf")
    images, _ = next(iter(val))
    path = val.dataset.samples[0][0]
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype="float32")
    expected = keras.applications.resnet_v2.preprocess_input(pixels.copy())
    np.testing.assert_allclose(images[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    _, val_imagenet, _ = load_birds(tiny_birds, image_size=40, batch_size=4)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(
        next(iter(val_imagenet))[0][0].permute(1, 2, 0).numpy(), (pixels / 255 - mean) / std, atol=1e-5
    )
    with pytest.raises(ValueError, match="normalization must be one of"):
        load_birds(tiny_birds, normalization="caffe")


def test_freeze_backbone_trains_only_the_head(tiny_birds, torchvision_file):
    from resnet_course.training import fit

    train, val, names = load_birds(tiny_birds, image_size=32, batch_size=4)
    model = finetune.freeze_backbone(get_model("resnet50", num_classes=4, weights=torchvision_file[1]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, train, val, 1, progress=False, precision="fp32")
    after = model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["fc.bias", "fc.weight"]  # BN running statistics included: the backbone stays in eval mode
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


def test_linear_probe_caches_features_and_trains_the_head(tiny_birds, torchvision_file):
    reference, path = torchvision_file
    train, val, _ = load_birds(tiny_birds, image_size=32, batch_size=4)
    model = get_model("resnet50", num_classes=4, weights=path)
    features, targets = finetune.extract_features(model, val, precision="fp32")
    images = torch.cat([x for x, _ in val])
    assert_close_relative(features.numpy(), _pooled(reference, images))
    assert targets.tolist() == [label for _, label in val.dataset.samples]
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    history = finetune.linear_probe(model, train, val, epochs=30, lr=1e-2, precision="fp32")
    assert [r["epoch"] for r in history] == list(range(1, 31))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in backbone.items())
    # the trained head inside the model gives the probe's validation accuracy
    with torch.no_grad():
        accuracy = (model.eval()(images).argmax(1) == targets).double().mean().item()
    assert accuracy == pytest.approx(history[-1]["val_acc"])


@pytest.mark.slow
def test_cli_trains_one_epoch_from_a_local_keras_file_and_predict_uses_its_scaling(
    tiny_birds, keras_files, tmp_path, capsys
):
    weights = keras_files[1][False]["keras2"]
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--model",
            "resnet50v2",
            "--data",
            str(tiny_birds),
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--batch-size",
            "4",
            "--out",
            str(out),
            "--no-progress",
            "--fp32",
            "--weights",
            str(weights),
            "--freeze-backbone",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "From weights" in printed and "backbone frozen" in printed and "normalised 'tf'" in printed
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["meta"]["normalization"] == "tf" and checkpoint["meta"]["backbone_frozen"] is True
    assert checkpoint["meta"]["weights"] == str(weights)
    assert len(json.loads((out / "history.json").read_text())) == 1
    # the frozen backbone left the training run exactly as the file has it
    file_tensors = pretrained.read_keras_h5(weights)
    for key in ("conv1.weight", "conv4.block3.bn2.running_var", "post_bn.running_mean"):
        assert torch.equal(checkpoint["model"][key], file_tensors[key][0])

    model, meta = load_model(out / "checkpoint.pt")
    assert model.input_normalization == "tf"
    image = tiny_birds / CLASS_NAMES[2] / "0.png"
    assert main(["predict", "--checkpoint", str(out / "checkpoint.pt"), "--fp32", "--topk", "4", str(image)]) == 0
    line = capsys.readouterr().out
    pixels = (
        torch.from_numpy(
            np.asarray(Image.open(image).convert("RGB").resize((32, 32), Image.BILINEAR), dtype="float32")
        ).permute(2, 0, 1)[None]
        / 127.5
        - 1
    )
    with torch.no_grad():
        probabilities = model(pixels).softmax(1)[0]
    best = int(probabilities.argmax())
    assert f"{CLASS_NAMES[best]} ({probabilities[best].item():.1%})" in line


def test_cli_trains_one_epoch_fine_tuning_resnet18_from_a_torchvision_file(tiny_birds, tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(like_a_trained_net(torchvision.models.resnet18()).state_dict(), path)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "resnet18",
                "--data",
                str(tiny_birds),
                "--epochs",
                "1",
                "--image-size",
                "32",
                "--batch-size",
                "4",
                "--out",
                str(out),
                "--no-progress",
                "--fp32",
                "--weights",
                str(path),
            ]
        )
        == 0
    )
    meta = load_checkpoint(out / "best.pt")["meta"]
    assert meta["normalization"] == "imagenet" and meta["backbone_frozen"] is False
    assert "normalised 'imagenet'" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--freeze-backbone"], "--freeze-backbone trains only the head"),
        (["--weights", "no/such/file.pth"], "--weights: no file at no/such/file.pth"),
    ],
)
def test_cli_weights_mistakes_exit_2(tiny_birds, tmp_path, capsys, argv, message):
    code = main(["train", "--model", "resnet18", "--data", str(tiny_birds), "--out", str(tmp_path / "r"), *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_wrong_weights_file_exits_2_naming_the_problem(tiny_birds, torchvision_file, tmp_path, capsys):
    code = main(
        [
            "train",
            "--model",
            "resnet50v2",
            "--data",
            str(tiny_birds),
            "--image-size",
            "32",
            "--out",
            str(tmp_path / "r"),
            "--weights",
            str(torchvision_file[1]),
            "--no-progress",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "not an HDF5 file; resnet50v2 takes" in err and "Traceback" not in err


def test_weights_or_standin_says_which_and_writes_the_published_format(tmp_path, torchvision_file, capsys):
    path, real = finetune.weights_or_standin("resnet50v2", folder=tmp_path)
    assert not real and "NO ImageNet weights" in capsys.readouterr().out
    assert path.name == "STANDIN-random-resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    model = get_model("resnet50v2", num_classes=4, weights=path)  # the same loader as the real file
    assert model.input_normalization == "tf" and model.weights_source["format"] == "keras"
    with h5py.File(path) as handle:  # a notop file, like the published one
        assert "predictions" not in handle and "post_bn" in handle
    assert model.post_bn.running_var.std() > 0.1  # like a trained net's statistics, not BN's defaults
    cached = imagenet.imagenet_file("resnet50")
    cached.path.parent.mkdir(parents=True)
    cached.path.write_bytes(torchvision_file[1].read_bytes())
    assert finetune.weights_or_standin("resnet50", folder=tmp_path) == (cached.path, True)
    assert "ImageNet weights found" in capsys.readouterr().out


def test_cli_train_with_imagenet_and_no_network_exits_2_saying_which_file(tiny_birds, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(imagenet.OFFLINE_ENV, "1")
    attempts = []
    monkeypatch.setattr(imagenet, "_open_url", lambda url, timeout: attempts.append(url))
    code = main(
        [
            "train",
            "--model",
            "resnet18",
            "--data",
            str(tiny_birds),
            "--image-size",
            "32",
            "--no-progress",
            "--out",
            str(tmp_path / "r"),
            "--weights",
            "imagenet",
        ]
    )
    assert code == 2 and attempts == []  # offline: the network is never tried
    err = capsys.readouterr().err
    assert "resnet18-f37072fd.pth" in err and "download-weights --model resnet18" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
