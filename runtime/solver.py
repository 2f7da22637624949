"""runtime.Solver: Caffe's Solver / SGDSolver loop over runtime.Net, with Caffe's exact order.

Per iteration (solver.cpp Step, sgd_solver.cpp ApplyUpdate): test when due; iter_size
forward/backward passes accumulate gradients; the loss is smoothed over average_loss
iterations; then ClipGradients -> Normalize (/ iter_size) -> Regularize (L1/L2 x decay_mult)
-> ComputeUpdateValue (lr x lr_mult, the solver type's rule) -> w -= update; iter += 1;
snapshot when due. Test nets share the train net's weights by layer name.

Snapshots are Caffe's files (<prefix>_iter_<N>.caffemodel and .solverstate, readable by Caffe)
plus a small sidecar (<prefix>_iter_<N>.solverstate.lrcn, see runtime.run_state: arrays and
JSON, never a pickle) holding what Caffe's format has no room for: the random generators, every
layer's run state (data positions, Dropout's mask generators, the h / c recurrent layers carry
between batches) and the loss-smoothing window. With it a resumed CPU run continues
bit-identically; without it (a .solverstate Caffe wrote), resuming works as in Caffe.

The three files are one set, written by compiler.files.write_files_atomically: all three are on
disk before any is renamed into place, and the .solverstate goes last, so a kill at any instant
leaves the newest complete set or the one before. The sidecar records the SHA-256 of the
.caffemodel and .solverstate it was written with, and resuming refuses a set whose files do not
belong together. The snapshots step() takes are written on a background thread while training
goes on (their contents are taken at the snapshot's iteration; only the disk waits), and step()
returns once they are on disk; snapshot() called directly returns with its files on disk.
"""

import hashlib
import math
import os
import random
import time

import numpy as np
import torch

import compiler
from compiler import files
from compiler.errors import CompileError
from compiler.layer_types import LOSS, has_trait
from compiler.validate import check_solver
from lrcn_proto import caffe_pb2
from runtime import distributed, run_state, sharding
from runtime import weights as weight_files
from runtime.layers.loss import normalizes_by_valid_count
from runtime.net import DEFAULT_SEED, Net
from runtime.updates import UPDATE_RULES, clip_gradients, learning_rate, regularize


# Fields accepted but with no effect here, and why (the rest of SolverParameter is implemented).
FIELD_NOTES = {
    "debug_info": "debug_info: Caffe's per-layer data/diff norms are not printed "
                  "(use lrcn-time or net.blobs to inspect layers)",
    "layer_wise_reduce": "layer_wise_reduce: only matters to Caffe's multi-GPU NCCL reduction",
    "device_id": "device_id: used when solver_mode is GPU and CUDA is present",
}


def solver_notes(param):
    """One line per field of a SolverParameter that only matters to Caffe's GPU or formats."""
    notes = [FIELD_NOTES[f.name] for f, _ in param.ListFields() if f.name in FIELD_NOTES]
    if param.solver_mode == caffe_pb2.SolverParameter.GPU and not torch.cuda.is_available():
        notes.append("solver_mode GPU: no CUDA device here, so training runs on the CPU")
    if param.snapshot_format == caffe_pb2.SolverParameter.HDF5:
        notes.append("snapshot_format HDF5: snapshots are written as BINARYPROTO "
                     "(.caffemodel / .solverstate), which Caffe reads too")
    return notes


