"""lrcn-train, lrcn-test and lrcn-time: Caffe's `caffe train / test / time`.

Log lines keep Caffe's glog layout (`I1126 06:19:04.123456  4242 solver.py] Iteration 100, loss
= 2.1`), so Caffe's log habits and tools (tools/extra/parse_log.py, grep 'Test net output')
work unchanged. On a terminal a progress bar runs under the log.
"""

import csv
import datetime
import os
import signal
import sys
import time

from runtime import interrupts, precision, threads

# Only the standard library at module level: the launcher's workers import this module
# before train_main can catch a Ctrl-C, and torch takes seconds to import (see _run_quietly).


class CaffeLog:
    """Writes glog-style lines to stderr (through tqdm while a bar is shown) and scalars to an
    optional CSV file and TensorBoard run, which open_outputs() opens once training starts (a
    run that fails to start leaves the files as they were)."""

    CSV_HEADER = ["iteration", "phase", "name", "value"]

    def __init__(self, source="solver.py", csv_path=None, tensorboard_dir=None, quiet=False):
        self.source = source
        self.quiet = quiet      # ranks other than 0 of a run on several processes
        self.bar = None
        self.csv_path, self.tensorboard_dir = csv_path, tensorboard_dir
        self.csv_file = self.csv_writer = self.board = None
        if tensorboard_dir:
            from compiler.extras import require
            require("tensorboard", "--tensorboard")   # checked now: a missing package fails early

    def open_outputs(self, append=False):
        """Open the CSV file (appending when a run resumes) and the TensorBoard writer."""
        if self.csv_path:
            try:
                self.csv_file = open(self.csv_path, "a" if append else "w", newline="",
                                     encoding="utf-8")
            except OSError as error:
                from compiler.errors import CompileError
                raise CompileError(f"cannot write the CSV log: {error.strerror}",
                                   self.csv_path) from None
            self.csv_writer = csv.writer(self.csv_file)
            if self.csv_file.tell() == 0:
                self.csv_writer.writerow(self.CSV_HEADER)
        if self.tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter
            self.board = SummaryWriter(self.tensorboard_dir)

    def __call__(self, message):
        if self.quiet:
            return
        now = datetime.datetime.now()
        line = f"I{now:%m%d %H:%M:%S.%f} {os.getpid():5d} {self.source}] {message}"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def scalar(self, iteration, phase, name, value):
        if self.csv_writer is not None:
            self.csv_writer.writerow([iteration, phase, name, f"{value:.9g}"])
            self.csv_file.flush()
        if self.board is not None:
            self.board.add_scalar(f"{phase}/{name}", value, iteration)

    def close(self):
        if self.csv_file is not None:
            self.csv_file.close()
        if self.board is not None:
            self.board.close()


def _device(gpu, log):
    """--gpu ID|all -> a torch device; None keeps the solver's solver_mode."""
    if gpu is None:
        return None
    import torch
    from compiler.errors import CompileError
    if not torch.cuda.is_available():
        log(f"--gpu {gpu} asked for but no CUDA device is available: running on CPU")
        return torch.device("cpu")
    if gpu == "all":
        return torch.device("cuda", 0)      # one GPU here; several start a process each
    try:
        return torch.device("cuda", int(gpu.split(",")[0]))
    except ValueError:
        raise CompileError(f"--gpu expects a device number or 'all', got {gpu!r}") from None


# --- lrcn-train ------------------------------------------------------------------------------

def _python_path_argument(parser):
    parser.add_argument("--python-path", action="append", metavar="DIR", default=[],
                        help="also import Python layer modules from DIR (repeatable); use only "
                             "for code you trust (by default only sys.path / PYTHONPATH)")


def _allow_python_paths(directories):
    from runtime.python_layer import allow_python_path
    for directory in directories:
        allow_python_path(directory)


