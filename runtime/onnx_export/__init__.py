"""Export a compiled Caffe net to ONNX with Caffe's semantics, and verify it with onnxruntime.

Approach: one converter per Caffe layer type writes the layer's ONNX nodes directly with
onnx.helper (no torch.onnx tracing). Each converter reads the layer's resolved attributes from
`CompiledLayer.attrs`, as the runtime unit does (so a parameter is interpreted in one place, the
compiler), and its learnable blobs from `unit.blobs` (so the exported numbers are the ones
runtime.Net uses).

Modules: `registry` (converters by type, and why a type has none), `build` (the deployable
net, the graph builder, export_model, the dynamic batch), the converters by layer family
(`neuron`, `vision`, `structural`, `recurrent`, as runtime/layers), `verify` (onnxruntime
against runtime.Net).

Naming, so that the graph reads like the prototxt in Netron:
- a layer that becomes one ONNX node gives the node its name; a layer that needs several
  nodes names them "<layer>/<part>" (an LSTM step t: "<layer>/t<t>/<part>"). A repeated layer
  name uses the compiler's key ("name@k").
- each top is a graph value named after its blob. In-place layers write several versions of a
  blob: the last version (what pycaffe's net.blobs[name] shows) is named `name`, each earlier
  one `name@k` with k its production index (0 for the first). A graph input keeps its plain
  name even when a later in-place layer rewrites it; the later versions are then `name@k`.
- a layer's intermediate values are "<layer>/<part>"; its weights are initializers named
  "<layer>/<role>" (conv1/weight, conv1/bias, lstm1/W_hc, ...; a shared blob is stored once,
  under its owner's name). Weights keep Caffe's layout except where an ONNX op needs a
  broadcastable shape (a per-channel (C,) blob is stored as (C, 1, 1)).

Train nets export their data-free part: data layers become graph inputs named after their
tops; loss and Accuracy layers (and sinks: Silence, HDF5Output) are dropped, and the blobs they
read that depend on learnt weights (the predictions, e.g. ip2) become graph outputs; what only
fed the dropped layers (label inputs) is pruned. See `compiler.deploy.deployable`.

Verification (`verify`, lrcn-export --check): onnxruntime and runtime.Net on the same random
inputs; an output passes when max |onnx - net| <= RTOL * max |net| (see RTOL).

Recurrent layers are unrolled over the net's fixed T. By default the initial states are zero
(a fresh runtime.Net after reset_state()); `step=True` makes the states of every LSTM / RNN
without expose_hidden explicit: inputs "<layer>.h0" (and "<layer>.c0"), outputs "<layer>.hT"
(and "<layer>.cT"), each (1, N, H), so decoding loops can carry state outside Python.
"""

# Importing the converter modules registers their converters.
from . import neuron, recurrent, structural, vision  # noqa: F401,E402
from .build import (BATCH_DIM, DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, DynamicBatch,  # noqa: E402
                    batch_axes, deployable, export_model, load_deployable)
from .registry import (Unsupported, check_exportable, converter, exportable_types,  # noqa: E402
                       unexportable_reason)
from .verify import (RTOL, OutputDiff, format_report, input_kinds, onnx_session,  # noqa: E402
                     random_inputs, state_pairs, verify, with_blob_outputs)
from compiler.deploy import Deployable, input_batch_axes, rebatch  # noqa: E402

__all__ = ["BATCH_DIM", "DEFAULT_OPSET", "MAX_OPSET", "MIN_OPSET", "Deployable", "DynamicBatch",
           "OutputDiff", "RTOL", "Unsupported", "batch_axes", "check_exportable", "converter",
           "deployable", "export_model", "exportable_types", "format_report", "input_batch_axes",
           "input_kinds", "load_deployable", "onnx_session", "random_inputs", "rebatch",
           "state_pairs", "unexportable_reason", "verify", "with_blob_outputs"]
