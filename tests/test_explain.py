"""Feature maps per stage and Grad-CAM (notebook 08), checked against independent computations."""

import pytest
import torch
import torchvision
from torch import nn

from resnet_course.explain import default_gradcam_layer, grad_cam, stage_feature_maps
from resnet_course.models import get_model
from resnet_course.stages import stage_shapes


class LinearCamNet(nn.Module):
    """Input -> identity "stage" -> global average pool -> linear.

    The class score is y_c = sum_k W[c, k] mean_ij x_k(i, j), so dy_c/dx_k(i, j) = W[c, k] / (h w)
    and Grad-CAM reduces to the original CAM (Zhou et al. 2016): ReLU(sum_k W[c, k] x_k), known
    without running any hooks.
    """

    def __init__(self, channels: int = 5, num_classes: int = 3, head_preact: bool = False):
        super().__init__()
        self.features = nn.Identity()
        self.fc = nn.Linear(channels, num_classes)
        before = [nn.ReLU()] if head_preact else []
        self.head = nn.Sequential(*before, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), self.fc)

    def stages(self):
        return [("stem", nn.Identity()), ("features", self.features), ("head", self.head)]

    def forward(self, x):
        return self.head(self.features(x))


def expected_cam(weights_c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    cam = torch.relu(torch.einsum("k,khw->hw", weights_c, x))
    return cam / cam.max()


def test_grad_cam_equals_the_analytic_cam_of_a_linear_head():
    torch.manual_seed(0)
    model = LinearCamNet()
    x = torch.randn(2, 5, 6, 7)
    cams = grad_cam(model, x, class_idx=[2, 0])
    assert cams.shape == (2, 6, 7)
    torch.testing.assert_close(cams[0], expected_cam(model.fc.weight[2].detach(), x[0]))
    torch.testing.assert_close(cams[1], expected_cam(model.fc.weight[0].detach(), x[1]))


def test_grad_cam_uses_the_predicted_class_by_default():
    torch.manual_seed(1)
    model = LinearCamNet()
    x = torch.randn(3, 5, 4, 4)
    predicted = model(x).argmax(1)
    cams = grad_cam(model, x)
    for i in range(3):
        torch.testing.assert_close(cams[i], expected_cam(model.fc.weight[predicted[i]].detach(), x[i]))


def test_grad_cam_looks_after_a_final_relu_in_the_head():
    # With a ReLU before pooling (as v2's post_relu), the map the classifier sees is relu(x).
    torch.manual_seed(2)
    model = LinearCamNet(head_preact=True)
    assert default_gradcam_layer(model) is model.head[0]
    x = torch.randn(1, 5, 5, 5)
    cam = grad_cam(model, x, class_idx=1)[0]
    # The target is the ReLU's output A = relu(x), which is pooled directly: dy_c/dA = W[c] / (h w).
    torch.testing.assert_close(cam, expected_cam(model.fc.weight[1].detach(), torch.relu(x[0])))


def direct_gradcam(features_fn, head_fn, images, classes):
    """Grad-CAM computed without hooks: split the forward pass by hand at the target layer."""
    with torch.no_grad():
        activations = features_fn(images)
    activations.requires_grad_(True)
    logits = head_fn(activations)
    score = logits[torch.arange(len(classes)), classes].sum()
    (gradients,) = torch.autograd.grad(score, activations)
    cam = torch.relu((gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(1, keepdim=True))
    cam = nn.functional.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    assert (cam.amax(dim=(1, 2)) > 0).all(), "pick classes with some positive evidence"
    return (cam / cam.amax(dim=(1, 2), keepdim=True)).detach()


@pytest.mark.parametrize("seed", [3, 4, 5])  # not one lucky draw of weights and images
def test_grad_cam_on_torchvision_resnet18_matches_a_direct_autograd_computation(seed):
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    images = torch.randn(2, 3, 64, 64)
    classes = torch.tensor([0, 3])

    def features(x):
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        return model.layer4(model.layer3(model.layer2(model.layer1(x))))

    def head(a):
        return model.fc(torch.flatten(model.avgpool(a), 1))

    expected = direct_gradcam(features, head, images, classes)
    torch.testing.assert_close(grad_cam(model, images, class_idx=classes), expected)
    torch.testing.assert_close(grad_cam(model, images, target_layer="layer4", class_idx=classes), expected)


def test_grad_cam_on_resnet50v2_looks_after_post_bn_relu():
    torch.manual_seed(4)
    model = get_model("resnet50v2", num_classes=4).eval()
    images = torch.randn(1, 3, 96, 96)
    classes = torch.tensor([3])

    def features(x):
        for _name, stage in model.stages()[:-1]:
            x = stage(x)
        return model.post_relu(model.post_bn(x))

    def head(a):
        return model.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(a, 1), 1))

    expected = direct_gradcam(features, head, images, classes)
    torch.testing.assert_close(grad_cam(model, images, class_idx=classes), expected)