def _train(argv):
    from compiler.cli import ToolParser
    parser = ToolParser("lrcn-train", "Train a net with a Caffe solver file (like `caffe train`).",
                        "lrcn-train solvers/caption_solver.prototxt --iterations 20   # runs/caption/*_iter_20.*\n"
                        "lrcn-train --solver=solvers/caption_solver.prototxt --iterations 20 \\\n"
                        "    --weights=runs/caption/lrcn_caption_iter_20.caffemodel\n"
                        "lrcn-train solvers/caption_solver.prototxt --iterations 40 \\\n"
                        "    --snapshot runs/caption/lrcn_caption_iter_20.solverstate")
    parser.add_argument("solver_file", nargs="?", metavar="SOLVER", help="solver .prototxt")
    parser.add_argument("--solver", help="the solver file (Caffe's spelling)")
    parser.add_argument("--weights", help="initial weights: a.caffemodel[,b.caffemodel] "
                        "loaded by layer name")
    parser.add_argument("--snapshot", help="resume from a .solverstate")
    parser.add_argument("--gpu", help="CUDA device number; a list (0,1) or 'all' trains on "
                        "one process per GPU")
    parser.add_argument("--nproc", type=int, metavar="N", help="train on N processes on the "
                        "CPU of this machine (gloo); each runs the solver's batch")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="on several "
                        "processes: how long a rank waits for the others before it gives up "
                        "(default 1800)")
    parser.add_argument("--iterations", type=int, help="override max_iter")
    parser.add_argument("--stage", action="append", help="extra net stage (repeatable; "
                        "or comma-separated)")
    parser.add_argument("--log-csv", metavar="FILE", help="also write every logged scalar to "
                        "a CSV file (iteration, phase, name, value); appended to on --snapshot")
    parser.add_argument("--tensorboard", metavar="DIR", help="also log scalars to TensorBoard")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    threads.add_argument(parser)
    precision.add_argument(parser)
    _python_path_argument(parser)
    args = parser.parse_args(argv)
    threads.configure(args.threads)
    precision.configure(parser, args.precision)
    solver_file = args.solver or args.solver_file
    if not solver_file:
        parser.error("give the solver file: lrcn-train SOLVER (or --solver=SOLVER)")
    if args.weights and args.snapshot:
        parser.error("give either --weights or --snapshot, not both (as Caffe)")
    if args.nproc is not None and args.nproc < 1:
        parser.error("--nproc needs at least 1 process")
    if args.nproc and args.gpu:
        parser.error("give --nproc (processes on the CPU) or --gpu (one process per GPU), "
                     "not both")
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout needs a positive number of seconds")
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        return _train_rank(args, solver_file)
    gpus = _gpu_list(args.gpu)
    if (args.nproc or 1) > 1 or len(gpus) > 1:
        from runtime import launch
        interrupts.RECEIVED.raise_if_any()     # before any worker starts
        return launch.launch(argv if argv is not None else sys.argv[1:],
                             args.nproc or len(gpus), gpus or None)
    return _train_process(args, solver_file)


def _gpu_list(gpu):
    """The GPUs of --gpu 0,1 / all (several: one process each); [] on a machine without CUDA
    (one CPU process, as _device says) or for one GPU."""
    if gpu is None or (gpu != "all" and "," not in gpu):
        return []
    import torch
    if not torch.cuda.is_available():
        return []
    if gpu == "all":
        return list(range(torch.cuda.device_count()))
    try:
        return [int(g) for g in gpu.split(",") if g.strip()]
    except ValueError:
        from compiler.errors import CompileError
        raise CompileError(f"--gpu expects device numbers or 'all', got {gpu!r}") from None


def _train_rank(args, solver_file):
    """One rank of a run on several processes (started by the launcher or torchrun). In the
    launcher's workers, errors go to the launcher, which reports the first one once."""
    from runtime import distributed, launch
    try:
        world = distributed.World.from_env(_rank_device(args.gpu), args.timeout)
        try:
            return _train_process(args, solver_file, world)
        finally:
            world.close()
    except distributed.PeerError as error:
        # The launcher shows it only when no rank failed on its own account (a hang).
        if launch.report_error(str(error)) or error.quiet:
            return launch.PEER_LOST
        raise
    except Exception as error:
        from compiler.errors import CompileError
        if isinstance(error, CompileError) and launch.report_error(str(error)):
            return 1
        raise


def _rank_device(gpu):
    """This rank's device: the launcher's GPU list (LRCN_GPUS) or --gpu under torchrun, by
    LOCAL_RANK; the CPU without --gpu or without CUDA."""
    import torch
    gpus = os.environ.get("LRCN_GPUS") or gpu
    if not gpus or not torch.cuda.is_available():
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK") or 0)
    if gpus == "all":
        return torch.device("cuda", local)
    listed = [int(g) for g in gpus.split(",") if g.strip()]
    return torch.device("cuda", listed[local % len(listed)])


