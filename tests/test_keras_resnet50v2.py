"""Our ResNet50V2 against Keras Applications' ResNet50V2 (Keras 3 on the torch backend).

Every Keras weight is copied into our model and both get the same random image: the logits must
agree to float rounding. Then the three pitfalls of a naive port (notebook 04) are shown to change
the logits: -inf max-pool padding, dropping the conv biases, PyTorch's default BN epsilon.
Conv biases and BN statistics are randomised first: at initialisation biases are 0 and BN is the
identity, which would hide the very differences these tests look for (a trained net has neither).
"""

import copy
import os

import numpy as np
import pytest
import torch

os.environ["KERAS_BACKEND"] = "torch"
keras = pytest.importorskip("keras")

# Keras 3 on torch warns about numpy's __array__ copy keyword thousands of times.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.usefixtures("one_torch_thread")]

from resnet_course.blocks import KERAS_BN_EPS  # noqa: E402
from resnet_course.models import resnet50v2  # noqa: E402
from resnet_course.porting import like_a_trained_keras_net, load_keras_weights, naive_port  # noqa: E402

KERAS_PARAMS = 25_613_800  # Keras' count_params(): trainable + BN moving statistics
OUR_PARAMS = 25_568_360
BN_MOVING_STATS = 45_440


def _build_pair(image_size, batch, dtype="float32"):
    """(keras model, our model with Keras' weights, copied-key map, NHWC input, Keras logits)."""
    previous = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        keras.utils.set_random_seed(0)
        keras_model = keras.applications.ResNet50V2(
            weights=None, classifier_activation=None, input_shape=(image_size, image_size, 3)
        )
        like_a_trained_keras_net(keras_model)
        ours = resnet50v2().eval()
        if dtype == "float64":
            ours = ours.double()
        copied = load_keras_weights(ours, keras_model)
        images = np.random.default_rng(1).normal(size=(batch, image_size, image_size, 3)).astype(dtype)
        keras_logits = keras.ops.convert_to_numpy(keras_model(images, training=False))
    finally:
        keras.config.set_floatx(previous)
    return keras_model, ours, copied, images, keras_logits


def _our_logits(model, images_nhwc):
    with torch.no_grad():
        return model(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).numpy()


@pytest.fixture(scope="module")
def pair_224():
    return _build_pair(224, batch=1)


@pytest.fixture(scope="module")
def pair_75():
    """75 px: odd feature maps (19, 10, 5, 3 px) exercise padding on odd sizes with stride 2."""
    return _build_pair(75, batch=2)


@pytest.mark.parametrize("pair_name", ["pair_224", "pair_75"])
@pytest.mark.slow
def test_resnet50v2_matches_keras_logits(pair_name, request):
    _, ours, _, images, keras_logits = request.getfixturevalue(pair_name)
    ours_logits = _our_logits(ours, images)
    max_abs_diff = np.abs(ours_logits - keras_logits).max()
    print(f"{pair_name}: max |ours - keras| = {max_abs_diff:.2e} (logits up to {np.abs(keras_logits).max():.2f})")
    assert ours_logits.shape == keras_logits.shape
    assert max_abs_diff < 1e-4 * max(1.0, np.abs(keras_logits).max())


def test_every_keras_weight_is_used_exactly_once(pair_75):
    keras_model, ours, copied, _, _ = pair_75
    keras_paths = [w.path for w in keras_model.weights]
    assert len(keras_paths) == len(set(keras_paths)) == 272
    assert sorted(copied.values()) == sorted(keras_paths)
    our_keys = [k for k in ours.state_dict() if not k.endswith("num_batches_tracked")]
    assert sorted(copied) == sorted(our_keys)


def test_keras_count_is_ours_plus_bn_moving_statistics(pair_75):
    keras_model, ours, _, _, _ = pair_75
    moving_stats = sum(b.numel() for name, b in ours.named_buffers() if name.endswith(("running_mean", "running_var")))
    non_trainable = sum(int(np.prod(w.shape)) for w in keras_model.non_trainable_weights)
    assert keras_model.count_params() == KERAS_PARAMS
    assert sum(p.numel() for p in ours.parameters()) == OUR_PARAMS
    assert moving_stats == non_trainable == BN_MOVING_STATS
    assert OUR_PARAMS + BN_MOVING_STATS == KERAS_PARAMS


