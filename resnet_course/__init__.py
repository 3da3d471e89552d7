"""resnet_course: the small, tested package behind the ResNet course notebooks.

Modules, each named for what it holds:

- the networks: ``blocks`` (residual blocks and the five unit orderings), ``models`` (ResNet
  v1/v2 and the small CIFAR-style nets), ``porting`` (Keras' ResNet50V2 weights into ours, a naive
  port's slips), ``imagenet`` (the published ImageNet weights files: which, where, download),
  ``pretrained`` (weights files and course checkpoints as starting weights), ``finetune`` (a
  frozen backbone, the linear probe);
- looking at them: ``stages`` (stage shapes, parameters, FLOPs), ``gradients`` (gradient norms and
  the depth demos), ``ablation`` (the unit orderings at initialisation), ``tracing`` (what a
  block's forward does, read with torch.fx), ``diagrams`` (blocks drawn from their own code),
  ``widgets`` (the shape explorer), ``explain`` (feature maps, Grad-CAM), ``plots`` (one figure
  per idea), ``tables`` (plain-text tables);
- the data: ``birds`` (the four classes), ``data`` (finding, checking, splitting and loading a
  folder of class folders), ``images`` (opening image files, transforms, normalisations),
  ``kaggle`` (the Kaggle download's four classes), ``standin`` (the offline stand-in),
  ``drawing`` (the pen both drawn sets share), ``pretraining`` (the drawn set of other species);
- training: ``config`` (paths, fast mode, settings), ``device`` (device, precision, memory
  layout), ``recipe`` (optimiser, weight decay, schedule, and the one check of a recipe),
  ``training`` (``fit``: the training step, one epoch, resume), ``distributed`` (several
  processes under torchrun), ``checkpoints`` (the run folder and the checkpoint format),
  ``runfolder`` (crash-safe writes, one training per folder), ``evaluation`` (metrics, a trained
  model read back, predict), ``runs`` (train or load, run tables), ``comparison`` (several seeds
  per model), ``transfer`` (notebook 09's experiment: pretraining on the drawn set, then from
  scratch, linear probe and fine-tuning at fewer labels);
- ``checkers`` (exercise checkers), ``cli`` (the command line) and ``arguments`` (its options).
"""

__version__ = "0.1.0"