def _train_process(args, solver_file, world=None):
    _allow_python_paths(args.python_path)
    from compiler.netstate import split_stages
    from compiler.schema import load_file
    from compiler.validate import check_solver
    from runtime.solver import Solver   # imported here so --help stays fast
    # lrcn-check's validation, before anything is opened or written; only training creates
    # the snapshot directory.
    document = load_file(solver_file, "solver")
    check_solver(document, create_snapshot_dir=True)
    root = world is None or world.is_root
    log = CaffeLog(csv_path=args.log_csv if root else None,
                   tensorboard_dir=args.tensorboard if root else None, quiet=not root)
    try:
        device = _device(args.gpu, log) if world is None else world.device
        solver = Solver(document, stages=split_stages(args.stage), device=device, log=log,
                        world=world)
        if args.iterations is not None:
            solver.param.max_iter = args.iterations
        if args.weights:
            def load_weights():
                for path in args.weights.split(","):
                    log(f"Finetuning from {path}")
                    solver.net.copy_from(path)
            # Rank 0 reads; its weights reach every rank before the first iteration.
            load_weights() if world is None else world.root_first(load_weights)
        if args.snapshot:
            solver.restore(args.snapshot)
        interrupts.RECEIVED.raise_if_any()     # before the logs open
        log.open_outputs(append=bool(args.snapshot))
        _watch(solver, log)
        previous = _install_signal_handlers(solver, log)
        try:
            interrupts.RECEIVED.raise_if_any()     # one lost just before the handlers came
            _run_with_progress(solver, log, show=not args.no_progress and root)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    finally:
        log.close()
    return 0


def _watch(solver, log):
    """Send the scalars of every displayed iteration and every test to the CSV / TensorBoard."""
    def after_iteration(solver, outputs):
        iteration = solver.iter - 1
        display = solver.param.display
        if display and iteration % display == 0:
            log.scalar(iteration, "train", "smoothed_loss", solver.smoothed_loss)
            for name in solver.net.outputs:
                value = outputs[name].detach()
                if value.numel() == 1:
                    log.scalar(iteration, "train", name, float(value))
    solver.callbacks.append(after_iteration)
    original_test = solver.test

    def test_and_record(index):
        scores = original_test(index)
        for name, value in scores.items():
            if isinstance(value, float):
                log.scalar(solver.iter, f"test{index}", name, value)
        return scores
    solver.test = test_and_record


def _install_signal_handlers(solver, log):
    """SIGINT / SIGTERM: snapshot and stop after this iteration; a second one stops at once
    (KeyboardInterrupt: an unfinished snapshot leaves the last complete set, see
    compiler.files). SIGHUP: snapshot and go on. Returns the handlers it replaced."""
    stopping = []

    def on_stop(signum, frame):
        name = signal.Signals(signum).name
        if stopping:
            log(f"{name} again: stopping now, without finishing the iteration or snapshot")
            raise KeyboardInterrupt
        stopping.append(signum)
        log(f"{name}: snapshotting and stopping after this iteration (send it again to stop "
            "at once)")
        solver.requested_action = "stop"

    def on_hangup(signum, frame):
        log("SIGHUP: snapshotting after this iteration and continuing")
        if solver.requested_action != "stop":
            solver.requested_action = "snapshot"
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, on_stop),
                signal.SIGTERM: signal.signal(signal.SIGTERM, on_stop)}
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    return previous


def _run_with_progress(solver, log, show):
    if show and sys.stderr.isatty():
        from tqdm import tqdm
        start = solver.iter
        log.bar = tqdm(total=solver.param.max_iter, initial=start, unit="iter",
                       dynamic_ncols=True, file=sys.stderr)

        def advance(solver, outputs):
            log.bar.n = solver.iter
            log.bar.set_postfix(loss=f"{solver.smoothed_loss:.4g}", refresh=False)
            log.bar.refresh()
        solver.callbacks.append(advance)
    started = time.perf_counter()
    try:
        solver.solve()
    finally:
        if log.bar is not None:
            log.bar.close()
            log.bar = None
    log(f"Training took {time.perf_counter() - started:.1f} s")


