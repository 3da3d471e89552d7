"""Porting Keras' ResNet50V2 to PyTorch: where each Keras weight goes (``keras_v2_module_name``,
which lives in ``pretrained`` beside the weights-file reader that uses it; ``load_keras_weights``),
the three slips of a naive port, and what each one changes.

A port that has the right layers and the right parameter count can still compute another
function. ``models.ResNetV2`` is the faithful port (tested against Keras Applications in
``tests/test_keras_resnet50v2.py``); ``naive_port`` rebuilds it with one slip at a time:

- ``"neg_inf_maxpool"``: the stem's ``MaxPool2d(3, 2, padding=1)`` pads with -inf, Keras pads with
  zeros (``ZeroPadding2D`` then the pool). v2's stem output is not ReLU'd, so a border window whose
  values are all negative returns a negative number instead of 0.
- ``"no_conv_biases"``: ``bias=False`` everywhere, as in v1. Keras' v2 stem conv, shortcut convs
  and the last 1x1 conv of every block carry biases.
- ``"pytorch_bn_eps"``: PyTorch's default BatchNorm epsilon 1e-5 instead of Keras' 1.001e-5.

At initialisation conv biases are 0 and BatchNorm is the identity, which would hide the last two
slips; ``models.like_a_trained_net`` gives the weights values a trained network has first
(``like_a_trained_keras_net`` does the same to a Keras model, before comparing the two).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch
from torch import nn

from .blocks import KERAS_BN_EPS
from .models import BN_KINDS, ResNetV2, draw_like_trained
from .pretrained import keras_to_torch, keras_v2_module_name  # both live with the weights-file reader

__all__ = [
    "keras_v2_module_name",
    "load_keras_weights",
    "NAIVE_PORT_PITFALLS",
    "PITFALL_LABELS",
    "PYTORCH_BN_EPS",
    "like_a_trained_keras_net",
    "naive_port",
    "slipped",
    "pitfall_effects",
    "dead_channel_bn_eps_change",
]


def load_keras_weights(model: ResNetV2, keras_model) -> dict[str, str]:
    """Copy every weight of a Keras ResNet*V2 into ``model``; return {our key: Keras weight path}.

    Each weight is converted by ``pretrained.keras_to_torch``, as the weights-file reader does.
    Needs no Keras import: it only reads ``keras_model.layers``.
    """
    state = model.state_dict()
    copied: dict[str, str] = {}
    for layer in keras_model.layers:
        if not layer.weights:
            continue
        prefix = keras_v2_module_name(layer.name)
        for variable, array in zip(layer.weights, layer.get_weights()):
            name, value = keras_to_torch(variable.path, array)
            key = f"{prefix}.{name}"
            if key not in state or state[key].shape != value.shape:
                raise ValueError(
                    f"Keras weight {variable.path} {tuple(array.shape)} has no match in the model (looked for {key})"
                )
            if key in copied:
                raise ValueError(f"{key} would be written twice ({copied[key]}, {variable.path})")
            state[key] = value
            copied[key] = variable.path
    model.load_state_dict(state)
    return copied


#: The slips of a naive port, in the order notebook 04 shows them.
NAIVE_PORT_PITFALLS = ("neg_inf_maxpool", "no_conv_biases", "pytorch_bn_eps")
#: Each slip in plain words.
PITFALL_LABELS = {
    "neg_inf_maxpool": "stem max pool pads with -inf",
    "no_conv_biases": "conv biases dropped",
    "pytorch_bn_eps": "BN eps 1e-5 instead of 1.001e-5",
}
#: PyTorch's default BatchNorm epsilon, the value a naive port keeps.
PYTORCH_BN_EPS = 1e-5


def like_a_trained_keras_net(keras_model, seed: int = 0):
    """``models.like_a_trained_net`` for a Keras model, in place, with the same distributions
    (``models.draw_like_trained``): BN gamma, beta, moving mean and moving variance, conv/dense
    biases; kernels are kept. So a comparison with our port after ``load_keras_weights`` sees every bias and
    BN statistic. Needs no Keras import (it only uses ``layers``, ``get_weights`` and
    ``set_weights``); deterministic for a given ``seed``. Returns ``keras_model``."""
    generator = torch.Generator().manual_seed(seed)
    for layer in keras_model.layers:
        arrays = layer.get_weights()
        if not arrays:
            continue
        dtype = arrays[0].dtype
        if type(layer).__name__ == "BatchNormalization":
            arrays = [draw_like_trained(a.shape, kind, generator) for a, kind in zip(arrays, BN_KINDS)]
        elif len(arrays) == 2:  # a conv or dense layer with a bias
            arrays = [arrays[0], draw_like_trained(arrays[1].shape, "shift", generator)]
        layer.set_weights([np.asarray(a).astype(dtype) for a in arrays])
    return keras_model


def _apply_slip(model: nn.Module, pitfall: str) -> Callable[[], None]:
    """Give ``model`` one slip, in place; return a function that undoes it."""
    if pitfall not in NAIVE_PORT_PITFALLS:
        raise ValueError(f"unknown pitfall {pitfall!r}; choose one of {NAIVE_PORT_PITFALLS}")
    if pitfall == "neg_inf_maxpool":
        if not isinstance(getattr(model, "pool1", None), nn.Module):
            raise ValueError(f"{type(model).__name__} has no stem max pool `pool1`: expected a ResNetV2")
        keras_pool = model.pool1
        model.pool1 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        return lambda: setattr(model, "pool1", keras_pool)
    if pitfall == "no_conv_biases":
        biases = {m: m.bias for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is not None}
        for m in biases:
            m.bias = None  # what bias=False builds

        def restore_biases() -> None:
            for m, bias in biases.items():
                m.bias = bias

        return restore_biases
    epsilons = {m: m.eps for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    for m in epsilons:
        m.eps = PYTORCH_BN_EPS

    def restore_epsilons() -> None:
        for m, eps in epsilons.items():
            m.eps = eps

    return restore_epsilons


def naive_port(model: nn.Module, pitfall: str) -> nn.Module:
    """A copy of a ``ResNetV2`` with one slip of a naive port (see ``NAIVE_PORT_PITFALLS``), same weights."""
    if pitfall not in NAIVE_PORT_PITFALLS:
        raise ValueError(f"unknown pitfall {pitfall!r}; choose one of {NAIVE_PORT_PITFALLS}")
    naive = copy.deepcopy(model)
    _apply_slip(naive, pitfall)
    return naive


@contextmanager
def slipped(model: nn.Module, pitfall: str) -> Iterator[nn.Module]:
    """``with slipped(model, "no_conv_biases"):`` the model has that slip inside, and is restored after."""
    undo = _apply_slip(model, pitfall)
    try:
        yield model
    finally:
        undo()


def pitfall_effects(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """``{pitfall: max |logit change|}``: each naive port against ``model`` on ``images``, in float64.

    Float64 so that the tiny epsilon slip is not lost in float32 rounding: both models do the same
    operations in the same order except the slip, so any non-zero change is the slip's own effect.
    ``model`` itself is left as it was (dtype and train/eval mode); one float64 copy does all the work.
    """
    faithful = copy.deepcopy(model).double().eval()
    x = images.double()
    effects = {}
    with torch.no_grad():
        reference = faithful(x)
        for pitfall in NAIVE_PORT_PITFALLS:
            with slipped(faithful, pitfall):
                effects[pitfall] = (faithful(x) - reference).abs().max().item()
    return effects


def dead_channel_bn_eps_change(keras_eps: float = KERAS_BN_EPS, naive_eps: float = PYTORCH_BN_EPS) -> float:
    """Relative change of a BN output whose running variance is 0 (a dead channel) when eps changes.

    BN divides by sqrt(var + eps): with var = 0 the output scales by sqrt(keras_eps / naive_eps),
    i.e. by 5e-4 for 1.001e-5 vs 1e-5, the largest effect the epsilon slip can have.
    """
    return (keras_eps / naive_eps) ** 0.5 - 1