def test_grad_cam_is_in_0_1_at_input_size_and_leaves_the_model_as_it_was():
    torch.manual_seed(5)
    model = get_model("resnet18", num_classes=4)
    model.train()
    model.layer1[0].bn1.eval()  # a module in its own mode must keep it
    running_mean = model.bn1.running_mean.clone()
    hooks_before = {name: len(m._forward_hooks) for name, m in model.named_modules()}
    cams = grad_cam(model, torch.randn(3, 3, 48, 40))
    assert cams.shape == (3, 48, 40)
    assert cams.min() >= 0 and cams.max() <= 1
    assert torch.allclose(cams.amax(dim=(1, 2)), torch.ones(3))
    assert model.training and not model.layer1[0].bn1.training
    assert torch.equal(model.bn1.running_mean, running_mean)  # ran in eval mode: BN stats untouched
    assert all(p.grad is None for p in model.parameters())
    assert {name: len(m._forward_hooks) for name, m in model.named_modules()} == hooks_before


def test_grad_cam_removes_its_hook_when_it_fails():
    model = torchvision.models.resnet18(weights=None, num_classes=4)
    with pytest.raises(ValueError, match="between 0 and 3"):
        grad_cam(model, torch.randn(1, 3, 32, 32), class_idx=7)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_grad_cam_rejects_a_layer_that_runs_twice():
    model = get_model("resnet18", num_classes=4)
    with pytest.raises(ValueError, match="ran 2 times"):
        grad_cam(model, torch.randn(1, 3, 32, 32), target_layer="layer4.0.relu")
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_grad_cam_names_the_stages_when_the_layer_is_unknown():
    model = get_model("resnet18", num_classes=4)
    with pytest.raises(ValueError, match="layer4"):
        grad_cam(model, torch.randn(1, 3, 32, 32), target_layer="conv5")


def test_grad_cam_works_on_a_frozen_model():
    torch.manual_seed(6)
    model = LinearCamNet()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 5, 3, 3)
    torch.testing.assert_close(grad_cam(model, x, class_idx=0)[0], expected_cam(model.fc.weight[0], x[0]))
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet18", "resnet50v2"])
def test_feature_maps_have_the_stage_output_shapes(name):
    model = get_model(name, num_classes=4)
    maps = stage_feature_maps(model, torch.randn(3, 64, 64))
    rows = stage_shapes(model, input_size=64)
    expected = {row["stage"]: row["shape"] for row in rows if row["stage"] != "head"}
    assert {stage: tuple(m.shape) for stage, m in maps.items()} == expected
    assert list(maps) == [row["stage"] for row in rows if row["stage"] != "head"]


def test_feature_maps_of_torchvision_resnet_match_its_layers():
    torch.manual_seed(7)
    model = torchvision.models.resnet18(weights=None).eval()
    image = torch.randn(3, 64, 64)
    maps = stage_feature_maps(model, image)
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(image[None]))))
        torch.testing.assert_close(maps["stem"], x[0])
        for i in range(1, 5):
            x = getattr(model, f"layer{i}")(x)
            torch.testing.assert_close(maps[f"layer{i}"], x[0])
