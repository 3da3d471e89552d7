"""Tests for resnet_course.evaluation: metrics against hand computations, and predict."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from resnet_course.evaluation import collect_predictions, evaluate, predict, topk_accuracy

# Six images, three classes: fixed logits (rows) and true labels.
LOGITS = torch.tensor(
    [
        [3.0, 1.0, 0.0],  # true 0, predicted 0
        [0.5, 2.0, 1.0],  # true 0, predicted 1 (0 is third)
        [0.0, 4.0, 1.0],  # true 1, predicted 1
        [2.0, 1.5, 0.0],  # true 1, predicted 0 (1 is second)
        [1.0, 0.0, 2.5],  # true 2, predicted 2
        [1.2, 0.1, 1.0],  # true 2, predicted 0 (2 is second)
    ]
)
TARGETS = torch.tensor([0, 0, 1, 1, 2, 2])


class FixedLogits(nn.Module):
    """A stand-in "model": each input is an index into a table of logits."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, index):
        return self.table[index.long().view(-1)]


def fixed_loader(batch_size=4):
    indices = torch.arange(len(TARGETS)).float().view(-1, 1, 1, 1)
    return DataLoader(TensorDataset(indices, TARGETS), batch_size=batch_size)


def hand_computed_metrics(logits, targets, num_classes):
    """Confusion matrix, precision and recall with plain loops over NumPy arrays."""
    predicted = np.argmax(logits.numpy(), axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=int)
    for t, p in zip(targets.numpy(), predicted):
        confusion[t][p] += 1
    precision, recall = [], []
    for c in range(num_classes):
        tp = sum(1 for t, p in zip(targets.numpy(), predicted) if t == c and p == c)
        predicted_c = sum(1 for p in predicted if p == c)
        actual_c = sum(1 for t in targets.numpy() if t == c)
        precision.append(tp / predicted_c if predicted_c else 0.0)
        recall.append(tp / actual_c if actual_c else 0.0)
    return confusion, precision, recall


def test_confusion_precision_recall_match_a_hand_computation():
    result = evaluate(FixedLogits(LOGITS), fixed_loader(), class_names=["a", "b", "c"], precision="fp32")
    confusion, precision, recall = hand_computed_metrics(LOGITS, TARGETS, 3)
    assert result["confusion"] == confusion.tolist() == [[1, 1, 0], [1, 1, 0], [1, 0, 1]]
    assert [r["precision"] for r in result["per_class"]] == pytest.approx(precision)
    assert [r["recall"] for r in result["per_class"]] == pytest.approx(recall)
    assert [r["support"] for r in result["per_class"]] == [2, 2, 2]
    assert [r["class"] for r in result["per_class"]] == ["a", "b", "c"]
    assert result["accuracy"] == pytest.approx(3 / 6)
    assert result["num_images"] == 6


def test_loss_is_mean_cross_entropy_computed_by_hand():
    result = evaluate(FixedLogits(LOGITS), fixed_loader(), precision="fp32")
    z = LOGITS.double().numpy()
    log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    expected = -np.mean(log_softmax[np.arange(6), TARGETS.numpy()])
    assert result["loss"] == pytest.approx(expected, rel=1e-6)


def test_topk_accuracy_counts_true_class_among_k_best():
    # true class rank per row: 1, 3, 1, 2, 1, 2 -> top-1 3/6, top-2 5/6, top-3 6/6
    assert topk_accuracy(LOGITS, TARGETS, (1, 2, 3)) == pytest.approx({1: 3 / 6, 2: 5 / 6, 3: 1.0})
    result = evaluate(FixedLogits(LOGITS), fixed_loader(), topk=(1, 2), precision="fp32")
    assert result["topk"] == pytest.approx({1: 0.5, 2: 5 / 6})
    with pytest.raises(ValueError, match="top-k"):
        topk_accuracy(LOGITS, TARGETS, (4,))


