"""The base class every layer unit derives from, and the one error a unit raises."""

import torch
from torch import nn

from compiler.errors import CompileError
from runtime.fillers import fill_


class LayerError(CompileError, ValueError):
    """A unit refusing its parameters or its inputs: `file:line:col: layer 'x' (Type): message`,
    located at the layer as compile errors are. It is a ValueError too, so code that catches a
    unit's bad-input errors as ValueError keeps working."""

    def __init__(self, layer, message, hint=None):
        file, line, col = getattr(layer, "location", None) or (None, None, None)
        super().__init__(f"layer '{layer.name}' ({layer.type}): {message}", file, line, col,
                         hint)


class CaffeLayer(nn.Module):
    """One Caffe layer as a torch module.

    Built from a compiler.CompiledLayer (`layer`): its `param` (the LayerParameter),
    `bottom_shapes`, `top_shapes`, `param_shapes` (Caffe blob order and layout) and `phase`.
    Learnable blobs live in `self.blobs` in Caffe order and layout; forward reads them as
    `self.blobs[i]` every call, so the Net can swap in a shared owner's tensor.
    `forward(*bottoms)` returns a tuple with one tensor per top.

    Phase: the compiled phase chose the layers and fixes what data layers read and how they
    sample (crops, mirrors, clip order). Compute layers whose forward Caffe ties to the phase
    (Dropout, stochastic Pooling, BatchNorm without use_global_stats) follow torch's train /
    eval mode instead; runtime.Net starts in train mode exactly when its phase is TRAIN, so
    Caffe's behaviour holds until `.eval()` / `.train()` change it.
    """

    # Indices of bottoms that never receive a gradient (labels, cont markers, indices).
    no_grad_bottoms = ()
    # A data unit that reads its batches through runtime.sharding.load (so that several ranks
    # can split them) says so.
    shardable = False

    def __init__(self, layer, rng=None):
        super().__init__()
        self.layer = layer
        self.phase = layer.phase
        self.training = layer.phase == "TRAIN"
        self.blobs = nn.ParameterList()
        self.rng = rng if rng is not None else torch.Generator().manual_seed(0)

    @property
    def param(self):
        return self.layer.param

    def add_blob(self, shape, filler=None, dtype=torch.float32):
        """Append a learnable blob of `shape`, filled as Caffe would (zeros without a filler)."""
        tensor = torch.zeros(tuple(shape), dtype=dtype)
        if filler is not None:
            fill_(tensor, filler, self.rng)
        self.blobs.append(nn.Parameter(tensor))
        return self.blobs[-1]

    def reset_state(self):
        """Forget state carried between forward calls (recurrent layers override this)."""

    def resume_state(self):
        """The state this unit carries from one forward call to the next (data positions,
        random generators, recurrent h / c), as a tree of dicts, lists, numbers, strings and
        tensors, for a solver snapshot; None when forward depends on its inputs and blobs only.
        A unit that returns a state restores it in restore_state(state)."""
        return None

    def restore_state(self, state):
        raise NotImplementedError(f"{type(self).__name__} keeps no state to restore")

    def extra_repr(self):
        return f"name={self.layer.name!r}, type={self.layer.type!r}"
