"""pycaffe's solvers (SGDSolver ... AdamSolver, get_solver) as an adapter over runtime.Solver."""

import os

import compiler
import runtime.solver
from lrcn_proto import caffe_pb2
from runtime.updates import learning_rate

from . import _caffe
from ._caffe import unsupported
from .pycaffe import HOST_COPIES, Net


class Solver:
    """pycaffe's solver: `step(n)`, `solve(resume_file=None)`, `net`, `test_nets`, `iter`,
    `snapshot()`, `restore(state_file)`, `add_callback(on_start, on_gradients_ready)`.
    The class decides the update rule (SGDSolver is SGD whatever the file's `type`, as in
    Caffe); `caffe.get_solver(file)` picks it from the file."""

    _type = None

    def __init__(self, solver_file):
        document = compiler.load_file(os.fspath(solver_file), "solver")
        message = document.message
        if self._type is not None:
            message.ClearField("solver_type")
            message.type = self._type
        if _caffe.random_seed() is not None and not message.HasField("random_seed"):
            message.random_seed = _caffe.random_seed()
        # pycaffe computes where caffe.set_mode_* says, whatever the file's solver_mode.
        device = _caffe.current_device()
        message.solver_mode = caffe_pb2.SolverParameter.GPU if device.type == "cuda" \
            else caffe_pb2.SolverParameter.CPU
        self._solver = runtime.solver.Solver(document, device=device)
        self._net = Net._wrap(self._solver.net)
        self._test_nets = [Net._wrap(net) for net in self._solver.test_nets]
        self._on_start, self._on_gradients_ready = [], []     # add_callback's callables
        self._solver.on_start.append(self._start_iteration)
        self._solver.on_gradients_ready.append(self._gradients_ready)

    def _start_iteration(self):
        for callback in self._on_start:
            callback()
        # The iteration reads the input blobs and parameters as the callbacks left them.
        self._feed_inputs()
        HOST_COPIES.write_back()

    def _gradients_ready(self):
        self._net._pull_last_run()         # callbacks see this iteration's blobs
        for callback in self._on_gradients_ready:
            callback()
        HOST_COPIES.write_back()

    def _feed_inputs(self):
        for net in [self._net] + self._test_nets:
            net._feed_inputs()

    def _pull_last_runs(self):
        for net in [self._net] + self._test_nets:
            net._pull_last_run()

    @property
    def net(self):
        return self._net

    @property
    def test_nets(self):
        return list(self._test_nets)

    @property
    def iter(self):
        return self._solver.iter

    @property
    def param(self):
        """The SolverParameter in use (changing base_lr takes effect at the next update)."""
        return self._solver.param

    @property
    def lr(self):
        """The learning rate of the current iteration."""
        return learning_rate(self._solver.param, self._solver.iter,
                             self._solver.current_step)[0]

    def step(self, iters):
        self._feed_inputs()
        HOST_COPIES.write_back()
        self._solver.step(int(iters))
        self._pull_last_runs()

    def solve(self, resume_file=None):
        self._feed_inputs()
        HOST_COPIES.write_back()
        self._solver.solve(os.fspath(resume_file) if resume_file else None)
        self._pull_last_runs()

    def snapshot(self):
        HOST_COPIES.write_back()
        self._solver.snapshot()

    def restore(self, state_file):
        HOST_COPIES.write_back()
        self._solver.restore(os.fspath(state_file))

    def apply_update(self):
        HOST_COPIES.write_back()
        self._solver.apply_update()

    def share_weights(self, net):
        net.share_with(self._net)

    def add_callback(self, on_start, on_gradients_ready=None):
        """on_start() runs before each iteration's forward/backward, on_gradients_ready()
        before its update (Caffe's Solver::Callback)."""
        if on_gradients_ready is None:
            raise unsupported("Solver.add_callback(nccl)", "multi-GPU NCCL training is not "
                              "provided; pass two callables (on_start, on_gradients_ready)")
        self._on_start.append(on_start)
        self._on_gradients_ready.append(on_gradients_ready)


class SGDSolver(Solver):
    _type = "SGD"


def _sgd_family(rule):
    """pycaffe's <rule>Solver: an SGDSolver subclass whose update rule is `rule`."""
    return type(rule + "Solver", (SGDSolver,), {"_type": rule, "__module__": __name__})


NesterovSolver = _sgd_family("Nesterov")
AdaGradSolver = _sgd_family("AdaGrad")
RMSPropSolver = _sgd_family("RMSProp")
AdaDeltaSolver = _sgd_family("AdaDelta")
AdamSolver = _sgd_family("Adam")

SOLVER_CLASSES = {cls._type: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver,
                                             RMSPropSolver, AdaDeltaSolver, AdamSolver)}


def get_solver(solver_file):
    """The solver of the file's `type` (Caffe's SolverRegistry)."""
    message = compiler.upgrade(compiler.load_file(os.fspath(solver_file), "solver").message)
    return SOLVER_CLASSES.get(message.type, Solver)(solver_file)