def _run_quietly(body, argv):
    """compiler.cli.run_tool under runtime.interrupts.run_quietly: a Ctrl-C while the heavy
    modules import (start-up), or one Python lost, also ends in exit status 130 and no
    traceback."""
    def run():
        from compiler.cli import run_tool
        return run_tool(body, argv)
    return interrupts.run_quietly(run)


def train_main(argv=None):
    sys.exit(_run_quietly(_train, argv))


# --- lrcn-test -------------------------------------------------------------------------------

def _net_arguments(parser, default_phase):
    parser.add_argument("net", metavar="NET", nargs="?", help="net .prototxt")
    parser.add_argument("--model", help="the net file (Caffe's spelling)")
    parser.add_argument("--weights", help="weights: a.caffemodel[,b.caffemodel]")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--phase", default=default_phase, choices=["TRAIN", "TEST"],
                        type=str.upper)
    parser.add_argument("--stage", action="append", help="net stages (repeatable, or "
                        "comma-separated); a net that chooses its layers by stage and gets "
                        "none is refused or noted with the stage sets it defines")
    parser.add_argument("--level", type=int, default=0)
    parser.add_argument("--gpu", help="CUDA device number")
    threads.add_argument(parser)
    precision.add_argument(parser)
    _python_path_argument(parser)


def _open_net(args, parser, log):
    from runtime.net import Net
    threads.configure(args.threads)
    precision.configure(parser, args.precision)
    _allow_python_paths(args.python_path)
    path = args.model or args.net
    if not path:
        parser.error("give the net file: NET (or --model=NET)")
    import compiler
    from compiler.netstate import split_stages, with_stage_choice
    document = compiler.load_file(path, "net")
    stages = split_stages(args.stage)
    net, note = with_stage_choice(
        lambda: Net(document, weights=args.weights, phase=args.phase, stages=stages,
                    level=args.level),
        compiler.upgrade(document.message, document), args.phase, stages, args.level, path)
    if note:
        log(f"note: {note}")
    device = _device(args.gpu, log)
    if device is not None:
        net.to(device)
    interrupts.RECEIVED.raise_if_any()
    return net


def _test(argv):
    from compiler.cli import ToolParser
    parser = ToolParser("lrcn-test", "Score a net: mean of every output over N forward passes "
                        "(like `caffe test`).",
                        "lrcn-test nets/lrcn_caption.prototxt --weights "
                        "runs/caption/lrcn_caption_iter_40.caffemodel \\\n"
                        "    --iterations 2 --stage factored,2-layer,test-on-val")
    _net_arguments(parser, "TEST")
    args = parser.parse_args(argv)
    log = CaffeLog("caffe.py")
    net = _open_net(args, parser, log)
    net.zero_inputs()
    from runtime.solver import mean_outputs

    def log_batch(batch, values):
        for name, vector in values.items():
            for value in vector.tolist():
                log(f"Batch {batch}, {name} = {value:.6g}")
    means, loss = mean_outputs(net, args.iterations, log_batch)
    log(f"Loss: {loss:.6g}")
    weights = net.output_loss_weights()
    for name, mean in means.items():
        for value in mean.tolist():
            suffix = (f" (* {weights[name]:.6g} = {weights[name] * value:.6g} loss)"
                      if name in weights else "")
            log(f"{name} = {value:.6g}{suffix}")
    return 0


def test_main(argv=None):
    sys.exit(_run_quietly(_test, argv))


# --- lrcn-time -------------------------------------------------------------------------------

def _time(argv):
    from compiler.cli import ToolParser
    parser = ToolParser("lrcn-time", "Per-layer forward and backward times (like `caffe time`).",
                        "lrcn-time nets/lrcn_caption.prototxt --stage factored,2-layer --iterations 2")
    _net_arguments(parser, "TRAIN")
    parser.set_defaults(iterations=50)
    args = parser.parse_args(argv)
    log = CaffeLog("caffe.py")
    net = _open_net(args, parser, log)
    net.zero_inputs()
    from runtime.timing import time_layers
    table = time_layers(net, args.iterations, log)
    print(table)
    return 0


def time_main(argv=None):
    sys.exit(_run_quietly(_time, argv))
