"""Helpers shared by tests."""

import os
import signal
import time
from types import SimpleNamespace

import compiler
from lrcn_proto import caffe_pb2


def compiled_layer(text, bottom_shapes, top_shapes=(), param_shapes=(), phase="TRAIN"):
    """The CompiledLayer of `text` (one `layer { ... }` block) for a unit under test.

    A layer with bottoms (one shape each in `bottom_shapes`) is compiled by compile_net in a
    one-layer net whose bottoms are Input blobs: the unit sees exactly what the compiler gives
    it, attrs included. `top_shapes` / `param_shapes`, when given, state what the test expects
    the compiler's shape rule to give, and are checked."""
    param = compiler.parse_text(text, "net").layer[0]
    if not param.bottom or param.type == "Python":
        return _stand_in(param, bottom_shapes, top_shapes, param_shapes, phase)
    if len(bottom_shapes) != len(param.bottom):
        raise ValueError(f"{param.type} layer '{param.name}': give one bottom shape per bottom "
                         f"({len(param.bottom)}) so that it compiles")
    net = caffe_pb2.NetParameter(name="one_layer")
    shapes = {}
    for name, shape in zip(param.bottom, bottom_shapes):
        shapes.setdefault(name, tuple(shape))
    if shapes:
        inputs = net.layer.add(name="(inputs)", type="Input")
        for name, shape in shapes.items():
            inputs.top.append(name)
            inputs.input_param.shape.add(dim=shape)
    net.layer.add().CopyFrom(param)
    layer = compiler.compile_net(net, phase=phase).layers[-1]
    if top_shapes:
        assert layer.top_shapes == [tuple(s) for s in top_shapes], layer.top_shapes
    if param_shapes:
        assert layer.param_shapes == [tuple(s) for s in param_shapes], layer.param_shapes
    return layer


def _stand_in(param, bottom_shapes, top_shapes, param_shapes, phase):
    # Data layers (their tests exercise the unit's own reading of the files) and Python layers:
    # the layer as written, with the shapes given, no attrs.
    return SimpleNamespace(
        name=param.name, type=param.type, param=param, phase=phase,
        bottoms=list(param.bottom), tops=list(param.top),
        bottom_shapes=[tuple(s) for s in bottom_shapes],
        top_shapes=[tuple(s) for s in top_shapes],
        param_shapes=[tuple(s) for s in param_shapes],
        param_specs=list(param.param), loss_weights=[], params=0, flops=0, location=None,
        attrs=None)


TINY_NET = '''name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
                     data_filler { type: "gaussian" } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }
'''


def tiny_solver(folder, max_iter=4, snapshot=2, extra=""):
    """A solver over a net that needs no data files (DummyData, Dropout, one InnerProduct),
    snapshotting to <folder>/tiny_iter_<N>.*; returns the solver file's path."""
    (folder / "net.prototxt").write_text(TINY_NET)
    solver = folder / "solver.prototxt"
    solver.write_text(f'net: "{folder / "net.prototxt"}"\nbase_lr: 0.01\nmomentum: 0.9\n'
                      f'lr_policy: "fixed"\ndisplay: 1\nmax_iter: {max_iter}\n'
                      f'snapshot: {snapshot}\nsnapshot_prefix: "{folder / "tiny"}"\n'
                      f'random_seed: 3\nsolver_mode: CPU\n{extra}')
    return solver


def train_in_process(argv):
    """lrcn-train's main in this process: (exit status, what it wrote to stderr)."""
    import contextlib
    import io

    from runtime import cli
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            status = cli.train_main([str(a) for a in argv])
        except SystemExit as exited:
            status = exited.code
    return status, stderr.getvalue()


def decisive_caption_weights(path, stages, deploy="nets/lrcn_caption_deploy.prototxt"):
    """Filler weights with a sharpened predict layer: well-separated logits, so the argmax of
    float32 onnxruntime and torch can only agree or differ by a real bug."""
    import torch

    from lrcn_proto import caffe_pb2
    from lrcn_apps.caption.generate import Captioner
    model = Captioner(deploy, None, stages=stages)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(7)
        for net in (model.image_net, model.word_net):
            for unit in net.units:
                for blob in unit.blobs:
                    blob.copy_(torch.randn(blob.shape, generator=generator) * 0.3)
        model.word_net.layer("predict").blobs[0].mul_(20)
    message = caffe_pb2.NetParameter()
    message.layer.extend(list(model.image_net.to_proto().layer)
                         + list(model.word_net.to_proto().layer))
    path.write_bytes(message.SerializeToString())
    return str(path)


class InterruptedWhileCollected:
    """Stands for a Ctrl-C that lands while Python runs a __del__ (h5py's import, for one,
    runs `uname -p` in a subprocess whose Popen is then collected): Python cannot raise there,
    prints "Exception ignored in ..." and goes on. Create one and drop it."""

    def __del__(self):
        raise KeyboardInterrupt


def as_a_terminal_starts_it():
    """preexec_fn for a tool under test: Ctrl-C's default disposition, as a command in the
    foreground of a terminal has it. A shell without job control starts background commands
    with SIGINT ignored, and the suite may run under one (a CI script's `&`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_past_python_start_up(process, cpu_seconds=0.25, limit_s=30):
    """Until `process` has used cpu_seconds of CPU (Python's own start-up, its `site` import,
    takes about 0.05 s: a Ctrl-C there is out of any tool's hands) or has ended; 0.6 s where
    /proc is absent."""
    stat = f"/proc/{process.pid}/stat"
    if not os.path.exists(stat):
        time.sleep(0.6)
        return
    deadline = time.monotonic() + limit_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with open(stat) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            return
        # utime and stime: fields 14 and 15 of the line, 12 and 13 after the command's ")".
        if (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") >= cpu_seconds:
            return
        time.sleep(0.01)
