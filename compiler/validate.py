"""Everything a training run needs, checked before any work starts.

One validation, used by `lrcn-check SOLVER`, `lrcn-train` and runtime.Solver alike, so a solver
that lrcn-check passes does not fail later in training, and both tools report the same error:

- the solver's fields, with the domains Caffe's solvers check (sgd_solver.cpp GetLearningRate,
  the solvers' constructor sanity checks, Solver::Init) plus those whose violation would end a
  run with an arithmetic error halfway through (Adam's betas, test_iter);
- the snapshot directory: it must be a writable directory, or creatable;
- every filler of every layer (compile_net calls check_fillers for each layer): a known type,
  and sparse / bilinear used where filler.hpp allows them.

The solver's nets themselves are compiled by the callers (compile_net), as before.
"""

import os

from lrcn_proto import caffe_pb2

from .errors import CompileError, raise_all
from .layer_types import RECURRENT, has_trait
from .upgrade import SOLVER_TYPES, upgrade

# Learning-rate policies of SGDSolver::GetLearningRate and the fields each one reads, with the
# CHECKs Caffe makes on them: (field, test, what the test demands).
_GAMMA = ("gamma", lambda v: v >= 0, ">= 0")
_STEPSIZE = ("stepsize", lambda v: v > 0, "> 0")
LR_POLICIES = {
    "fixed": (),
    "step": (_STEPSIZE, _GAMMA),
    "exp": (_GAMMA,),
    "inv": (_GAMMA,),
    "multistep": (_GAMMA,),
    "poly": (),
    "sigmoid": (_GAMMA, _STEPSIZE),
}

# The filler types of filler.hpp's GetFiller (runtime/fillers.py implements exactly these).
FILLER_TYPES = ("constant", "gaussian", "positive_unitball", "uniform", "xavier", "msra",
                "bilinear")

_BETA_RANGE = (lambda v: 0 <= v < 1, "in [0, 1)")


def check_solver(document, create_snapshot_dir=False):
    """Check a solver Document before any work; raise CompileError (all problems found, in file
    order) or return notes worth printing. With create_snapshot_dir (lrcn-train) a missing
    snapshot directory is created; without it (lrcn-check) its creation is a note."""
    param = upgrade(document.message)
    problems = _parameter_problems(param, document)
    snapshot_dir = os.path.dirname(snapshot_prefix(param, document.filename)) or "."
    notes = []
    problem, note = _snapshot_dir_problem(snapshot_dir, param, document)
    if problem:
        problems.append(problem)
    raise_all(sorted(problems, key=lambda e: (e.line or 0, e.col or 0)))
    if note:
        if create_snapshot_dir:
            os.makedirs(snapshot_dir, exist_ok=True)
        else:
            notes.append(note)
    return notes


def snapshot_prefix(param, solver_file):
    """Where snapshots go: snapshot_prefix, else Caffe's default (the solver file without its
    extension)."""
    if param.snapshot_prefix:
        return param.snapshot_prefix
    return os.path.splitext(solver_file)[0]


def _parameter_problems(param, document):
    problems = []

    def problem(message, field, hint=None):
        problems.append(document.error(message, _written(document, param, field), hint))
    if param.type not in SOLVER_TYPES.values():
        problem(f"unknown solver type '{param.type}'", "type",
                "types: " + ", ".join(SOLVER_TYPES.values()))
    if param.lr_policy not in LR_POLICIES:
        shown = f"'{param.lr_policy}'" if param.lr_policy else "(none given)"
        problem(f"unknown lr_policy {shown}", "lr_policy",
                "policies: " + ", ".join(LR_POLICIES))
    else:
        for field, test, demand in LR_POLICIES[param.lr_policy]:
            value = getattr(param, field)
            if not test(value):
                problem(f"lr_policy \"{param.lr_policy}\" needs {field} {demand}, "
                        f"got {value:g}", field if param.HasField(field) else "lr_policy",
                        None if param.HasField(field) else f"set {field}")
    if param.regularization_type not in ("L1", "L2"):
        problem(f"unknown regularization_type '{param.regularization_type}'",
                "regularization_type", 'use "L2" or "L1"')
    for field in ("iter_size", "average_loss"):
        if getattr(param, field) < 1:
            problem(f"{field} must be at least 1, got {getattr(param, field)}", field)
    for index, iterations in enumerate(param.test_iter):
        if iterations < 1:
            problem(f"test_iter must be at least 1, got {iterations}", ("test_iter", index),
                    "each test pass averages its outputs over test_iter forward passes")
    _solver_type_problems(param, problem)
    return problems


def _solver_type_problems(param, problem):
    # The constructors' sanity checks in sgd_solvers.hpp, and Adam's bias correction, which
    # divides by 1 - momentum^t and takes the square root of 1 - momentum2^t.
    if param.type in ("AdaGrad", "RMSProp") and param.momentum != 0:
        problem(f"momentum cannot be used with {param.type} (got {param.momentum:g})",
                "momentum", "remove momentum (Caffe requires 0)")
    if param.type == "RMSProp" and not 0 <= param.rms_decay < 1:
        problem(f"rms_decay should lie between 0 and 1, got {param.rms_decay:g}", "rms_decay")
    if param.type == "Adam":
        test, demand = _BETA_RANGE
        for field in ("momentum", "momentum2"):
            if not test(getattr(param, field)):
                problem(f"Adam's {field} must be {demand}, got {getattr(param, field):g}",
                        field, "the bias correction divides by 1 - momentum^t")