def test_a_class_never_predicted_gets_precision_zero():
    logits = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([0, 2, 1])
    model = FixedLogits(logits)
    loader = DataLoader(TensorDataset(torch.arange(3).float().view(-1, 1, 1, 1), targets), batch_size=2)
    result = evaluate(model, loader, precision="fp32")
    confusion, precision, recall = hand_computed_metrics(logits, targets, 3)
    assert result["confusion"] == confusion.tolist()
    assert [r["precision"] for r in result["per_class"]] == pytest.approx(precision) == [0.5, 1.0, 0.0]
    assert [r["recall"] for r in result["per_class"]] == pytest.approx(recall) == [1.0, 1.0, 0.0]


def test_collect_predictions_returns_fp32_logits_in_loader_order():
    logits, targets = collect_predictions(FixedLogits(LOGITS.half()), fixed_loader(batch_size=4), precision="fp32")
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, LOGITS.half().float())
    assert targets.tolist() == TARGETS.tolist()


def test_wrong_number_of_class_names_is_a_clear_error():
    with pytest.raises(ValueError, match="class names"):
        evaluate(FixedLogits(LOGITS), fixed_loader(), class_names=["a", "b"], precision="fp32")


# ------------------------------------------------------------------------------------------
# predict
# ------------------------------------------------------------------------------------------


class MeanColour(nn.Module):
    """A "model" whose logits are the mean of each colour channel: it predicts red, green or blue."""

    def forward(self, images):
        return images.mean(dim=(2, 3)) * 3


COLOURS = ["red", "green", "blue"]


def odd_images():
    """Pure colours in modes and sizes a learner's folder may hold, with the expected answer."""
    red_rgba = Image.new("RGBA", (50, 30), (255, 0, 0, 255))
    green_p = Image.new("RGB", (17, 64), (0, 255, 0)).convert("P")
    blue_cmyk = Image.new("RGB", (300, 200), (0, 0, 255)).convert("CMYK")
    red_strip = Image.new("RGB", (1000, 20), (255, 0, 0))  # a very wide image
    return [(red_rgba, "red"), (green_p, "green"), (blue_cmyk, "blue"), (red_strip, "red")]


def test_predict_handles_pil_images_of_any_mode_and_size():
    images, expected = zip(*odd_images())
    results = predict(MeanColour(), list(images), COLOURS, image_size=32, topk=3, precision="fp32")
    assert [r["label"] for r in results] == list(expected)
    assert [r["image"] for r in results] == ["image 0", "image 1", "image 2", "image 3"]
    for r in results:
        probabilities = [p for _, p in r["topk"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0)
        assert r["topk"][0] == (r["label"], r["probability"])


def test_predict_on_greyscale_and_16_bit_files(tmp_path):
    grey = tmp_path / "grey.png"
    Image.new("L", (33, 21), 128).save(grey)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(deep)
    red = tmp_path / "red.jpg"
    Image.new("RGB", (64, 48), (250, 5, 5)).save(red)
    results = predict(MeanColour(), [grey, deep, red], COLOURS, image_size=16, topk=2, precision="fp32")
    assert [r["image"] for r in results] == [str(grey), str(deep), str(red)]
    assert results[2]["label"] == "red"
    assert all(len(r["topk"]) == 2 and r["label"] in COLOURS for r in results)


def test_predict_probabilities_are_softmax_of_logits():
    image = Image.new("RGB", (8, 8), (200, 100, 50))
    [result] = predict(MeanColour(), image, COLOURS, image_size=8, topk=3, precision="fp32")
    from resnet_course.images import eval_transform

    logits = MeanColour()(eval_transform(8)(image)[None])[0].double()
    expected = torch.softmax(logits, 0).tolist()
    assert dict(result["topk"]) == pytest.approx(dict(zip(COLOURS, expected)), rel=1e-5)


def test_predict_on_real_photos(birds_sample):
    from resnet_course.birds import CLASS_NAMES
    from resnet_course.models import get_model

    paths = sorted(p for p in birds_sample.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    torch.manual_seed(0)
    results = predict(get_model("resnet18", num_classes=4), paths, CLASS_NAMES, image_size=64, precision="fp32")
    assert len(results) == len(paths) == 20
    assert all(r["label"] in CLASS_NAMES and 0 < r["probability"] <= 1 for r in results)
