"""resnet_course: the small, tested package behind the ResNet course notebooks.

Modules, each named for what it holds:
``config`` (paths, fast mode), ``blocks`` (residual blocks), ``models`` (ResNet v1/v2 and the
small CIFAR-style nets), ``stages`` (stage shapes, parameters, FLOPs), ``gradients`` (gradient
norms for the depth demos), ``widgets`` (the shape explorer), ``birds`` (the four classes),
``data`` (the bird dataset), ``standin`` (its offline stand-in), ``device`` (device, precision,
memory layout), ``training`` (fit, checkpoints), ``evaluation`` (metrics, predict), ``plots``
(one figure per idea), ``checkers`` (exercise checkers).
"""

__version__ = "0.1.0"
