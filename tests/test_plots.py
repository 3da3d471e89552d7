"""Every plot returns a labelled Figure with the expected content, and saves as a PNG."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from resnet_course import plots
from resnet_course.data import CLASS_NAMES, IMAGENET_MEAN, IMAGENET_STD, train_transform


@pytest.fixture
def close_figures():
    figures = []
    yield figures.append
    for fig in figures:
        plt.close(fig)


def history(epochs, offset=0.0):
    return [
        dict(epoch=e, train_loss=1.0 / e, train_acc=0.5 + 0.04 * e + offset, val_loss=1.2 / e,
             val_acc=0.45 + 0.03 * e + offset, lr=0.01, seconds=1.0)
        for e in range(1, epochs + 1)
    ]


def assert_saves_png(fig, tmp_path, name="figure.png"):
    path = tmp_path / name
    fig.savefig(path)
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"


def normalized(rgb01: torch.Tensor) -> torch.Tensor:
    return (rgb01 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def test_plots_never_touch_pyplot():
    before = plt.get_fignums()
    fig = plots.plot_history(history(3))
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == before  # a notebook shows the returned figure once, not twice


def test_history_shows_accuracy_and_loss_side_by_side(tmp_path, close_figures):
    fig = plots.plot_history(history(10))
    close_figures(fig)
    acc, loss = fig.axes
    assert acc.get_title() == "Accuracy" and loss.get_title() == "Loss"
    assert acc.get_xlabel() == loss.get_xlabel() == "epoch"
    assert acc.get_ylabel() == "accuracy (%)" and "loss" in loss.get_ylabel()
    assert [line.get_label() for line in acc.lines] == ["training", "validation"]
    assert list(acc.lines[1].get_ydata()) == pytest.approx([100 * row["val_acc"] for row in history(10)])
    assert list(loss.lines[0].get_ydata()) == pytest.approx([row["train_loss"] for row in history(10)])
    assert_saves_png(fig, tmp_path)


def test_history_of_one_epoch_shows_markers(close_figures):
    fig = plots.plot_history(history(1))
    close_figures(fig)
    for ax in fig.axes:
        assert len(ax.lines) == 2
        assert all(line.get_marker() == "o" for line in ax.lines)


def test_history_reads_history_json(tmp_path, close_figures):
    import json

    path = tmp_path / "history.json"
    path.write_text(json.dumps(history(2)))
    fig = plots.plot_history(path)
    close_figures(fig)
    assert list(fig.axes[1].lines[1].get_ydata()) == pytest.approx([1.2, 0.6])


def test_empty_history_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one epoch"):
        plots.plot_history([])


def test_histories_compare_models_on_the_same_axes(tmp_path, close_figures):
    fig = plots.plot_histories({"ResNet50": history(4), "ResNet50V2": history(4, offset=0.05)})
    close_figures(fig)
    acc, loss = fig.axes
    assert len(acc.lines) == len(loss.lines) == 4
    labels = [line.get_label() for line in acc.lines]
    assert labels == ["ResNet50 training", "ResNet50 validation", "ResNet50V2 training", "ResNet50V2 validation"]
    # one colour per model, solid for training and dashed for validation
    assert acc.lines[0].get_color() == acc.lines[1].get_color() != acc.lines[2].get_color()
    assert acc.lines[0].get_linestyle() == "-" and acc.lines[1].get_linestyle() == "--"
    assert_saves_png(fig, tmp_path)


def cell_texts(ax):
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}


def test_confusion_matrix_cells_show_the_counts(tmp_path, close_figures):
    cm = np.array([[20, 2, 1, 0], [3, 18, 2, 1], [0, 1, 19, 2], [1, 0, 2, 30]])
    fig = plots.plot_confusion_matrix(torch.tensor(cm), CLASS_NAMES)
    close_figures(fig)
    ax = fig.axes[0]
    texts = cell_texts(ax)
    assert len(texts) == 16
    assert all(texts[i, j] == str(cm[i, j]) for i in range(4) for j in range(4))
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASS_NAMES)
    assert "accuracy 85.3%" in ax.get_title()  # 87 of 102 on the diagonal
    assert_saves_png(fig, tmp_path)


def test_normalized_confusion_matrix_shows_row_fractions_and_counts(close_figures):
    cm = np.array([[3, 1], [0, 4]])
    fig = plots.plot_confusion_matrix(cm, ["a", "b"], normalize=True)
    close_figures(fig)
    texts = cell_texts(fig.axes[0])
    assert texts[0, 0] == "75%\n(3)" and texts[0, 1] == "25%\n(1)" and texts[1, 1] == "100%\n(4)"


def test_confusion_matrix_must_match_the_class_names():
    with pytest.raises(ValueError, match=r"expected \(4, 4\)"):
        plots.plot_confusion_matrix(np.eye(3), CLASS_NAMES)


def test_prediction_grid_marks_mistakes_in_red(tmp_path, close_figures):
    images = [normalized(torch.rand(3, 32, 32)) for _ in range(5)]
    true = [0, 1, 2, 3, 0]
    pred = [0, 2, 2, 1, 0]
    probs = torch.full((5, 4), 0.1)
    probs[torch.arange(5), torch.tensor(pred)] = 0.7
    fig = plots.plot_prediction_grid(images, true, pred, CLASS_NAMES, probs=probs, ncols=3)
    close_figures(fig)
    assert len(fig.axes) == 5
    red = to_rgba(plots.WRONG_COLOR)
    for ax, t, p in zip(fig.axes, true, pred):
        title = ax.title
        assert title.get_text() == f"true: {CLASS_NAMES[t]}\npredicted: {CLASS_NAMES[p]} (70%)"
        assert (to_rgba(title.get_color()) == red) == (t != p)
        assert (to_rgba(ax.spines["top"].get_edgecolor()) == red) == (t != p)
    assert "3 of 5 right" in fig._suptitle.get_text()
    assert_saves_png(fig, tmp_path)


def test_prediction_grid_undoes_the_imagenet_normalisation(close_figures):
    rgb = torch.rand(3, 8, 8)
    fig = plots.plot_prediction_grid([normalized(rgb)], [1], [1], CLASS_NAMES)
    close_figures(fig)
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(shown), rgb.permute(1, 2, 0).numpy(), atol=1e-5)


def test_prediction_grid_takes_pil_images(close_figures):
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    fig = plots.plot_prediction_grid([image, image], [0, 1], [0, 1], CLASS_NAMES)
    close_figures(fig)
    assert fig.axes[0].images[0].get_array().shape == (10, 20, 3)


def test_prediction_grid_needs_one_label_per_image():
    with pytest.raises(ValueError, match="2 images, 2 true labels, 1 predictions"):
        plots.plot_prediction_grid([torch.zeros(3, 4, 4)] * 2, [0, 1], [0], CLASS_NAMES)


class ListDataset:
    def __init__(self, items):
        self.items = items
        self.targets = [label for _, label in items]

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self):
        return len(self.items)


def test_sample_grid_has_one_row_per_class(tmp_path, close_figures):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    items = [(Image.new("RGB", (16, 16), colours[c]), c) for _ in range(5) for c in range(4)]
    fig = plots.plot_sample_grid(ListDataset(items), CLASS_NAMES, per_class=3)
    close_figures(fig)
    assert len(fig.axes) == 12
    rows = [fig.axes[i * 3: i * 3 + 3] for i in range(4)]
    for c, row in enumerate(rows):
        assert row[0].get_ylabel() == CLASS_NAMES[c]
        for ax in row:
            assert tuple(ax.images[0].get_array()[0, 0]) == colours[c]
    assert_saves_png(fig, tmp_path)


def test_sample_grid_takes_plain_pairs_and_real_photos(birds_sample, close_figures):
    items = [(path, CLASS_NAMES.index(path.parent.name)) for path in sorted(birds_sample.glob("*/*.jpg"))]
    fig = plots.plot_sample_grid(items, CLASS_NAMES, per_class=2)
    close_figures(fig)
    assert sum(len(ax.images) for ax in fig.axes) == 8


def test_augmentation_preview_shows_the_original_and_n_variants(tmp_path, close_figures):
    image = Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8))
    state = torch.random.get_rng_state()
    fig = plots.plot_augmentations(image, train_transform(32), n=6)
    close_figures(fig)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random state is untouched
    assert len(fig.axes) == 7
    assert fig.axes[0].get_title() == "original"
    assert fig.axes[0].images[0].get_array().shape == (40, 50, 3)
    assert all(ax.images[0].get_array().shape == (32, 32, 3) for ax in fig.axes[1:])
    again = plots.plot_augmentations(image, train_transform(32), n=6)
    close_figures(again)
    np.testing.assert_array_equal(fig.axes[3].images[0].get_array(), again.axes[3].images[0].get_array())
    assert_saves_png(fig, tmp_path)


def test_gradient_norms_one_line_per_network_on_a_log_axis(tmp_path, close_figures):
    norms = {
        "sigmoid": [(f"layer{i}", 10.0 ** (i - 10)) for i in range(10)],
        "residual": [0.1] * 10,
    }
    fig = plots.plot_gradient_norms(norms)
    close_figures(fig)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.lines] == ["sigmoid", "residual"]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([10.0 ** (i - 10) for i in range(10)])
    assert list(ax.lines[0].get_xdata()) == list(range(1, 11))
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert_saves_png(fig, tmp_path)


def test_training_losses_style_by_family_colour_by_depth(tmp_path, close_figures):
    records = [dict(depth=d, residual=r, train_loss=[2.0, 1.5, 1.0], seconds=1)
               for d in (8, 20, 56) for r in (False, True)]
    fig = plots.plot_training_losses(records)
    close_figures(fig)
    (ax,) = fig.axes
    assert len(ax.lines) == 6
    by_label = {line.get_label(): line for line in ax.lines}
    assert by_label["plain, 20 layers"].get_linestyle() == "--"
    assert by_label["residual, 20 layers"].get_linestyle() == "-"
    assert to_rgba(by_label["plain, 20 layers"].get_color()) == to_rgba(by_label["residual, 20 layers"].get_color())
    assert to_rgba(by_label["plain, 56 layers"].get_color()) == to_rgba(by_label["residual, 56 layers"].get_color())
    assert to_rgba(by_label["plain, 8 layers"].get_color()) != to_rgba(by_label["plain, 56 layers"].get_color())
    assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "training loss"
    assert_saves_png(fig, tmp_path)


def test_ablation_puts_our_run_next_to_the_paper(tmp_path, close_figures):
    measured = {"original": [30.0, 32.0], "bn_after_add": 35.0, "relu_before_add": 33.0,
                "relu_only_preact": 30.5, "full_preact": 29.0}
    fig = plots.plot_ablation(measured)
    close_figures(fig)
    paper_ax, ours_ax = fig.axes
    heights = [bar.get_height() for bar in paper_ax.patches]
    assert heights == pytest.approx([6.61, 8.17, 7.84, 6.71, 6.37, 5.93, 6.50, 6.14, 5.91, 5.46])
    assert [bar.get_height() for bar in ours_ax.patches] == pytest.approx([31.0, 35.0, 33.0, 30.5, 29.0])
    assert [t.get_text() for t in ours_ax.get_xticklabels()][-1] == "full\npre-activation"
    for ax in fig.axes:
        assert ax.get_ylabel() == "test error (%)" and ax.get_title()
    assert_saves_png(fig, tmp_path)


def test_ablation_rejects_unknown_variants():
    with pytest.raises(ValueError, match="preact_full"):
        plots.plot_ablation({"preact_full": 5.0})


def test_feature_maps_one_row_per_stage_strongest_channels_first(tmp_path, close_figures):
    stem = torch.zeros(16, 8, 8)
    stem[5] = 3.0
    stem[9] = 2.0
    maps = {"stem": stem, "layer1": torch.rand(1, 32, 4, 4), "layer4": torch.rand(64, 2, 2)}
    fig = plots.plot_feature_maps(maps, n_channels=4)
    close_figures(fig)
    assert len(fig.axes) == 12
    assert sum(len(ax.images) for ax in fig.axes) == 12
    assert fig.axes[0].get_ylabel() == "stem\n16×8×8"
    assert fig.axes[8].get_ylabel() == "layer4\n64×2×2"
    assert [fig.axes[i].get_title() for i in range(2)] == ["channel 5", "channel 9"]
    assert_saves_png(fig, tmp_path)


def test_gradcam_overlays_heatmap_on_each_image(tmp_path, close_figures):
    images = [normalized(torch.rand(3, 24, 24)) for _ in range(3)]
    cams = torch.rand(3, 24, 24)
    fig = plots.plot_gradcam(images, cams, titles=["a", "b", "c"])
    close_figures(fig)
    assert len(fig.axes) == 3
    for ax, title, cam in zip(fig.axes, "abc", cams):
        assert len(ax.images) == 2  # the photo, then the heatmap over it
        assert 0 < ax.images[1].get_alpha() < 1
        np.testing.assert_allclose(np.asarray(ax.images[1].get_array()), cam.numpy())
        assert ax.get_title() == title
    assert_saves_png(fig, tmp_path)


def test_gradcam_needs_one_heatmap_per_image():
    with pytest.raises(ValueError, match="2 images and 1 heatmaps"):
        plots.plot_gradcam([torch.zeros(3, 4, 4)] * 2, [torch.zeros(4, 4)])