class Solver:
    """pycaffe-like solver: `solver.step(n)`, `solver.solve()`, `solver.net`, `solver.test_nets`,
    `solver.iter`.

    solver: a solver .prototxt path, a SolverParameter, or a compiler.Document of one.
    stages: extra stages added to every net's state (lrcn-train --stage).
    device: torch device; default from solver_mode (GPU falls back to CPU with a warning).
    log: a callable taking one line (Caffe's log format); default prints to stderr.
    world: train on several processes (runtime.distributed: a World or a torch.distributed
    process group) with Caffe's multi-GPU semantics; rank 0 alone logs, tests and snapshots.
    """

    def __init__(self, solver, stages=(), device=None, log=None, input_shapes=None, world=None):
        self.world = distributed.resolve(world)
        self.is_root = self.world is None or self.world.is_root
        self.log = (log or _default_log) if self.is_root else _no_log
        self.document = _load_solver(solver)
        self.param = compiler.upgrade(self.document.message)
        self.solver_file = self.document.filename
        self._check_parameters()
        seed = self.param.random_seed if self.param.random_seed >= 0 else None
        rank = self.world.rank if self.world is not None else 0
        if seed is not None:
            torch.manual_seed(seed + rank)      # Caffe seeds each device with random_seed + rank
        if device is None and self.world is not None and self.world.device.type == "cuda":
            device = self.world.device
        self.device = torch.device(device) if device is not None else self._device_from_mode()
        for note in solver_notes(self.param):
            self.log("note: " + note)
        self.net, self.test_nets = self._build_nets(stages, seed, input_shapes or {})
        if self.world is not None:
            self._log_world()
        for path in self.param.weights:
            # Caffe 1.0's solver-level initial weights, loaded by layer name like --weights.
            self.log(f"Finetuning from {path}")
            self.net.copy_from(path)
        self.rule = UPDATE_RULES[self.param.type](self.param)
        self.learnable = self.net.learnable_params()
        self.history = [[torch.zeros_like(p.tensor.data) for _ in range(self.rule.histories)]
                        for p in self.learnable]
        self.iter = 0
        self.current_step = 0
        self._losses = []
        self._smoothed_loss = 0.0
        self._window_start = 0           # the iteration the loss-smoothing window counts from
        self._continue_window = False    # set by restore(): the next step() keeps the window
        self.requested_action = None     # "snapshot" / "stop", set by signal handlers
        self.stopped_early = False
        self.callbacks = []               # callables(solver, outputs) after each iteration
        # Caffe's Solver::Callback points (pycaffe's add_callback): callables without arguments,
        # run before an iteration's forward/backward and before its update.
        self.on_start = []
        self.on_gradients_ready = []
        self.last_outputs = {}
        self.last_test_scores = {}
        self._last_snapshot_iter = None
        self._writes = files.BackgroundWriter()     # snapshots step() takes
        self._synchronised = False     # rank 0's weights broadcast (several ranks only)
        self._rank_states = None       # every rank's run state from a resumed sidecar

    # --- set-up ---------------------------------------------------------------------------

    def _check_parameters(self):
        # The validation lrcn-check runs, so a solver it passes does not fail here.
        check_solver(self.document)

    def _device_from_mode(self):
        if self.param.solver_mode == caffe_pb2.SolverParameter.GPU:
            if torch.cuda.is_available():
                return torch.device("cuda", self.param.device_id)
            self.log("solver_mode is GPU but no CUDA device is available: running on CPU")
        return torch.device("cpu")

    def _build_nets(self, stages, seed, input_shapes):
        roles = compiler.solver_net_states(self.document)
        train, tests = None, []
        shard, train_seed = None, seed
        if self.world is not None:
            # Dropout and fillers draw from random_seed + rank; the record order stays the
            # random_seed's, so the ranks' batches together are one process's batches.
            shard = sharding.Shard(self.world.rank, self.world.size, seed)
            if seed is not None or self.world.rank:
                train_seed = (DEFAULT_SEED if seed is None else seed) + self.world.rank
        for role, source, state in roles:
            net = Net(source, phase=("TRAIN", "TEST")[state.phase],
                      stages=tuple(state.stage) + tuple(stages), level=state.level,
                      input_shapes=input_shapes, seed=train_seed if role == "train" else seed,
                      data_shard=shard if role == "train" else None)
            net.to(self.device)
            if role == "train":
                train = net
            else:
                tests.append(net)
        for test in tests:
            test.share_weights_from(train)
        return train, tests

    def _log_world(self):
        world = self.world
        self.log(f"Training on {world.size} ranks ({world.backend}): gradients are averaged "
                 "over the ranks, the learning rate is not rescaled (as Caffe); rank 0 tests, "
                 "snapshots and logs the loss averaged over the ranks (the net outputs shown "
                 "are its own)")
        plan = self.net.shard_plan
        for line in plan.describe(self.net.compiled, self.param.iter_size):
            self.log(line)
        for layer in self.net.compiled.layers:
            if has_trait(layer.type, LOSS) and normalizes_by_valid_count(layer.param):
                self.log(f"note: loss layer '{layer.name}' divides by its rank's count of "
                         "labels that are not ignored, so the ranks' average differs slightly "
                         "from one process's (as in Caffe; normalization: BATCH_SIZE makes it "
                         "exact)")
        for name, kind in plan.unsharded:
            self.log(f"note: data layer '{name}' ({kind}) is not split across ranks: every "
                     "rank reads its own data from it")

    # --- the loop --------------------------------------------------------------------------

    def solve(self, resume_file=None):
        """Train to max_iter (Caffe's Solver::Solve), optionally resuming a .solverstate."""
        if resume_file:
            self.restore(resume_file)
        if self.is_root:
            self.remove_stale_temporaries()
        self.log("Solving " + (self.net.compiled.name or "net"))
        self.log(f"Learning Rate Policy: {self.param.lr_policy}")
        self.step(self.param.max_iter - self.iter)
        if self.param.snapshot_after_train and self._last_snapshot_iter != self.iter:
            self.snapshot()
        if self.stopped_early:
            self.log("Optimization stopped early.")
            return
        if self.is_root and self.param.display and self.iter % self.param.display == 0:
            with torch.no_grad():
                outputs = self.net.run()
            self._update_smoothed_loss(outputs.loss.item())
            self.log(f"Iteration {self.iter}, loss = {_fmt(self._smoothed_loss)}")
        if self.is_root and self.param.test_interval and \
                self.iter % self.param.test_interval == 0:
            self.test_all()
        self.log("Optimization Done.")

    def step(self, iterations):
        """Run `iterations` training iterations (Caffe's Solver::Step)."""
        stop_iter = self.iter + iterations
        if not self._continue_window:
            self._losses, self._smoothed_loss, self._window_start = [], 0.0, self.iter
        self._continue_window = False
        if self.world is not None and not self._synchronised:
            self._synchronise()
        try:
            self._iterate(stop_iter)
            self._writes.wait()
        except KeyboardInterrupt:
            self._writes.abandon()      # stopping at once: an unfinished snapshot is given up
            raise
        except BaseException:
            unwritten = self._writes.wait_quietly()
            if unwritten is not None:
                self.log(f"error: a snapshot was not written: {unwritten}")
            raise

    def _iterate(self, stop_iter):
        param = self.param
        timer, iterations_last = time.perf_counter(), self.iter
        while self.iter < stop_iter:
            self._writes.check()
            self._clear_diffs()
            if (param.test_interval and self.iter % param.test_interval == 0
                    and (self.iter > 0 or param.test_initialization)):
                if self.is_root:
                    self.test_all()
                if self.world is None and self.requested_action == "stop":
                    self.stopped_early = True
                    break
            display = param.display and self.iter % param.display == 0
            for hook in self.on_start:
                hook()
            loss = 0.0
            for _ in range(param.iter_size):
                outputs = self.net.forward_backward()
                loss += outputs.loss.item()
            loss /= param.iter_size
            if self.world is not None:
                loss, agreed = self._reduce_iteration(loss)
            self.last_outputs = outputs
            self._update_smoothed_loss(loss)
            if display:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - iterations_last) / (lapse or 1)
                self.log(f"Iteration {self.iter} ({per_s:.4g} iter/s, {lapse:.4g}s/"
                         f"{param.display} iters), loss = {_fmt(self._smoothed_loss)}")
                timer, iterations_last = time.perf_counter(), self.iter
                self._log_outputs("Train", self.net, outputs)
            for hook in self.on_gradients_ready:
                hook()
            self.apply_update(display)
            self.iter += 1
            for callback in self.callbacks:
                callback(self, outputs)
            if self.world is None:
                action, self.requested_action = self.requested_action, None
            else:
                action = agreed
            if (param.snapshot and self.iter % param.snapshot == 0) or action == "snapshot" \
                    or action == "stop":
                self.snapshot(background=True)
            if action == "stop":
                self.stopped_early = True
                break

    # --- several processes (runtime.distributed) ---------------------------------------------

    _REQUESTS = ("stop", "snapshot")

    def _reduce_iteration(self, loss):
        """Average the gradients over the ranks (before clipping, as Caffe) and agree on the
        stop / snapshot requests any rank received. Returns (mean loss, agreed action)."""
        gradients = []
        for p in self.learnable:
            if not p.tensor.requires_grad:
                continue        # frozen (lr_mult 0) on every rank alike
            if p.tensor.grad is None:
                p.tensor.grad = torch.zeros_like(p.tensor)
            gradients.append(p.tensor.grad)
        requests = [self.requested_action == kind for kind in self._REQUESTS]
        self.requested_action = None
        loss, counts = self.world.reduce_iteration(gradients, loss, requests)
        agreed = next((kind for kind, count in zip(self._REQUESTS, counts) if count), None)
        return loss, agreed

    def _synchronise(self, resumed=None):
        """Give every rank rank 0's weights; after a resume also its history, iteration,
        loss window and each rank's own run state (`resumed`: rank 0's per-rank states)."""
        tensors = [p.tensor for p in self.learnable]
        if resumed is not None:
            tensors += [h for histories in self.history for h in histories]
        self.world.broadcast_tensors(tensors)
        self._synchronised = True
        if resumed is None:
            return
        header = None
        if self.is_root:
            header = run_state.encode({"iter": self.iter, "current_step": self.current_step,
                                       "loss_window": self._loss_window(),
                                       "ranks": resumed})
        state = run_state.decode(self.world.broadcast_bytes(header), "rank 0's resume state")
        self.iter, self.current_step = state["iter"], state["current_step"]
        self._set_loss_window(state["loss_window"])
        if state["ranks"] and not self.is_root:
            self._load_rank_state(state["ranks"][self.world.rank])

    def _rank_state(self):
        """What differs between ranks: the random streams and every net's run state."""
        return {"torch_rng": torch.get_rng_state(),
                # Python layers may draw from these, as Caffe's Python layers often do.
                "numpy_rng": list(np.random.get_state()),
                "python_rng": _python_random_state(random.getstate()),
                "nets": [net_run_state(net) for net in [self.net] + self.test_nets]}

    def _load_rank_state(self, state):
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(tuple(state["numpy_rng"]))
        version, internal, gauss = state["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        for net, net_state in zip([self.net] + self.test_nets, state["nets"]):
            restore_net_run_state(net, net_state)

    def _gather_rank_states(self):
        """Every rank's run state, in rank order, on rank 0 (None on the others)."""
        parts = self.world.gather_bytes(run_state.encode(self._rank_state()))
        if parts is None:
            return None
        return [run_state.decode(part, f"rank {rank}'s run state")
                for rank, part in enumerate(parts)]

    def _clear_diffs(self):
        for p in self.net.parameters():
            p.grad = None

    def _update_smoothed_loss(self, loss):
        average = self.param.average_loss
        if len(self._losses) < average:
            self._losses.append(loss)
            size = len(self._losses)
            self._smoothed_loss = (self._smoothed_loss * (size - 1) + loss) / size
        else:
            index = (self.iter - self._window_start) % average
            self._smoothed_loss += (loss - self._losses[index]) / average
            self._losses[index] = loss

    @property
    def smoothed_loss(self):
        return self._smoothed_loss

    def apply_update(self, display=False):
        """SGDSolver::ApplyUpdate: clip, normalize, regularize, compute update, apply."""
        param = self.param
        rate, self.current_step = learning_rate(param, self.iter, self.current_step)
        if display:
            self.log(f"Iteration {self.iter}, lr = {_fmt(rate)}")
        with torch.no_grad():
            diffs = [p.tensor.grad if p.tensor.grad is not None
                     else torch.zeros_like(p.tensor) for p in self.learnable]
            norm = clip_gradients(diffs, param.clip_gradients)
            # Caffe logs every clipping; on display iterations is enough to follow training.
            if display and norm is not None and norm > param.clip_gradients:
                self.log(f"Gradient clipping: scaling down gradients (L2 norm {_fmt(norm)} > "
                         f"{_fmt(param.clip_gradients)}) by scale factor "
                         f"{_fmt(param.clip_gradients / norm)}")
            for p, diff, history in zip(self.learnable, diffs, self.history):
                if param.iter_size > 1:
                    diff.mul_(1.0 / param.iter_size)
                regularize(diff, p.tensor, param.weight_decay, p.decay_mult,
                           param.regularization_type)
                update = self.rule.update(diff, history, rate * p.lr_mult, self.iter)
                p.tensor.sub_(update)

    # --- testing ---------------------------------------------------------------------------

    def test_all(self):
        scores = {}
        for index in range(len(self.test_nets)):
            scores[index] = self.test(index)
        self.last_test_scores = scores
        return scores

    def test(self, index):
        """Caffe's Solver::Test: mean of every output over test_iter forward passes."""
        net = self.test_nets[index]
        iterations = self.param.test_iter[index]
        self.log(f"Iteration {self.iter}, Testing net (#{index})")
        means, loss = mean_outputs(net, iterations)
        if self.param.test_compute_loss:
            self.log(f"Test loss: {_fmt(loss)}")
        self._log_scores("Test", net, means)
        return {name: value.tolist() if value.numel() > 1 else float(value)
                for name, value in means.items()}

    def _log_outputs(self, which, net, outputs):
        self._log_scores(which, net, _flat_outputs(net, outputs))

    def _log_scores(self, which, net, values):
        weights = net.output_loss_weights()
        index = 0
        for name, vector in values.items():
            for value in vector.tolist():
                weight = weights.get(name, 0.0)
                suffix = f" (* {_fmt(weight)} = {_fmt(weight * value)} loss)" if weight else ""
                self.log(f"    {which} net output #{index}: {name} = {_fmt(value)}{suffix}")
                index += 1

    # --- snapshots -------------------------------------------------------------------------

    def snapshot_prefix(self):
        prefix = self.param.snapshot_prefix
        if not prefix:
            # Caffe's default: the solver file name without its extension.
            prefix = os.path.splitext(self.solver_file)[0]
        return prefix

    def snapshot(self, background=False):
        """Write <prefix>_iter_<N>.caffemodel, .solverstate and the .lrcn sidecar as one set
        (module docstring): the .solverstate, renamed last, commits it. With `background`
        the files are written while the caller goes on (step() waits for them)."""
        self._last_snapshot_iter = self.iter
        rank_states = self._gather_rank_states() if self.world is not None else None
        if not self.is_root:
            return None
        base = f"{self.snapshot_prefix()}_iter_{self.iter}"
        model_file, state_file = base + ".caffemodel", base + ".solverstate"
        self.log(f"Snapshotting to binary proto file {model_file}")
        net_proto = self.net.to_proto()
        if self.param.snapshot_diff:
            _add_diffs(net_proto, self.net)
        model_bytes = net_proto.SerializeToString()
        state = caffe_pb2.SolverState(iter=self.iter, learned_net=model_file,
                                      current_step=self.current_step)
        for index in range(self.rule.histories):
            for history in self.history:
                state.history.append(weight_files.array_to_blob(history[index].cpu().numpy()))
        state_bytes = state.SerializeToString()
        sidecar_state = self._sidecar_state(model_bytes, state_bytes)
        if rank_states is not None:
            sidecar_state.update(world_size=self.world.size, ranks=rank_states)
        sidecar = run_state.encode(sidecar_state)
        self.log(f"Snapshotting solver state to binary proto file {state_file}")
        self._writes.submit([(model_file, model_bytes), (state_file + ".lrcn", sidecar),
                             (state_file, state_bytes)])
        if not background:
            self._writes.wait()
        return model_file, state_file

    def remove_stale_temporaries(self):
        """Delete temporaries that killed runs left beside this solver's snapshots."""
        for path in files.remove_stale_temporaries(self.snapshot_prefix() + "_iter_"):
            self.log(f"removed {path}, left by an interrupted snapshot")

    def restore(self, state_file):
        """Resume from a .solverstate (Caffe's or ours); bit-identical with the .lrcn sidecar.
        On several ranks rank 0 reads the files and hands every rank its part."""
        if self.world is None:
            self._restore_files(state_file)
            return
        self._rank_states = None
        self.world.root_first(lambda: self._restore_files(state_file))
        self._synchronise(resumed=self._rank_states or [])

    def _restore_files(self, state_file):
        state_bytes = _read_bytes(state_file, ".solverstate")
        state = weight_files.read_solver_state(state_file)
        if state.iter < 0:
            raise CompileError(f"the solver state's iteration is negative ({state.iter})",
                               state_file, hint="a .solverstate Caffe or lrcn-train wrote "
                               "counts iterations from 0; this file is damaged")
        learned = None
        if state.learned_net:
            learned = state.learned_net
            if not os.path.exists(learned):
                beside = os.path.join(os.path.dirname(os.path.abspath(state_file)),
                                      os.path.basename(learned))
                learned = beside if os.path.exists(beside) else learned
        sidecar_file = state_file + ".lrcn"
        sidecar = None
        if os.path.lexists(sidecar_file):
            sidecar = run_state.read(sidecar_file)
            if not isinstance(sidecar, dict):
                raise CompileError("damaged resume-state file (not a table of states)",
                                   sidecar_file)
            _check_set(sidecar, state, state_bytes, learned, state_file, sidecar_file)
        self.iter = state.iter
        if learned:
            self.net.copy_from(learned)
        self.current_step = state.current_step
        expected = len(self.history) * self.rule.histories
        if len(state.history) != expected:
            raise CompileError(f"the solver state holds {len(state.history)} history blobs; "
                               f"this solver ({self.param.type}) needs {expected}", state_file)
        blobs = iter(state.history)
        with torch.no_grad():
            for index in range(self.rule.histories):
                for number, history in enumerate(self.history):
                    position = index * len(self.history) + number
                    array = weight_files.blob_for_shape(next(blobs), history[index].shape,
                                                        state_file, f"history blob {position}")
                    history[index].copy_(torch.from_numpy(array))
        if sidecar is not None:
            try:
                self._load_sidecar_state(sidecar)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError,
                    RuntimeError) as error:
                raise CompileError(f"damaged resume-state file ({type(error).__name__}: "
                                   f"{error})", sidecar_file) from None
        else:
            self.log(f"{sidecar_file} not found: resuming like Caffe (random streams, data "
                     "positions and recurrent states restart)")

    def _sidecar_state(self, model_bytes, state_bytes):
        return {"iter": self.iter,
                "caffemodel_sha256": hashlib.sha256(model_bytes).hexdigest(),
                "solverstate_sha256": hashlib.sha256(state_bytes).hexdigest(),
                "loss_window": self._loss_window(), **self._rank_state()}

    def _load_sidecar_state(self, state):
        ranks = self.world.size if self.world is not None else 1
        if state.get("world_size", 1) != ranks:
            raise CompileError(f"this snapshot was written by {state.get('world_size', 1)} "
                               f"training process(es); resuming it exactly needs as many, not "
                               f"{ranks}", hint="resume with the same number of ranks, or "
                               "delete the .lrcn file to resume like Caffe (data positions, "
                               "random streams and recurrent states restart)")
        self._set_loss_window(state["loss_window"])
        self._load_rank_state(state)
        if self.world is not None:
            self._rank_states = state["ranks"]

    def _loss_window(self):
        return {"losses": list(self._losses), "smoothed": self._smoothed_loss,
                "start": self._window_start}

    def _set_loss_window(self, window):
        self._losses = [float(loss) for loss in window["losses"]]
        self._smoothed_loss, self._window_start = float(window["smoothed"]), int(window["start"])
        self._continue_window = True


