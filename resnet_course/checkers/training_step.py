"""Checker for a learner's training step (notebook 06): one batch of the course's recipe.

``step(model, images, labels, optimizer, scheduler) -> loss`` runs the model in train mode,
computes the cross-entropy of the raw logits, zeroes the gradients, back-propagates, steps the
optimizer and then the learning-rate scheduler (every batch), and returns the batch's loss. The
checker runs it for three consecutive batches on a tiny conv → BN → linear network and compares
everything with a reference step written here: the returned losses, the weights and momentum
buffers, BatchNorm's running statistics, the gradients left behind and the learning rate. The
order of the calls (recorded by the checker's own model, optimizer and scheduler) names the
mistake when the numbers differ.

Accepted variants: ``zero_grad()`` at the start, after the forward pass or after ``step()``;
``set_to_none`` either way, on the optimizer or the model; ``model.train()`` called or not; the
loss returned as a tensor, a detached tensor or a float; ``nn.CrossEntropyLoss`` or
``F.cross_entropy`` (or ``F.nll_loss`` of ``log_softmax``); one-hot float targets.

The wrong answers it names are listed in :data:`TRAIN_STEP_MISTAKES` (tested one by one).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .core import CheckResult, _first_line, _seeded

#: The wrong training steps the checker names, as (mistake, words of its ✗ message).
TRAIN_STEP_MISTAKES = (
    ("no zero_grad: gradients pile up from the 2nd batch on", "the gradients are never zeroed"),
    ("optimizer.step() before loss.backward()", "optimizer.step() runs before loss.backward()"),
    ("zero_grad() between backward() and step()", "zero_grad() runs between loss.backward() and optimizer.step()"),
    ("optimizer.step() never called", "optimizer.step() is never called"),
    ("optimizer.step() called twice", "optimizer.step() runs 2 times"),
    ("softmax before cross_entropy", "cross_entropy receives softmax output"),
    ("log_softmax before cross_entropy", "cross_entropy receives log_softmax output"),
    ("nll_loss on probabilities (softmax, no log)", "nll_loss receives softmax output"),
    ("model in eval mode during the step", "the model is in eval mode during the forward pass"),
    ("the step leaves the model in eval mode", "the step leaves the model in eval mode"),
    ("scheduler not stepped", "scheduler.step() is never called"),
    ("scheduler stepped twice per batch", "scheduler.step() runs 2 times"),
    ("scheduler stepped before the optimizer", "scheduler.step() runs before optimizer.step()"),
    ("backward() twice (retain_graph=True)", "loss.backward() runs 2 times"),
    ("backward() twice without retain_graph", "backward() ran twice through the same graph"),
    ("returns None", "the step returns None"),
    ("returns the accuracy", "the step returns the batch's accuracy"),
    ("returns the logits", "the step returns a tensor of shape"),
    ("returns the previous batch's loss", "the step returns the previous batch's loss"),
    ("returns the loss after the update", "the step returns the loss after the update"),
    ("reduction='sum'", "reduction='sum'"),
    ("targets from the model's own predictions (argmax)", "the model's own predictions"),
    ("shuffled or otherwise wrong labels", "the targets passed to the loss are not the batch's labels"),
    ("one-hot targets as class indices (long)", "one-hot targets of an integer type"),
    ("forward under torch.no_grad()", "the forward pass runs under torch.no_grad()"),
    ("backward() on loss.item() (no graph)", "loss.item()"),
    ("forward twice in train mode (BN statistics move twice)", "the model runs forward 2 times in train mode"),
    ("label smoothing not in the recipe", "label_smoothing"),
)

BATCHES = 3
BATCH_SIZE = 6
NUM_CLASSES = 3
BASE_LR = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
CALL = "step(model, images, labels, optimizer, scheduler)"


def _lr_factor(step: int) -> float:
    """A different learning rate for every batch, so that a missing or extra scheduler step shows."""
    return 1.0 / (1 + step)


# --------------------------------------------------------------------------------------------
# The checker's own model, optimizer and scheduler: they record the order of the calls
# --------------------------------------------------------------------------------------------


class _TinyNet(nn.Module):
    """conv 3×3 → BatchNorm → ReLU → global average pool → linear: a ResNet stem in miniature,
    small enough to check a step in milliseconds."""

    def __init__(self, events: list):
        super().__init__()
        self.events = events
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, NUM_CLASSES)
        self.conv.weight.register_post_accumulate_grad_hook(lambda p: self.events.append(("backward",)))

    def forward(self, x: Tensor) -> Tensor:
        self.events.append(("forward", self.bn.training, torch.is_grad_enabled()))
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.events.append(("zero_grad",))
        super().zero_grad(set_to_none)


class _RecordingSGD(torch.optim.SGD):
    def __init__(self, params, events: list):
        super().__init__(params, lr=BASE_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        self.events = events
        self.register_step_pre_hook(lambda optimizer, args, kwargs: self.events.append(("step", self._has_grads())))

    def _has_grads(self) -> bool:
        return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for g in self.param_groups for p in g["params"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.events.append(("zero_grad",))
        super().zero_grad(set_to_none)


class _RecordingLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    def step(self, epoch=None) -> None:
        events = getattr(self, "events", None)
        if events is not None:
            events.append(("scheduler",))
        super().step() if epoch is None else super().step(epoch)


class _LossTracer(TorchFunctionMode):
    """Records what reaches the loss functions: softmax outputs, the targets, the reduction."""

    def __init__(self, labels: Tensor):
        super().__init__()
        self.labels = labels
        self.softmaxed: dict[int, tuple[str, Tensor]] = {}
        self.findings: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("cross_entropy", "nll_loss") and args:
            self._inspect_loss(name, args, kwargs)
        out = func(*args, **kwargs)
        if name in ("softmax", "log_softmax") and isinstance(out, Tensor):
            self.softmaxed[id(out)] = (name, out)  # the tensor is kept, so its id is not reused
        return out

    def _inspect_loss(self, name: str, args, kwargs) -> None:
        logits, target = args[0], (args[1] if len(args) > 1 else kwargs.get("target"))
        made_by = self.softmaxed.get(id(logits), ("", None))[0]
        if name == "cross_entropy" and made_by:
            self.findings.append("softmax_ce" if made_by == "softmax" else "log_softmax_ce")
        if name == "nll_loss" and made_by != "log_softmax":
            self.findings.append("softmax_nll" if made_by == "softmax" else "nll_raw")
        if kwargs.get("reduction", "mean") == "sum":
            self.findings.append("sum")
        if kwargs.get("label_smoothing", 0.0):
            self.findings.append("label_smoothing")
        if isinstance(target, Tensor) and isinstance(logits, Tensor):
            self._inspect_target(target, logits)

    def _inspect_target(self, target: Tensor, logits: Tensor) -> None:
        labels = self.labels
        if target.ndim == 1 and target.shape == labels.shape:
            if torch.equal(target.long(), labels):
                return
            if torch.equal(target.long(), logits.detach().argmax(1)):
                self.findings.append("argmax_targets")
                return
        elif target.ndim == 2 and target.shape == logits.shape:
            if torch.equal(target, F.one_hot(labels, target.shape[1]).to(target.dtype)):
                if not target.is_floating_point():
                    self.findings.append("one_hot_long")
                return
        self.findings.append("wrong_targets")


# --------------------------------------------------------------------------------------------
# Running a step: the reference and the learner's, on the same starting point
# --------------------------------------------------------------------------------------------


@dataclass
class _Setup:
    model: _TinyNet
    optimizer: _RecordingSGD
    scheduler: _RecordingLambdaLR
    events: list = field(default_factory=list)


def _build() -> tuple[_Setup, list[tuple[Tensor, Tensor]]]:
    """The model, optimizer, scheduler and batches, the same at every call."""
    with _seeded(0):
        events: list = []
        model = _TinyNet(events).train()
        optimizer = _RecordingSGD(model.parameters(), events)
        scheduler = _RecordingLambdaLR(optimizer, _lr_factor)
        scheduler.events = events
        batches = [
            (torch.randn(BATCH_SIZE, 3, 8, 8) * 2 + 0.5, torch.randint(0, NUM_CLASSES, (BATCH_SIZE,)))
            for _ in range(BATCHES)
        ]
    return _Setup(model, optimizer, scheduler, events), batches


def reference_step(model, images, labels, optimizer, scheduler):
    """The course's recipe for one batch (the answer the checker compares with)."""
    model.train()
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.detach()