def _written(document, param, field):
    """The path of a field as the file wrote it (a legacy solver_type stands for type)."""
    if isinstance(field, tuple):
        return field
    if field == "type" and not document.message.HasField("type") \
            and document.message.HasField("solver_type"):
        return ("solver_type",)
    return (field,)


def _snapshot_dir_problem(directory, param, document):
    """(problem, note) about the directory snapshots are written to."""
    path = ("snapshot_prefix",)
    if os.path.isdir(directory):
        if not os.access(directory, os.W_OK | os.X_OK):
            return document.error(f"cannot write snapshots: directory '{directory}' is not "
                                  "writable", path), None
        return None, None
    existing = directory
    while existing and not os.path.exists(existing):
        parent = os.path.dirname(existing)
        existing = parent if parent != existing else ""
    existing = existing or "."
    if not os.path.isdir(existing):
        return document.error(f"cannot write snapshots: '{existing}' is a file, not a "
                              "directory", path, f"snapshots go to {directory}/"), None
    if not os.access(existing, os.W_OK | os.X_OK):
        return document.error(f"cannot create the snapshot directory '{directory}': "
                              f"'{existing}' is not writable", path), None
    return None, f"snapshot directory '{directory}' does not exist yet; lrcn-train creates it"


# --- fillers ----------------------------------------------------------------------------------

def check_filled_blobs_not_empty(layer, param_shapes, top_shapes, locate):
    """filler.hpp CHECKs that every blob it fills has values: an empty learnable blob, or an
    empty DummyData top, is refused by Caffe, and so here."""
    filled = [("learnable blob", i, shape) for i, shape in enumerate(param_shapes or [])]
    if layer.type == "DummyData":
        filled += [("top", i, shape) for i, shape in enumerate(top_shapes or [])]
    for what, index, shape in filled:
        if shape is not None and 0 in shape:
            named = f" '{layer.top[index]}'" if what == "top" else f" {index}"
            raise CompileError(f"layer '{layer.name}' ({layer.type}): {what}{named} of shape "
                               f"{tuple(shape)} is empty, and Caffe's fillers refuse an empty "
                               "blob", *locate(), hint="every dimension of a filled blob must "
                               "be at least 1")


def check_fillers(layer, param_shapes, top_shapes, locate, attrs=None):
    """The fillers of one layer, as filler.hpp's GetFiller and Fill check them. Shapes may be
    None (unknown). locate(*field_path) -> (file, line, col) inside the layer. `attrs`: the
    layer's resolved attributes (a recurrent layer's name its blobs)."""
    for path, filler, shapes in _fillers_with_shapes(layer, param_shapes, top_shapes, attrs):
        problem = _filler_problem(filler, [s for s in shapes if s is not None])
        if problem:
            message, field, hint = problem
            name = ".".join(str(part) for part in path)
            raise CompileError(f"layer '{layer.name}' ({layer.type}): {name}: {message}",
                               *locate(*path, field), hint=hint)


def _filler_problem(filler, shapes):
    """(message, offending field, hint) or None."""
    if filler.type not in FILLER_TYPES:
        return (f"unknown filler type '{filler.type}'", "type",
                "filler types: " + ", ".join(FILLER_TYPES))
    if filler.type != "gaussian" and filler.sparse != -1:
        return (f"the {filler.type} filler does not support sparse (got sparse: "
                f"{filler.sparse})", "sparse", "only the gaussian filler has a sparse form")
    if filler.sparse < -1:
        return f"sparse must be >= -1, got {filler.sparse}", "sparse", None
    for shape in shapes:
        if filler.sparse >= 0 and shape and filler.sparse > shape[0]:
            return (f"sparse {filler.sparse} exceeds the blob's first dimension {shape[0]} "
                    "(the Bernoulli probability sparse / shape[0] must be <= 1)", "sparse",
                    None)
        if filler.type == "bilinear" and (len(shape) != 4 or shape[2] != shape[3]):
            return (f"the bilinear filler needs a 4-D blob with square kernels, got shape "
                    f"{tuple(shape)}", "type", None)
    return None


def _fillers_with_shapes(layer, param_shapes, top_shapes, attrs):
    """(field path, FillerParameter, [shapes it fills]) for every filler the layer sets."""
    params = list(param_shapes or [])
    tops = list(top_shapes or [])
    for holder, holder_field in _filler_holders(layer):
        for field, value in holder.ListFields():
            if field.message_type is not caffe_pb2.FillerParameter.DESCRIPTOR:
                continue
            if field.name == "data_filler":     # DummyData: one filler for all tops, or one each
                for index, filler in enumerate(value):
                    filled = tops if len(value) == 1 else tops[index:index + 1]
                    yield (holder_field, field.name, index), filler, filled
                continue
            yield ((holder_field, field.name), value,
                   _filled_params(layer, field.name, params, attrs))


def _filler_holders(layer):
    for field, value in layer.ListFields():
        if field.message_type is not None and not field.is_repeated:
            yield value, field.name


def _filled_params(layer, field_name, params, attrs):
    bias = field_name == "bias_filler"
    if has_trait(layer.type, RECURRENT):
        # weight_filler fills every matrix, bias_filler every bias (RecurrentAttrs.blobs).
        if attrs is None:
            return []
        return [s for name, s in zip(attrs.blobs, params) if name.startswith("b_") == bias]
    index = 1 if bias else 0
    return params[index:index + 1]
