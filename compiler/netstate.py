"""Which layers a net has in a given NetState, and which nets a solver builds.

Layer selection follows Caffe's net.cpp (FilterNet / StateMeetsRule); the solver's nets and
their states follow solver.cpp (InitTrainNet / InitTestNets), including the order in which the
solver's defaults, the net file's own `state` and the solver's train_state / test_state merge.
"""

import os
from dataclasses import dataclass, field as dataclass_field
from typing import NamedTuple

from lrcn_proto import caffe_pb2

from .errors import CompileError
from .paths import resolve_path
from .schema import Document, load_file
from .upgrade import upgrade

PHASES = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST}


def phase_number(phase):
    """"TRAIN" / "test" / caffe_pb2.TRAIN -> the Phase enum number."""
    if isinstance(phase, str):
        key = phase.upper()
        if key not in PHASES:
            raise CompileError(f"unknown phase {phase!r}; expected TRAIN or TEST")
        return PHASES[key]
    if phase not in PHASES.values():
        raise CompileError(f"unknown phase {phase!r}; expected TRAIN or TEST")
    return int(phase)


def phase_name(phase):
    return caffe_pb2.Phase.Name(phase_number(phase))


def net_state(net, phase="TRAIN", stages=(), level=0):
    """The NetState Caffe's Net(file, phase, level, stages) constructor builds.

    It starts from the net's own `state`, then sets the phase and the level and ADDS the stages
    (so stages written in the net file stay in force).
    """
    state = caffe_pb2.NetState()
    state.CopyFrom(net.state)
    state.phase = phase_number(phase)
    state.stage.extend(stages)
    state.level = level
    return state