def test_bn_epsilon_is_keras_everywhere(pair_75):
    keras_model, ours, _, _, _ = pair_75
    keras_bns = [layer for layer in keras_model.layers if type(layer).__name__ == "BatchNormalization"]
    our_bns = [m for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(keras_bns) == len(our_bns) == 1 + 16 * 2 + 16  # post_bn, 2 per block, preact per block
    assert all(layer.epsilon == pytest.approx(KERAS_BN_EPS, rel=1e-12) for layer in keras_bns)
    assert all(m.eps == KERAS_BN_EPS for m in our_bns)
    assert all(m.momentum == pytest.approx(1 - layer.momentum) for m, layer in zip(our_bns, keras_bns))


def test_neg_inf_maxpool_padding_gives_different_logits(pair_75):
    """PyTorch's MaxPool2d(padding=1) pads with -inf; Keras pads with zeros. The stem output is not
    ReLU'd in v2, so border windows whose values are all negative come out differently."""
    _, ours, _, images, keras_logits = pair_75
    naive = naive_port(ours, "neg_inf_maxpool").eval()  # the same weights
    stem_output = ours.conv1(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert (stem_output < 0).any()  # the reason the padding value matters
    faithful = np.abs(_our_logits(ours, images) - keras_logits).max()
    naive_diff = np.abs(_our_logits(naive, images) - keras_logits).max()
    print(f"-inf max-pool padding: max |naive - keras| = {naive_diff:.2e} (faithful {faithful:.2e})")
    assert naive_diff > 100 * max(faithful, 1e-6)


def test_dropping_conv_biases_gives_different_logits(pair_75):
    """Keras' v2 stem conv, shortcut convs and last 1x1 conv of each block carry biases."""
    _, ours, _, images, keras_logits = pair_75
    naive = copy.deepcopy(ours)
    biased = [m for m in naive.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None]
    assert len(biased) == 1 + 4 + 16  # stem, one shortcut conv per stage, conv3 of every block
    for conv in biased:
        conv.bias = None  # what `bias=False` everywhere would build
    faithful = np.abs(_our_logits(ours, images) - keras_logits).max()
    naive_diff = np.abs(_our_logits(naive, images) - keras_logits).max()
    print(f"no conv biases: max |naive - keras| = {naive_diff:.2e} (faithful {faithful:.2e})")
    assert naive_diff > 100 * max(faithful, 1e-6)


@pytest.mark.slow
def test_pytorch_default_bn_eps_changes_logits_but_below_float32_rounding(pair_75):
    """eps 1e-5 instead of 1.001e-5 moves each BN denominator by 1e-8. With variances near 1 the
    logits move by less than float32 rounding (so the float32 Keras comparison cannot see it);
    in float64 the change is real. Channels with near-zero variance (dead units in a trained
    net) feel it most: there the output scales by sqrt(1.001e-5 / 1e-5) - 1 = 5e-4.
    (Keras' BatchNormalization computes in float32 even with floatx float64, so this check runs
    on our model alone, in float64.)"""
    _, ours, _, images, keras_logits = pair_75
    faithful = copy.deepcopy(ours).double()
    naive = copy.deepcopy(ours).double()
    for m in naive.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-5
    images64 = images.astype(np.float64)
    eps_change = np.abs(_our_logits(naive, images64) - _our_logits(faithful, images64)).max()
    float32_agreement = np.abs(_our_logits(ours, images) - keras_logits).max()
    print(
        f"float64, BN eps 1e-5 vs 1.001e-5: max logit change {eps_change:.2e} "
        f"(float32 agreement with Keras {float32_agreement:.2e})"
    )
    assert 1e-12 < eps_change < float32_agreement


def test_bn_eps_matters_most_for_dead_channels():
    dead = torch.nn.BatchNorm2d(1, eps=KERAS_BN_EPS).eval()
    dead.running_var.zero_()
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    naive = copy.deepcopy(dead).double()
    naive.eps = 1e-5
    with torch.no_grad():
        ratio = (naive(x) / dead.double()(x)).max().item()
    assert ratio - 1 == pytest.approx((KERAS_BN_EPS / 1e-5) ** 0.5 - 1, rel=1e-6)
