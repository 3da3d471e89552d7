"""resnet_course: the small, tested package behind the ResNet course notebooks.

Modules, each named for what it holds:
``config`` (paths, fast mode), ``blocks`` (residual blocks), ``models`` (ResNet v1/v2 and the
small CIFAR-style nets), ``porting`` (Keras' ResNet50V2 weights into ours, a naive port's slips),
``stages`` (stage shapes, parameters, FLOPs), ``gradients`` (gradient norms and the depth
demos), ``ablation`` (the five unit orderings), ``widgets`` (the shape explorer), ``birds`` (the
four classes), ``data`` (the bird dataset), ``standin`` (its offline stand-in), ``device``
(device, precision, memory layout), ``training`` (fit, checkpoints), ``evaluation`` (metrics,
predict), ``runs`` (train or load, run tables), ``plots`` (one figure per idea), ``explain``
(feature maps, Grad-CAM), ``checkers`` (exercise checkers), ``tables`` (plain-text tables),
``cli`` (the command line).
"""

__version__ = "0.1.0"
