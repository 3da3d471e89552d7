"""The shape explorer: its numbers are the stage tables', and the widget redraws when the slider moves."""

import pytest

from resnet_course import widgets
from resnet_course.models import MODEL_NAMES, get_model, resnet50, resnet50v2
from resnet_course.stages import stage_shapes
from resnet_course.widgets import (
    EXPLORER_CHOICES,
    SIZE_DEFAULT,
    cached_model,
    explorer_html,
    explorer_rows,
    shape_explorer,
)


def test_the_dropdown_offers_every_model_once():
    offered = [name for _, pair in EXPLORER_CHOICES for name in pair if name is not None]
    assert sorted(offered) == sorted(MODEL_NAMES)


def test_explorer_rows_at_224_are_the_course_shapes():
    pairs = explorer_rows("resnet50", "resnet50v2", 224)
    assert [(a["stage"], b["stage"]) for a, b in pairs] == [
        ("stem", "stem"),
        ("layer1", "conv2"),
        ("layer2", "conv3"),
        ("layer3", "conv4"),
        ("layer4", "conv5"),
        ("head", "head"),
    ]
    assert [a["shape"] for a, _ in pairs[1:5]] == [(256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
    assert [b["shape"] for _, b in pairs[1:5]] == [(256, 28, 28), (512, 14, 14), (1024, 7, 7), (2048, 7, 7)]
    # torchvision's documented ResNet-50 parameters; Keras' ResNet50V2 count less its BN moving statistics.
    assert sum(a["params"] for a, _ in pairs) == 25_557_032
    assert sum(b["params"] for _, b in pairs) == 25_568_360


def test_explorer_rows_equal_stage_shapes_of_freshly_built_models():
    pairs = explorer_rows("resnet50", "resnet50v2", 320)
    assert [a for a, _ in pairs] == stage_shapes(resnet50(), 320)
    assert [b for _, b in pairs] == stage_shapes(resnet50v2(), 320)


def test_v1_only_choice_leaves_the_v2_side_empty():
    pairs = explorer_rows("resnet18", None, 224)
    assert all(b is None for _, b in pairs)
    assert pairs[4][0]["shape"] == (512, 7, 7)


def test_models_are_built_once_per_name(monkeypatch):
    built = []

    def counting_get_model(name):
        built.append(name)
        return get_model(name)

    monkeypatch.setattr(widgets, "get_model", counting_get_model)
    cached_model.cache_clear()
    try:
        for size in (224, 320, 224):
            explorer_rows("resnet18", "resnet50v2", size)
        assert sorted(built) == ["resnet18", "resnet50v2"]  # three tables, each model built once
    finally:
        cached_model.cache_clear()  # later tests build from the real get_model again


def test_unknown_model_name_is_refused_clearly():
    with pytest.raises(ValueError, match="resnet50v2"):
        explorer_rows("resnet51", "resnet50v2")


def test_explorer_html_shows_both_models_and_their_totals():
    text = explorer_html("resnet50", "resnet50v2", 224)
    assert "2048&times;7&times;7" in text and "256&times;28&times;28" in text
    assert "25,557,032" in text and "25,568,360" in text
    assert text.count("<tr>") == 2 + 6 + 1  # two header rows, six stages, the total


def test_moving_the_slider_redraws_the_table():
    box = shape_explorer()
    dropdown, slider, picture, table = box.children
    assert dropdown.value == EXPLORER_CHOICES[0][1] and slider.value == SIZE_DEFAULT
    assert "1024&times;14&times;14" in table.value  # v1 layer3 at 224 px
    slider.value = 320  # v1: 320 -> 160 -> 80 -> 80, 40, 20, 10
    assert "Input 320&times;320" in table.value
    assert "2048&times;10&times;10" in table.value and "1024&times;14&times;14" not in table.value


def test_choosing_another_model_redraws_the_table():
    box = shape_explorer()
    dropdown, _, _, table = box.children
    dropdown.value = ("resnet18", None)
    assert "resnet18" in table.value and "512&times;7&times;7" in table.value
    assert "resnet50v2" not in table.value