def _python_random_state(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _read_bytes(path, what):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise CompileError(f"cannot read {what}: {error.strerror}", str(path)) from None


def _check_set(sidecar, state, state_bytes, model_file, state_file, sidecar_file):
    """Refuse a sidecar that was not written with this .solverstate and its .caffemodel: a
    mixed set would resume silently inexactly."""
    incomplete = "the snapshot set is incomplete or mixed: "
    hint = ("resume from another snapshot, or delete the .lrcn file to resume like Caffe "
            "(random streams, data positions and recurrent states restart)")
    if sidecar.get("iter") != state.iter or \
            sidecar.get("solverstate_sha256") != hashlib.sha256(state_bytes).hexdigest():
        raise CompileError(incomplete + f"{os.path.basename(sidecar_file)} was not written "
                           "with this .solverstate", state_file, hint=hint)
    if model_file and os.path.exists(model_file):
        digest = hashlib.sha256(_read_bytes(model_file, ".caffemodel")).hexdigest()
        if digest != sidecar.get("caffemodel_sha256"):
            raise CompileError(incomplete + f"{model_file} is not the weights this "
                               ".solverstate was written with", state_file, hint=hint)


def _flat_outputs(net, outputs):
    """{output name: its values as a flat float64 CPU vector}, in the net's output order."""
    return {name: outputs[name].detach().reshape(-1).double().cpu() for name in net.outputs}


def mean_outputs(net, iterations, on_batch=None):
    """Caffe's test scoring: run `iterations` forward passes without gradients and return
    ({output name: mean flat vector}, mean objective). on_batch(batch, flat outputs) sees
    each pass (lrcn-test logs them)."""
    totals, loss = {}, 0.0
    with torch.no_grad():
        for batch in range(iterations):
            outputs = net.run()
            loss += outputs.loss.item()
            values = _flat_outputs(net, outputs)
            if on_batch is not None:
                on_batch(batch, values)
            for name, vector in values.items():
                totals[name] = vector if name not in totals else totals[name] + vector
    return {name: total / iterations for name, total in totals.items()}, loss / iterations


def net_run_state(net):
    """The net's random generator plus each layer's resume_state() (see CaffeLayer)."""
    layers = {}
    for layer, unit in zip(net.compiled.layers, net.units):
        layer_state = unit.resume_state()
        if layer_state is not None:
            layers[layer.key] = layer_state
    return {"rng": net.rng.get_state(), "layers": layers}


def restore_net_run_state(net, state):
    net.rng.set_state(state["rng"])
    for key, unit in zip((layer.key for layer in net.compiled.layers), net.units):
        if key in state["layers"]:
            unit.restore_state(state["layers"][key])


def _add_diffs(net_proto, net):
    for message, unit in zip(net_proto.layer, net.units):
        for blob, parameter in zip(message.blobs, unit.blobs):
            if parameter.grad is not None:
                blob.diff.extend(parameter.grad.detach().cpu().reshape(-1).tolist())


def _load_solver(solver):
    if isinstance(solver, compiler.Document):
        return solver
    if isinstance(solver, caffe_pb2.SolverParameter):
        return compiler.Document(solver, "solver", "<solver>")
    return compiler.load_file(solver, "solver")


def _fmt(value):
    """Numbers as Caffe's glog prints floats (6 significant digits)."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.6g}"


def _no_log(line):
    """Ranks other than 0 log nothing (Caffe: only the root solver displays)."""


def _default_log(line):
    import sys
    print(line, file=sys.stderr, flush=True)
