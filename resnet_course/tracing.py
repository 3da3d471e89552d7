"""What a block's ``forward`` does, read from a ``torch.fx`` trace: every convolution, BatchNorm,
ReLU, pooling and addition in forward order (``trace_operations``), which of them feeds which, and
where each goes in a picture: the residual branch, the shortcut, the addition where they meet
(``block_graph``). ``diagrams`` draws that graph and ``ablation`` reads the order of the
operations, so neither can disagree with the code.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["Op", "BlockGraph", "trace_operations", "block_graph"]

_FUNCTION_KINDS = {operator.add: "add", operator.iadd: "add", torch.add: "add", torch.relu: "ReLU", F.relu: "ReLU"}
_METHOD_KINDS = {"add": "add", "add_": "add", "relu": "ReLU", "relu_": "ReLU"}


@dataclass
class Op:
    """One operation of a block: its kind ("conv", "BN", "ReLU", "max pool", "add", ...), the
    text written in its box, its stride, and the indices (in ``BlockGraph.ops``) of its inputs;
    -1 is the block's input ``x``."""

    kind: str
    text: str
    stride: int = 1
    inputs: list = field(default_factory=list)
    target: str = ""


@dataclass
class BlockGraph:
    """A block's operations in forward order, and where each one is drawn.

    ``column`` is 0 for the main path and 1 for the shortcut; ``row`` counts down from the input.
    """

    ops: list
    column: list
    row: list

    @property
    def kinds(self) -> list:
        """The kinds of the operations, in forward order."""
        return [op.kind for op in self.ops]

    def path(self, column: int) -> list:
        """Kinds of the operations drawn in ``column``, top to bottom."""
        drawn = sorted((self.row[i], self.ops[i].kind) for i in range(len(self.ops)) if self.column[i] == column)
        return [kind for _, kind in drawn]


def _pair(value) -> int:
    return value[0] if isinstance(value, tuple) else value


def _describe(module: nn.Module) -> tuple[str, str, int]:
    """(kind, box text, stride) of one leaf module."""
    if isinstance(module, nn.Conv2d):
        k, s = _pair(module.kernel_size), _pair(module.stride)
        notes = [f"stride {s}"] * (s > 1) + ["+ bias"] * (module.bias is not None)
        text = f"conv {k}×{k}, {module.in_channels}→{module.out_channels}"
        return "conv", text + ("\n" + ", ".join(notes) if notes else ""), s
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "BN", "BN", 1
    if isinstance(module, nn.ReLU):
        return "ReLU", "ReLU", 1
    if isinstance(module, nn.MaxPool2d):
        k, s = _pair(module.kernel_size), _pair(module.stride)
        return "max pool", f"max pool {k}×{k}" + (f"\nstride {s}" if s > 1 else ""), s
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
        return "avg pool", "avg pool", 1
    if isinstance(module, nn.Linear):
        return "fc", f"fc {module.in_features}→{module.out_features}", 1
    name = type(module).__name__
    return name, name, 1


def trace_operations(module: nn.Module) -> list[Op]:
    """The operations of ``module.forward`` in forward order, read from a ``torch.fx`` trace
    (so it is what the code does), identities and plumbing left out."""
    traced = fx.symbolic_trace(module)
    index: dict = {}  # fx node -> op index (-1: the input); identities map to their input
    ops: list[Op] = []

    def sources(node: fx.Node) -> list[int]:
        found = []
        for arg in node.all_input_nodes:
            if arg in index and index[arg] not in found:
                found.append(index[arg])
        return found

    for node in traced.graph.nodes:
        if node.op == "placeholder":
            if index:
                raise ValueError("draw_block draws modules with one input")
            index[node] = -1
            continue
        if node.op == "output":
            continue
        kind = text = None
        stride = 1
        if node.op == "call_module":
            submodule = traced.get_submodule(node.target)
            if isinstance(submodule, (nn.Identity, nn.Flatten)):
                index[node] = sources(node)[0]
                continue
            kind, text, stride = _describe(submodule)
        elif node.op == "call_function":
            kind = _FUNCTION_KINDS.get(node.target, getattr(node.target, "__name__", str(node.target)))
        elif node.op == "call_method":
            kind = _METHOD_KINDS.get(node.target, str(node.target))
        if kind is None:  # get_attr and the like: not an operation on the data
            continue
        ops.append(Op(kind, text or ("+" if kind == "add" else kind), stride, sources(node), str(node.target)))
        index[node] = len(ops) - 1
    return ops


def _ancestors(ops: list[Op], start: int) -> set:
    seen, stack = set(), [start]
    while stack:
        i = stack.pop()
        if i < 0 or i in seen:
            continue
        seen.add(i)
        stack.extend(ops[i].inputs)
    return seen


def block_graph(module: nn.Module) -> BlockGraph:
    """The operations of ``module`` (a residual block, or any single-input module fx can trace)
    with their place in the picture.

    Operations that feed both terms of the block's addition (a pre-activation shared by branch
    and shortcut) and the residual branch go down column 0; the operations only the shortcut
    uses go in column 1; the addition and what follows it go below the branch. The shortcut is
    the term of the addition with fewer operations (an identity has none).
    """
    ops = trace_operations(module)
    adds = [i for i, op in enumerate(ops) if op.kind == "add"]
    column, row = [0] * len(ops), [0] * len(ops)
    if len(adds) != 1 or len(ops[adds[0]].inputs) != 2:
        for i in range(len(ops)):
            row[i] = i + 1
        return BlockGraph(ops, column, row)
    add = adds[0]
    left, right = (_ancestors(ops, j) for j in ops[add].inputs)
    shared = left & right
    branch, shortcut = (left - shared, right - shared)
    if len(shortcut) > len(branch):
        branch, shortcut = shortcut, branch
    next_row, short_row = 1, None
    for i in range(len(ops)):
        if i in shortcut:
            column[i] = 1
            if short_row is None:  # the shortcut starts beside its source
                sources = [row[j] if j >= 0 else 0 for j in ops[i].inputs]
                short_row = max(sources) + 1
            row[i], short_row = short_row, short_row + 1
        else:
            if i == add and short_row is not None:
                next_row = max(next_row, short_row)
            row[i], next_row = next_row, next_row + 1
    return BlockGraph(ops, column, row)
