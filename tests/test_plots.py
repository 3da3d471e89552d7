"""Every plot returns a labelled Figure with the expected content, and saves as a PNG."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from resnet_course import plots
from resnet_course.birds import CLASS_NAMES
from resnet_course.images import IMAGENET_MEAN, IMAGENET_STD, train_transform


@pytest.fixture
def close_figures():
    figures = []
    yield figures.append
    for fig in figures:
        plt.close(fig)


def history(epochs, offset=0.0):
    return [
        dict(
            epoch=e,
            train_loss=1.0 / e,
            train_acc=0.5 + 0.04 * e + offset,
            val_loss=1.2 / e,
            val_acc=0.45 + 0.03 * e + offset,
            lr=0.01,
            seconds=1.0,
        )
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
    assert acc.get_ylabel() == "accuracy (%)" and loss.get_ylabel() == "cross-entropy loss (log scale)"
    assert loss.get_yscale() == "log" and acc.get_yscale() == "linear"
    assert [line.get_label() for line in acc.lines] == ["training", "validation"]
    assert list(acc.lines[1].get_ydata()) == pytest.approx([100 * row["val_acc"] for row in history(10)])
    assert list(loss.lines[0].get_ydata()) == pytest.approx([row["train_loss"] for row in history(10)])
    assert_saves_png(fig, tmp_path)


def test_history_draws_the_chance_levels_it_is_given(close_figures):
    fig = plots.plot_history(history(3), num_classes=4, majority=0.27)
    close_figures(fig)
    acc, loss = fig.axes
    chance = {line.get_label(): line for line in acc.lines if line.get_label().startswith(("chance", "always"))}
    assert set(chance) == {"chance: 1/4 classes = 25 %", "always the majority class: 27 %"}
    assert list(chance["chance: 1/4 classes = 25 %"].get_ydata()) == pytest.approx([25.0, 25.0])
    assert list(chance["always the majority class: 27 %"].get_ydata()) == pytest.approx([27.0, 27.0])
    legend = [t.get_text() for t in acc.get_legend().get_texts()]
    assert "chance: 1/4 classes = 25 %" in legend and "always the majority class: 27 %" in legend
    assert len(loss.lines) == 2  # no chance line on the loss axis
    plain = plots.plot_history(history(3))
    close_figures(plain)
    assert len(plain.axes[0].lines) == 2


def test_histories_draw_the_chance_level_once(close_figures):
    fig = plots.plot_histories({"a": history(3), "b": history(3)}, num_classes=5)
    close_figures(fig)
    chance = [line for line in fig.axes[0].lines if line.get_label().startswith("chance")]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == pytest.approx([20.0, 20.0])


@pytest.mark.parametrize("bad", [dict(num_classes=1), dict(num_classes=2.5), dict(majority=0.0), dict(majority=27)])
def test_bad_chance_levels_are_refused(bad):
    with pytest.raises(ValueError, match="num_classes|majority"):
        plots.plot_history(history(2), **bad)


def test_one_validation_loss_spike_does_not_flatten_the_loss_plot(close_figures):
    rows = history(6)
    rows[2]["val_loss"] = 1000.0  # one bad epoch
    fig = plots.plot_history(rows)
    close_figures(fig)
    loss = fig.axes[1]
    low, high = loss.get_ylim()
    # on a log axis the spike takes a share of the height in orders of magnitude: the other
    # epochs (0.17 to 1.2) still span a visible part, not a sliver at the bottom
    share = (np.log10(1.2) - np.log10(1.0 / 6)) / (np.log10(high) - np.log10(low))
    assert loss.get_yscale() == "log" and share > 0.2


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
    rows = [fig.axes[i * 3 : i * 3 + 3] for i in range(4)]
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
    records = [
        dict(depth=d, residual=r, train_loss=[2.0, 1.5, 1.0], seconds=1) for d in (8, 20, 56) for r in (False, True)
    ]
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


def _propagation(unit, seed, scale):
    from resnet_course.ablation import Propagation

    return Propagation(
        unit,
        seed,
        std=[1.0, 2.0 * scale, 4.0 * scale],
        input_corr=[1.0, 0.5, 0.25],
        grad=[3.0 * scale, 2.0, 1.0],
        negative=[0.5, 0.5, 0.5],
        min_step=-1.0,
    )


def test_signal_propagation_plot_shows_each_ordering_with_its_seed_band(tmp_path, close_figures):
    from resnet_course.ablation import UNIT_LABELS

    results = [_propagation(u, s, scale) for u in ("original", "full_preact") for s, scale in ((0, 1.0), (1, 2.0))]
    zeroed = [_propagation("full_preact", 0, 1.0)]
    fig = plots.plot_signal_propagation(results, zeroed)
    close_figures(fig)
    assert len(fig.axes) == 6  # two rows (default, zeroed branches) of three measures
    std_ax, corr_ax, grad_ax = fig.axes[:3]
    assert std_ax.get_yscale() == "log" and grad_ax.get_yscale() == "log" and corr_ax.get_yscale() == "linear"
    assert "log scale" in std_ax.get_ylabel() and "log scale" in grad_ax.get_ylabel()
    assert [line.get_label() for line in std_ax.lines] == [UNIT_LABELS["original"], UNIT_LABELS["full_preact"]]
    assert list(std_ax.lines[0].get_ydata()) == pytest.approx([1.0, 3.0, 6.0])  # mean of the two seeds
    assert list(grad_ax.lines[1].get_ydata()) == pytest.approx([4.5, 2.0, 1.0])
    assert len(std_ax.collections) == 2  # a min-max band per ordering with two seeds
    assert len(fig.axes[3].collections) == 0 and len(fig.axes[3].lines) == 1  # one seed: no band
    for ax in fig.axes:
        assert ax.get_xlabel().startswith("unit l") and ax.get_ylabel() and ax.get_title()
    assert fig.get_suptitle()
    assert_saves_png(fig, tmp_path)


def test_signal_propagation_plot_without_results_is_refused():
    with pytest.raises(ValueError, match="no propagation results"):
        plots.plot_signal_propagation([])


def test_feature_maps_one_row_per_stage_strongest_channels_first(tmp_path, close_figures):
    stem = torch.zeros(16, 8, 8)
    stem[5] = 3.0
    stem[9] = 2.0
    maps = {"stem": stem, "layer1": torch.rand(1, 32, 4, 4), "layer4": torch.rand(64, 2, 2)}
    fig = plots.plot_feature_maps(maps, n_channels=4)
    close_figures(fig)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 12
    assert panels[0].get_ylabel() == "stem\n16×8×8"
    assert panels[8].get_ylabel() == "layer4\n64×2×2"
    assert [panels[i].get_title() for i in range(2)] == ["channel 5", "channel 9"]
    assert_saves_png(fig, tmp_path)


def test_feature_maps_share_one_colour_scale_per_stage_with_its_colour_bar(close_figures):
    weak, strong = torch.zeros(8, 4, 4), torch.zeros(8, 4, 4)
    weak[0], weak[1, 0, 0] = 0.5, 1.0  # channel 1 peaks higher, channel 0 is larger on average
    strong[2] = 40.0
    fig = plots.plot_feature_maps({"layer1": weak, "layer2": strong}, n_channels=2)
    close_figures(fig)
    panels = [ax for ax in fig.axes if ax.images]
    colour_bars = [ax for ax in fig.axes if not ax.images and ax.get_label() == "<colorbar>"]
    assert len(panels) == 4 and len(colour_bars) == 2  # one bar per stage
    limits = [ax.images[0].get_clim() for ax in panels]
    assert limits[0] == limits[1] == (0.0, 1.0)  # the stage's own range, shared by its channels
    assert limits[2] == limits[3] and limits[2][1] == 40.0
    assert [round(b.get_ylim()[1], 3) for b in colour_bars] == [1.0, 40.0]


def test_histories_legend_sits_below_the_axes_and_hides_no_point(close_figures):
    fig = plots.plot_histories({f"run {i}": history(6, offset=0.02 * i) for i in range(3)}, num_classes=4)
    close_figures(fig)
    FigureCanvasAgg(fig).draw()  # lays the figure out as saving it would
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    legend = fig.legends[0].get_window_extent()
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[:2] == ["run 0 training", "run 0 validation"] and "chance: 1/4 classes = 25 %" in texts
    for ax in fig.axes:
        assert not legend.overlaps(ax.get_window_extent().frozen()), "the legend covers an axis"


@pytest.mark.parametrize("ncols", [1, 2, 4])
def test_prediction_grid_title_fits_the_figure(ncols, close_figures):
    images = [torch.zeros(3, 8, 8)] * ncols
    fig = plots.plot_prediction_grid(images, [0] * ncols, [0] * ncols, CLASS_NAMES, ncols=ncols)
    close_figures(fig)
    FigureCanvasAgg(fig).draw()
    title, figure = fig._suptitle.get_window_extent(), fig.bbox
    assert figure.x0 <= title.x0 and title.x1 <= figure.x1, f"the title is clipped at {ncols} column(s)"


def test_gradcam_overlays_heatmap_on_each_image(tmp_path, close_figures):
    images = [normalized(torch.rand(3, 24, 24)) for _ in range(3)]
    cams = torch.rand(3, 24, 24)
    fig = plots.plot_gradcam(images, cams, titles=["a", "b", "c"])
    close_figures(fig)
    assert len(fig.axes) == 4  # three images and the colorbar
    colorbar = fig.axes[3]
    assert "own maximum" in colorbar.get_ylabel()
    assert colorbar.get_ylim() == pytest.approx((0, 1))
    assert "normalised by its own maximum" in fig.get_suptitle()
    for ax, title, cam in zip(fig.axes[:3], "abc", cams):
        assert len(ax.images) == 2  # the photo, then the heatmap over it
        assert 0 < ax.images[1].get_alpha() < 1
        np.testing.assert_allclose(np.asarray(ax.images[1].get_array()), cam.numpy())
        assert ax.get_title() == title
    assert_saves_png(fig, tmp_path)


def test_gradcam_needs_one_heatmap_per_image():
    with pytest.raises(ValueError, match="2 images and 1 heatmaps"):
        plots.plot_gradcam([torch.zeros(3, 4, 4)] * 2, [torch.zeros(4, 4)])


def test_photo_figures_are_stored_as_small_jpegs(birds_sample, close_figures):
    import io

    from IPython.core.formatters import DisplayFormatter

    photos = sorted(p for p in birds_sample.rglob("*.jpg"))[:8]
    fig = plots.plot_sample_grid([(p, i % 4) for i, p in enumerate(photos)], CLASS_NAMES, per_class=2)
    close_figures(fig)
    photo = plots.as_photo(fig)
    data, _ = DisplayFormatter().format(photo)
    assert "image/jpeg" in data and "image/png" not in data  # what a notebook keeps
    jpeg = photo.jpeg()
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    width, height = fig.get_size_inches()
    assert image.size == pytest.approx((width * plots.PHOTO_DPI, height * plots.PHOTO_DPI), abs=1)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=plots.PHOTO_DPI)
    assert len(jpeg) < len(png.getvalue()) / 2  # photos: JPEG is much smaller than PNG
    with pytest.raises(ValueError, match="quality"):
        plots.as_photo(fig, quality=100)