def state_meets_rule(state, rule):
    """Caffe's StateMeetsRule: every condition the rule states must hold."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if not all(stage in stages for stage in rule.stage):
        return False
    return not any(stage in stages for stage in rule.not_stage)


def layer_included(layer, state):
    """Caffe's FilterNet decision for one layer (the both-kinds check is the caller's)."""
    if not layer.include:
        return not any(state_meets_rule(state, rule) for rule in layer.exclude)
    return any(state_meets_rule(state, rule) for rule in layer.include)


class FilteredNet(NamedTuple):
    net: object          # NetParameter holding only the selected layers, `state` set
    indices: list        # for each selected layer, its index in the unfiltered net
    state: object        # the NetState the selection used


def filter_net(net, phase="TRAIN", stages=(), level=0, state=None, locate=None):
    """The layers of `net` selected by a NetState, as Caffe's FilterNet selects them.

    With `state` given it is used as is (Caffe's Net(NetParameter) reads net.state that way);
    otherwise the state is built from the net's own `state` as Caffe's Net(file, phase, level,
    stages) does. `locate(index) -> (file, line, col)` places errors at the offending layer.
    """
    if state is None:
        state = net_state(net, phase, stages, level)
    filtered = caffe_pb2.NetParameter()
    filtered.CopyFrom(net)
    filtered.ClearField("layer")
    filtered.state.CopyFrom(state)
    indices = []
    for index, layer in enumerate(net.layer):
        if layer.include and layer.exclude:
            file, line, col = locate(index) if locate else (None, None, None)
            raise CompileError(f"layer '{layer.name}' has both include and exclude rules",
                               file, line, col,
                               "specify either include rules or exclude rules, not both "
                               "(Caffe refuses the mix)")
        if layer_included(layer, state):
            filtered.layer.add().CopyFrom(layer)
            indices.append(index)
    return FilteredNet(filtered, indices, state)


def describe_state(state):
    """`TRAIN, stages freeze-convnet+factored, level 0`: how messages name a NetState."""
    stages = "+".join(state.stage) if state.stage else "none"
    return f"{caffe_pb2.Phase.Name(state.phase)}, stages {stages}, level {state.level}"


# --- states worth checking for a net file on its own ------------------------------------------

class PhaseCandidates(NamedTuple):
    states: list              # NetStates to compile the net with in this phase
    unusable_reason: object   # why there are none: the net is not meant for this phase


def candidate_states(net, phase):
    """NetStates under which a net file is meant to be compiled, for checking it alone.

    Caffe only ever sees the states a solver or a caller gives; a net file checked on its own
    has none. The candidates are: no stages, and each distinct stage set an include rule names
    (in that rule's phase, or any phase). A net split into variants by stage (LRCN's caption net
    needs 'factored' or 'unfactored' for its LSTMs) does not compile with a stage set that picks
    no variant, so each candidate is completed: while some bottom has no producer in the
    selection but an unselected layer would produce it under more stages, those stages are
    added. A bottom nobody can produce stays missing, so a typo is still reported. A candidate
    whose missing bottom only layers of the other phase produce is dropped: the net is not
    meant for this phase (a deploy net whose reshape layers say `include { phase: TEST }`).
    """
    number = phase_number(phase)
    stage_sets = [()]
    for layer in net.layer:
        for rule in layer.include:
            if rule.stage and (not rule.HasField("phase") or rule.phase == number):
                stage_sets.append(tuple(rule.stage))
    states, seen, reason = [], set(), None
    for stages in stage_sets:
        state, blocker = _complete_state(net, net_state(net, number, stages, 0))
        if blocker is not None:
            reason = reason or blocker
            continue
        key = frozenset(state.stage)
        if key not in seen:
            seen.add(key)
            states.append(state)
    return PhaseCandidates(states, None if states else reason)


def _complete_state(net, state, max_rounds=16):
    """`state` plus the stages needed to produce bottoms no selected layer produces, and why
    the net cannot be used in this phase at all (None when it can)."""
    state = _copy_state(state)
    for _ in range(max_rounds):
        missing = _first_missing_bottom(net, state)
        if missing is None:
            break
        extra, other_phase_producer = _stages_that_produce(net, state, missing)
        if extra:
            state.stage.extend(extra)
            continue
        if other_phase_producer is not None:
            other = caffe_pb2.Phase.Name(1 - state.phase)
            return state, (f"bottom '{missing}' is produced only in {other} (by layer "
                           f"'{other_phase_producer.name}')")
        break
    return state, None


def _copy_state(state):
    copy = caffe_pb2.NetState()
    copy.CopyFrom(state)
    return copy


def _first_missing_bottom(net, state):
    produced = set()
    for layer in net.layer:
        if (layer.include and layer.exclude) or not layer_included(layer, state):
            continue
        for bottom in layer.bottom:
            if bottom not in produced:
                return bottom
        produced.update(layer.top)
    return None


def _stages_that_produce(net, state, blob):
    """New stages under which the first unselected producer of `blob` would be selected, and
    a producer restricted to the other phase (the answer when no stages help)."""
    have = set(state.stage)
    other_phase_producer = None
    for layer in net.layer:
        if blob not in layer.top or layer.exclude or layer_included(layer, state):
            continue
        for rule in layer.include:
            if rule.HasField("phase") and rule.phase != state.phase:
                other_phase_producer = other_phase_producer or layer
                continue
            candidate = _copy_state(state)
            candidate.stage.extend(s for s in rule.stage if s not in have)
            if state_meets_rule(candidate, rule):
                return [s for s in rule.stage if s not in have], None
    return [], other_phase_producer


# --- a tool given a net file and a NetState --------------------------------------------------

def split_stages(values):
    """--stage values as tools take them (Caffe's spelling): repeatable, each possibly a
    comma-separated list. ["a,b", "c"] -> ("a", "b", "c")."""
    return tuple(stage for value in values or () for stage in value.split(",") if stage)


def stage_sets(net, phase):
    """The stage sets a net file defines for `phase` (completed as lrcn-check completes them),
    as tuples of stage names; the empty set is not listed."""
    return [tuple(state.stage) for state in candidate_states(net, phase).states if state.stage]


def _stage_sets_text(net, phase):
    """"a,b | c,d": the stage sets as --stage takes them, or None when the net has none."""
    sets = stage_sets(net, phase)
    return " | ".join(",".join(stages) for stages in sets) if sets else None


def with_stage_choice(compile_state, net, phase, stages=(), level=0, filename=None):
    """Run `compile_state()` (a tool compiling the upgraded `net` in this NetState) so that a
    review tool never silently shows nothing: a net without layers, or a state that selects
    none, is a CompileError; when no stages were given and the state does not compile, the
    error's hint names the stage sets to pick from. Returns (result, note): the note lists the
    stage sets the net also defines when none were given (None otherwise)."""
    if not net.layer:
        raise CompileError("the net defines no layers", filename)
    state = net_state(net, phase, stages, level)
    choices = _stage_sets_text(net, phase)
    pick = f"this net chooses its layers by stage; pick a stage set with --stage: {choices}"
    if not filter_net(net, state=state).indices:
        raise CompileError(f"no layer is selected in {describe_state(state)}", filename,
                           hint=pick if choices else "its include / exclude rules leave no "
                           "layer in this NetState")
    hint = pick if choices and not stages else None
    try:
        result = compile_state()
    except CompileError as error:
        if hint is None:
            raise
        raise CompileError(error.message, error.file, error.line, error.col,
                           f"{error.hint}; {hint}" if error.hint else hint) from None
    note = None
    if hint is not None:
        note = f"compiled with no stages; the net also defines the stage sets {choices}"
    return result, note


# --- the nets a solver builds --------------------------------------------------------------------

@dataclass
class NetSelection:
    """One net a solver builds. Unpacks as `(role, source, state)`.

    role: "train", or "test0", "test1", ... in Caffe's test-net order.
    source: the resolved path of the net file, or the inline NetParameter.
    state: the NetState Caffe builds it with (solver default phase < the net's own `state` <
        train_state / test_state), ready for compile_net(..., state=state).
    document: a compiler.Document for the net, for located errors: the loaded net file, or
        the inline net's part of the solver file (None when the solver was a bare message).
    """
    role: str
    source: object
    state: object
    document: object = dataclass_field(default=None, repr=False)

    def __iter__(self):
        return iter((self.role, self.source, self.state))


_TRAIN_NET_FIELDS = ("train_net_param", "train_net", "net_param", "net")


def solver_net_states(solver, solver_file=None):
    """The train net and the test nets a solver builds, as Caffe's Solver::Init builds them.

    `solver` is a SolverParameter, a compiler.Document of a solver file or its path (the
    latter two give the file name for relative net paths and locations for errors). Returns a
    list of NetSelection, the train net first.
    """
    if isinstance(solver, (str, os.PathLike)):
        solver = load_file(os.fspath(solver), "solver")
    document = solver if isinstance(solver, Document) else None
    message = upgrade(document.message if document else solver)
    solver_file = solver_file or (document.filename if document else None)
    loader = _NetLoader(document, solver_file)
    selections = [_train_net(message, loader)]
    selections.extend(_test_nets(message, loader))
    return selections


class _NetLoader:
    """Reads each net a solver names once, and places solver errors in the solver file."""

    def __init__(self, document, solver_file):
        self.document, self.solver_file = document, solver_file
        self._loaded = {}

    def error(self, message, path, hint=None):
        line, col = self.document.locate(path) if self.document else (None, None)
        return CompileError(message, self.solver_file, line, col, hint)

    def written_order(self, field):
        """Sort key putting solver fields in the order the file has them."""
        line, col = self.document.locate((field,)) if self.document else (None, None)
        return (line or 0, col or 0)

    def location(self, path):
        line, col = self.document.locate(path) if self.document else (None, None)
        return (self.solver_file, line, col)

    def from_file(self, path, field_path):
        resolved = resolve_path(path, self.solver_file, "net file", self.location(field_path))
        if resolved not in self._loaded:
            self._loaded[resolved] = load_file(resolved, "net")
        document = self._loaded[resolved]
        return resolved, document.message, document

    def inline(self, net, field_path):
        return net, net, self._inline_document(net, field_path)

    def _inline_document(self, net, field_path):
        # The inline net's fields keep their positions in the solver file, re-rooted at its
        # block so that ("layer", 3) finds them as it would in a net file of their own.
        if self.document is None:
            return None
        if self.document.syntax is None:
            depth = len(field_path)
            positions = {path[depth:]: where for path, where in self.document.positions.items()
                         if path[:depth] == field_path and len(path) > depth}
            return Document(net, "net", self.solver_file, positions)
        block = self.document.written(field_path)[1]
        return Document(net, "net", self.solver_file, syntax=block)


def _train_net(solver, loader):
    given = sorted((name for name in _TRAIN_NET_FIELDS if solver.HasField(name)),
                   key=loader.written_order)
    if not given:
        raise loader.error("the solver names no train net", (),
                           "set one of net, net_param, train_net, train_net_param")
    if len(given) > 1:
        raise loader.error(f"the solver names more than one train net ({', '.join(given)})",
                           (given[1],), "keep exactly one of net, net_param, train_net, "
                           "train_net_param")
    name = given[0]
    if name.endswith("_param"):
        source, net, document = loader.inline(getattr(solver, name), (name,))
    else:
        source, net, document = loader.from_file(getattr(solver, name), (name,))
    state = _merged_state(caffe_pb2.TRAIN, net, solver.train_state)
    return NetSelection("train", source, state, document)


def _test_nets(solver, loader):
    generic = [name for name in ("net_param", "net") if solver.HasField(name)]
    specific = len(solver.test_net_param) + len(solver.test_net)
    _check_test_counts(solver, loader, bool(generic), specific)
    sources = []
    for i, net in enumerate(solver.test_net_param):
        sources.append(loader.inline(net, ("test_net_param", i)))
    for i, path in enumerate(solver.test_net):
        sources.append(loader.from_file(path, ("test_net", i)))
    for _ in range(len(solver.test_iter) - specific):
        name = generic[0]
        if name == "net_param":
            sources.append(loader.inline(solver.net_param, ("net_param",)))
        else:
            sources.append(loader.from_file(solver.net, ("net",)))
    selections = []
    for i, (source, net, document) in enumerate(sources):
        extra = solver.test_state[i] if solver.test_state else caffe_pb2.NetState()
        state = _merged_state(caffe_pb2.TEST, net, extra)
        selections.append(NetSelection(f"test{i}", source, state, document))
    return selections


def _check_test_counts(solver, loader, has_generic, specific):
    iters = len(solver.test_iter)
    # With a generic net (net / net_param), extra test_iter entries make more test nets of it.
    if (has_generic and iters < specific) or (not has_generic and iters != specific):
        raise loader.error(f"test_iter must be given once per test net: {iters} test_iter for "
                           f"{specific} test net(s)", ("test_iter", 0),
                           "add or remove test_iter lines so each test net has one")
    instances = iters if has_generic else specific
    if solver.test_state and len(solver.test_state) != instances:
        raise loader.error(f"test_state must be unspecified or given once per test net: "
                           f"{len(solver.test_state)} test_state for {instances} test net(s)",
                           ("test_state", 0))
    if instances and solver.test_interval <= 0:
        raise loader.error(f"the solver has {instances} test net(s) but test_interval is "
                           f"{solver.test_interval}", ("test_interval",),
                           "set test_interval > 0 (Caffe requires it when there are test nets)")


def _merged_state(phase, net, solver_state):
    """Caffe's precedence: the role's phase, then the net's own `state`, then the solver's."""
    state = caffe_pb2.NetState(phase=phase)
    state.MergeFrom(net.state)
    state.MergeFrom(solver_state)
    return state