@dataclass
class _Snapshot:
    """Everything a step changes, right after it."""

    returned: object
    params: dict
    buffers: dict
    grads: dict
    momentum: dict
    lr: float
    scheduler_steps: int
    training: bool
    events: list
    findings: list


def _cloned(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clone()


def _snapshot(setup: _Setup, returned, findings: list, scheduler_steps: int) -> _Snapshot:
    model, optimizer = setup.model, setup.optimizer
    return _Snapshot(
        returned=returned,
        params={k: v.detach().clone() for k, v in model.named_parameters()},
        buffers={k: v.clone() for k, v in model.named_buffers()},
        grads={k: None if v.grad is None else v.grad.clone() for k, v in model.named_parameters()},
        momentum={k: _cloned(optimizer.state.get(p, {}).get("momentum_buffer")) for k, p in model.named_parameters()},
        lr=optimizer.param_groups[0]["lr"],
        scheduler_steps=setup.scheduler.last_epoch - scheduler_steps,
        training=model.training,
        events=list(setup.events),
        findings=findings,
    )


def _run(step: Callable, setup: _Setup, batches) -> tuple[list[_Snapshot], BaseException | None, list]:
    """Run ``step`` on each batch; returns the snapshots, the error that stopped it (or None) and
    the events of the failing call."""
    snapshots = []
    for images, labels in batches:
        setup.events.clear()
        before = setup.scheduler.last_epoch
        tracer = _LossTracer(labels)
        try:
            with tracer:
                returned = step(setup.model, images.clone(), labels.clone(), setup.optimizer, setup.scheduler)
        except Exception as error:  # the learner's step may fail in any way; the caller explains it
            return snapshots, error, list(setup.events) + [("findings", tracer.findings)]
        snapshots.append(_snapshot(setup, returned, tracer.findings, before))
    return snapshots, None, []


def _close(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def _same_tensors(a: dict, b: dict) -> bool:
    return all(_close(a[k], b[k]) for k in b)


def _as_number(value) -> float | None:
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value.detach().reshape(()))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _near(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) <= 1e-4 * max(1.0, abs(b))


# --------------------------------------------------------------------------------------------
# Naming the mistake
# --------------------------------------------------------------------------------------------


_EVENT_MISTAKES = {
    "no_grad": "the forward pass runs under torch.no_grad(): no graph is recorded, so there is nothing for "
    "backward() to differentiate; only evaluation runs without gradients",
    "eval": "the model is in eval mode during the forward pass: BatchNorm then normalises with its running "
    "statistics instead of the batch's and never updates them; training needs model.train()",
    "forwards": "the model runs forward {n} times in train mode: every forward pass moves BatchNorm's running "
    "statistics, so they drift {n}× per batch; compute the logits once",
    "no_backward": "loss.backward() never reaches the weights: the loss has no graph (was it turned into a number "
    "with loss.item() or detached before backward()?)",
    "backwards": "loss.backward() runs {n} times on one batch (retain_graph=True?): PyTorch adds every backward() "
    "into .grad, so the update uses {n}× the batch's gradient",
    "no_step": "optimizer.step() is never called: the gradients are computed but the weights never change",
    "steps": "optimizer.step() runs {n} times per batch: the weights move {n} times on one gradient",
    "step_first": "optimizer.step() runs before loss.backward(): it applies the gradient left from the previous "
    "batch (none on the first), one batch late; call backward() first, then step()",
    "zero_between": "zero_grad() runs between loss.backward() and optimizer.step(): it erases the gradients just "
    "computed, so step() has nothing to apply; zero them before backward() or after step()",
    "no_zero": "the gradients are never zeroed: PyTorch adds each backward() into .grad, so from the 2nd batch on "
    "the update uses the sum of all the batches' gradients; call optimizer.zero_grad() once per step",
    "no_scheduler": "scheduler.step() is never called: the recipe changes the learning rate after every batch "
    "(warm-up, then cosine decay), so the step must call scheduler.step() after optimizer.step()",
    "schedulers": "scheduler.step() runs {n} times per batch: the learning-rate schedule runs {n}× too fast",
    "scheduler_first": "scheduler.step() runs before optimizer.step(): every batch is trained with the next "
    "batch's learning rate (and the first one of the schedule is skipped); step the optimizer "
    "first",
}

_LOSS_MISTAKES = {
    "softmax_ce": "cross_entropy receives softmax output: F.cross_entropy applies log_softmax itself, so it must "
    "get the raw logits; a softmax before it squashes the logits and weakens the gradient",
    "log_softmax_ce": "cross_entropy receives log_softmax output: F.cross_entropy applies log_softmax itself; give "
    "it the raw logits (or use F.nll_loss after log_softmax)",
    "softmax_nll": "nll_loss receives softmax output: nll_loss expects log-probabilities; use F.cross_entropy on "
    "the raw logits",
    "nll_raw": "nll_loss receives raw logits: nll_loss expects log-probabilities (log_softmax output); use "
    "F.cross_entropy on the raw logits",
    "sum": "the loss uses reduction='sum': the recipe averages over the batch (reduction='mean', the default), "
    "otherwise the step size grows with the batch size",
    "label_smoothing": "the loss uses label_smoothing: the checked recipe is plain cross-entropy",
    "argmax_targets": "the targets passed to the loss are the model's own predictions (logits.argmax(1)), not the "
    "batch's labels",
    "one_hot_long": "the loss receives one-hot targets of an integer type: cross_entropy takes the class indices "
    "(`labels` as given, shape (N,)), or one-hot rows as floats",
    "wrong_targets": "the targets passed to the loss are not the batch's labels (shuffled, shifted or re-encoded?): "
    "pass `labels` as given, class indices of shape (N,)",
}


def _count(events: list, kind: str) -> int:
    return sum(1 for e in events if e[0] == kind)


def _position(events: list, kind: str) -> int | None:
    return next((i for i, e in enumerate(events) if e[0] == kind), None)


def _forward_mistakes(events: list) -> list[str]:
    forwards = [e for e in events if e[0] == "forward"]
    if forwards and not any(e[2] for e in forwards):
        return [_EVENT_MISTAKES["no_grad"]]
    if forwards and not any(e[1] for e in forwards):
        return [_EVENT_MISTAKES["eval"]]
    trained = sum(1 for e in forwards if e[1])
    return [_EVENT_MISTAKES["forwards"].format(n=trained)] if trained > 1 else []


def _update_mistakes(events: list, all_events: list) -> list[str]:
    """Mistakes in the order of backward, zero_grad and optimizer.step within one step."""
    backwards, steps = _count(events, "backward"), _count(events, "step")
    found = []
    if backwards == 0 and _count(events, "forward"):
        found.append(_EVENT_MISTAKES["no_backward"])
    elif backwards > 1:
        found.append(_EVENT_MISTAKES["backwards"].format(n=backwards))
    if steps == 0:
        found.append(_EVENT_MISTAKES["no_step"])
    elif steps > 1:
        found.append(_EVENT_MISTAKES["steps"].format(n=steps))
    step_at, backward_at = _position(events, "step"), _position(events, "backward")
    if step_at is not None and backward_at is not None and step_at < backward_at:
        found.append(_EVENT_MISTAKES["step_first"])
    elif step_at is not None and backward_at is not None and not events[step_at][1]:
        if any(e[0] == "zero_grad" for e in events[backward_at:step_at]):
            found.append(_EVENT_MISTAKES["zero_between"])
    if not any(e[0] == "zero_grad" for e in all_events):
        found.append(_EVENT_MISTAKES["no_zero"])
    return found


def _scheduler_mistakes(events: list) -> list[str]:
    n = _count(events, "scheduler")
    if n == 0:
        return [_EVENT_MISTAKES["no_scheduler"]]
    if n > 1:
        return [_EVENT_MISTAKES["schedulers"].format(n=n)]
    scheduler_at, step_at = _position(events, "scheduler"), _position(events, "step")
    if step_at is not None and scheduler_at < step_at:
        return [_EVENT_MISTAKES["scheduler_first"]]
    return []


def _error_message(error: BaseException, events: list) -> str:
    text = str(error)
    forwards = [e for e in events if e[0] == "forward"]
    if "does not require grad" in text:
        if forwards and not any(e[2] for e in forwards):
            return _EVENT_MISTAKES["no_grad"]
        return (
            "backward() found no graph: the loss was turned into a number (loss.item(), float(loss)) or "
            "detached before backward(); call backward() on the loss tensor itself"
        )
    if isinstance(error, AttributeError) and "backward" in text:
        return (
            "backward() was called on a number: loss.item() gives a Python float, which has no graph; call "
            "loss.backward() on the tensor and use loss.item() only for printing"
        )
    if "backward through the graph a second time" in text:
        return (
            "backward() ran twice through the same graph: call loss.backward() once per batch (a second call "
            "would also double the gradient)"
        )
    return f"{CALL} raised {_first_line(error)}"


# --------------------------------------------------------------------------------------------
# Comparing with the reference
# --------------------------------------------------------------------------------------------


def _returned_mistake(mine: _Snapshot, ref: _Snapshot, index: int, context: dict) -> str | None:
    """None when the step returned the batch's loss, else what it returned instead."""
    value = mine.returned
    if value is None:
        return "the step returns None: end it with `return loss` (the tensor, loss.detach() or loss.item())"
    if isinstance(value, Tensor) and value.numel() != 1:
        return (
            f"the step returns a tensor of shape {tuple(value.shape)}, not the loss: return the scalar "
            "cross-entropy of the batch"
        )
    number = _as_number(value)
    if number is None:
        return f"the step returns a {type(value).__name__}, not the loss (a tensor or a float)"
    expected = _as_number(ref.returned)
    if _near(number, expected):
        return None
    candidates = (
        ("accuracy", "the step returns the batch's accuracy, not its loss"),
        ("correct", "the step returns the batch's accuracy (a count of correct predictions), not its loss"),
        ("sum", _LOSS_MISTAKES["sum"]),
        ("previous", "the step returns the previous batch's loss: return the loss computed in this call"),
        (
            "after",
            "the step returns the loss after the update (recomputed with the new weights): return the loss "
            "the gradient was computed from",
        ),
    )
    for key, message in candidates:
        if key in context[index] and _near(number, context[index][key]):
            return message
    return f"on batch {index + 1} the step returns {number:.4f}; the batch's cross-entropy is {expected:.4f}"


def _loss_context(batches, reference: list[_Snapshot]) -> list[dict]:
    """Values a wrong step commonly returns instead of the loss, batch by batch."""
    setup, _ = _build()
    context = []
    for i, (images, labels) in enumerate(batches):
        with torch.no_grad():
            twin = copy.deepcopy(setup.model)
            logits = twin(images)
            correct = float((logits.argmax(1) == labels).sum())
        values = {
            "accuracy": correct / len(labels),
            "correct": correct,
            "sum": float(F.cross_entropy(logits, labels, reduction="sum")),
        }
        if i:
            values["previous"] = _as_number(reference[i - 1].returned)
        reference_step(setup.model, images, labels, setup.optimizer, setup.scheduler)
        with torch.no_grad():
            values["after"] = float(F.cross_entropy(copy.deepcopy(setup.model)(images), labels))
        context.append(values)
    return context


def _grads_ok(mine: _Snapshot, ref: _Snapshot) -> bool:
    """After the step the gradients are this batch's (zero_grad first) or cleared (zero_grad last)."""
    grads = list(mine.grads.values())
    cleared = all(g is None or not g.any() for g in grads)
    return cleared or _same_tensors(mine.grads, ref.grads)


def _first_mismatch(mine: list[_Snapshot], ref: list[_Snapshot], same: Callable) -> int | None:
    return next((i for i, (a, b) in enumerate(zip(mine, ref)) if not same(a, b)), None)


def _compare(result: CheckResult, mine: list[_Snapshot], ref: list[_Snapshot], context: list[dict]) -> None:
    """One ✓ or ✗ per kind of check, the ✗ naming the mistake from the recorded calls. Once the
    weights differ, every later loss and statistic differs too: those batches are not compared."""
    named = list(dict.fromkeys(_LOSS_MISTAKES[f] for s in mine for f in s.findings if f in _LOSS_MISTAKES))
    for message in named:
        result.add(False, message)
    update = _first_mismatch(
        mine,
        ref,
        lambda a, b: _same_tensors(a.params, b.params) and _same_tensors(a.momentum, b.momentum) and _grads_ok(a, b),
    )
    compared = BATCHES if update is None else update + 1
    bn = _first_mismatch(mine[:compared], ref, lambda a, b: _same_tensors(a.buffers, b.buffers))
    forward_problems = _forward_mistakes(mine[bn].events) if bn is not None else []
    schedule = _schedule_verdict(mine, ref)
    schedule_problem = not schedule[0]
    left_in_eval = not all(s.training for s in mine)
    explained = bool(named or forward_problems or schedule_problem or left_in_eval)
    returned = [_returned_mistake(a, b, i, context) for i, (a, b) in enumerate(zip(mine[:compared], ref))]
    wrong = [text for text in returned if text]
    if not wrong:
        result.add(True, "returns the batch's mean cross-entropy, computed from the raw logits")
    elif not (explained and wrong[0].startswith("on batch")):
        result.add(False, wrong[0])
    for text in forward_problems:
        result.add(False, text)
    if bn is None:
        result.add(True, "BatchNorm's running statistics move once per batch (train mode)")
    elif not forward_problems and not explained:
        result.add(False, f"after batch {bn + 1} BatchNorm's running statistics differ from the reference's")
    if not left_in_eval:
        result.add(True, "the model is still in train mode after the step")
    else:
        result.add(
            False,
            "the step leaves the model in eval mode: the next batch would train without batch "
            "statistics; switch back with model.train() (or do not switch at all)",
        )
    _compare_update(result, mine, update, explained or bool(wrong))
    result.add(*schedule)


def _compare_update(result: CheckResult, mine: list[_Snapshot], update: int | None, explained: bool) -> None:
    if update is None:
        result.add(
            True,
            f"weights, optimizer state and gradients match the reference's after each of {BATCHES} "
            "batches (zero_grad, backward and optimizer.step in a valid order)",
        )
        return
    problems = _update_mistakes(mine[update].events, [e for s in mine for e in s.events])
    for text in problems:
        result.add(False, text)
    if not problems:
        why = (
            ": they follow from the mistake above"
            if explained
            else (" (forward, cross-entropy, zero_grad, backward, optimizer.step)")
        )
        result.add(False, f"after batch {update + 1} the weights or gradients differ from the reference's{why}")


def _schedule_verdict(mine: list[_Snapshot], ref: list[_Snapshot]) -> tuple[bool, str]:
    """(ok, line) about the learning-rate scheduler: stepped once per batch, after the optimizer."""
    at = _first_mismatch(mine, ref, lambda a, b: a.scheduler_steps == b.scheduler_steps and abs(a.lr - b.lr) < 1e-12)
    order = next((p for s in mine for p in _scheduler_mistakes(s.events)), None)
    if order is not None:
        return False, order
    if at is not None:
        return False, (
            f"after batch {at + 1} the learning rate is {mine[at].lr:.4g}, the reference's "
            f"{ref[at].lr:.4g}: step the scheduler once per batch, after optimizer.step()"
        )
    return True, "the scheduler steps once per batch, after the optimizer"


def check_train_step(step: Callable) -> CheckResult:
    """Check a learner's training step, ``step(model, images, labels, optimizer, scheduler) -> loss``,
    against the course's recipe: train mode, cross-entropy on the raw logits, zero_grad, backward,
    optimizer.step(), scheduler.step() every batch, the batch's loss returned.

    It runs on a tiny seeded conv → BN → linear network (SGD with momentum and weight decay, a
    learning rate that changes every batch) for three consecutive batches, so that gradients left
    from one batch show on the next, and compares losses, weights, momentum, BatchNorm statistics,
    gradients and learning rate with :func:`reference_step`.
    """
    result = CheckResult("Checking your training step against the reference")
    setup, batches = _build()
    reference_setup, _ = _build()
    reference, _, _ = _run(reference_step, reference_setup, batches)
    with _seeded(1):
        mine, error, failing_events = _run(step, setup, batches)
    if error is not None:
        findings = failing_events.pop()[1]
        for finding in dict.fromkeys(findings):
            result.add(False, _LOSS_MISTAKES[finding])
        result.add(False, (f"on batch {len(mine) + 1}: " if mine else "") + _error_message(error, failing_events))
        return result
    result.add(True, f"runs on {BATCHES} consecutive batches")
    _compare(result, mine, reference, _loss_context(batches, reference))
    return result
