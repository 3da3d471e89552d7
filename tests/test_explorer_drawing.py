"""The shape explorer draws: each stage's output tensor as a box, redrawn live with the table below."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from resnet_course import widgets
from resnet_course.diagrams import drawn_boxes, side_length
from resnet_course.widgets import cached_model, explorer_figure, explorer_png, shape_explorer


def test_the_drawing_shows_the_stage_shapes_of_both_models():
    boxes = drawn_boxes(explorer_figure("resnet50", "resnet50v2", 224))
    # He et al. 2015, Table 1 (v1: conv2_x..conv5_x at 56, 28, 14, 7); v2 (Keras) strides one block later.
    assert [b["shape"] for b in boxes if b["model"] == 0][1:5] == [
        (256, 56, 56),
        (512, 28, 28),
        (1024, 14, 14),
        (2048, 7, 7),
    ]
    assert [b["shape"] for b in boxes if b["model"] == 1][1:5] == [
        (256, 28, 28),
        (512, 14, 14),
        (1024, 7, 7),
        (2048, 7, 7),
    ]
    for box in boxes:
        c, h, w = box["shape"]
        assert (box["depth"], box["height"], box["width"]) == pytest.approx(
            (side_length(c), side_length(h), side_length(w))
        )


def test_a_bigger_input_draws_bigger_boxes():
    at_224 = drawn_boxes(explorer_figure("resnet50", None, 224))
    at_448 = drawn_boxes(explorer_figure("resnet50", None, 448))
    assert {b["model"] for b in at_224} == {0}  # v1 only
    assert at_448[4]["shape"] == (2048, 14, 14)
    # log scale: doubling H and W adds exactly one unit to each side; channels do not change
    for small, big in zip(at_224[:-1], at_448[:-1]):
        assert big["width"] - small["width"] == pytest.approx(1.0)
        assert big["depth"] == pytest.approx(small["depth"])


def _counting(function, calls: list):
    def counted(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)

    return counted


@pytest.mark.slow
def test_the_widget_redraws_when_the_slider_or_the_model_changes(monkeypatch):
    box = shape_explorer()
    dropdown, slider, picture, table = box.children
    first = picture.value
    assert Image.open(io.BytesIO(first)).format == "PNG"
    assert first == explorer_png("resnet50", "resnet50v2", 224)
    draws, builds, devices = [], [], []
    monkeypatch.setattr(widgets, "explorer_png", _counting(widgets.explorer_png, draws))
    monkeypatch.setattr(widgets, "get_model", _counting(widgets.get_model, builds))
    hooks = [
        cached_model(name).conv1.register_forward_pre_hook(lambda m, args: devices.append(args[0].device.type))
        for name in ("resnet50", "resnet50v2")
    ]
    try:
        slider.value = 320
    finally:
        for hook in hooks:
            hook.remove()
    # one drawing, no model built again, every stage run on the meta device: only shapes, no arithmetic
    assert draws == [("resnet50", "resnet50v2", 320)] and builds == []
    assert devices and set(devices) == {"meta"}
    assert picture.value == explorer_png("resnet50", "resnet50v2", 320) != first
    assert "2048&times;10&times;10" in table.value
    dropdown.value = ("resnet18", None)
    assert picture.value == explorer_png("resnet18", None, 320)
    assert box.children.index(table) > box.children.index(picture)  # the table stays below
