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

import torch

from compiler.cli import ToolParser, run_tool
from compiler.errors import CompileError
from compiler.netstate import split_stages, with_stage_choice
from compiler.extras import require


class CaffeLog:
    """Writes glog-style lines to stderr (through tqdm while a bar is shown) and scalars to an
    optional CSV file and TensorBoard run."""

    def __init__(self, source="solver.py", csv_path=None, tensorboard_dir=None):
        self.source = source
        self.bar = None
        self.csv_file = self.csv_writer = self.board = None
        if csv_path:
            self.csv_file = open(csv_path, "w", newline="", encoding="utf-8")
            self.csv_writer = csv.writer(self.csv_file)
            self.csv_writer.writerow(["iteration", "phase", "name", "value"])
        if tensorboard_dir:
            require("tensorboard", "--tensorboard")
            from torch.utils.tensorboard import SummaryWriter
            self.board = SummaryWriter(tensorboard_dir)

    def __call__(self, message):
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
    if not torch.cuda.is_available():
        log(f"--gpu {gpu} asked for but no CUDA device is available: running on CPU")
        return torch.device("cpu")
    if gpu == "all":
        if torch.cuda.device_count() > 1:
            log("--gpu all: training on one process uses GPU 0 (multi-GPU training with "
                "torch.distributed is not available yet)")
        return torch.device("cuda", 0)
    try:
        return torch.device("cuda", int(gpu.split(",")[0]))
    except ValueError:
        raise CompileError(f"--gpu expects a device number or 'all', got {gpu!r}") from None


# --- lrcn-train ------------------------------------------------------------------------------

def _train(argv):
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
    parser.add_argument("--gpu", help="CUDA device number, or 'all'")
    parser.add_argument("--iterations", type=int, help="override max_iter")
    parser.add_argument("--stage", action="append", help="extra net stage (repeatable; "
                        "or comma-separated)")
    parser.add_argument("--log-csv", metavar="FILE", help="also write every logged scalar to "
                        "a CSV file (iteration, phase, name, value)")
    parser.add_argument("--tensorboard", metavar="DIR", help="also log scalars to TensorBoard")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    solver_file = args.solver or args.solver_file
    if not solver_file:
        parser.error("give the solver file: lrcn-train SOLVER (or --solver=SOLVER)")
    if args.weights and args.snapshot:
        parser.error("give either --weights or --snapshot, not both (as Caffe)")
    from runtime.solver import Solver   # imported here so --help stays fast
    log = CaffeLog(csv_path=args.log_csv, tensorboard_dir=args.tensorboard)
    try:
        solver = Solver(solver_file, stages=split_stages(args.stage), device=_device(args.gpu, log),
                        log=log)
        if args.iterations is not None:
            solver.param.max_iter = args.iterations
        if args.weights:
            for path in args.weights.split(","):
                log(f"Finetuning from {path}")
                solver.net.copy_from(path)
        _watch(solver, log)
        previous = _install_signal_handlers(solver, log)
        try:
            _run_with_progress(solver, log, args.snapshot, show=not args.no_progress)
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
    """SIGINT: snapshot and stop (a second one aborts). SIGHUP: snapshot and go on.
    Returns the handlers it replaced."""
    def on_interrupt(signum, frame):
        if solver.requested_action == "stop":
            raise KeyboardInterrupt
        log("SIGINT: snapshotting and stopping after this iteration (press again to abort)")
        solver.requested_action = "stop"

    def on_hangup(signum, frame):
        log("SIGHUP: snapshotting after this iteration and continuing")
        solver.requested_action = "snapshot"
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, on_interrupt)}
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    return previous


def _run_with_progress(solver, log, resume, show):
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
        solver.solve(resume)
    finally:
        if log.bar is not None:
            log.bar.close()
            log.bar = None
    log(f"Training took {time.perf_counter() - started:.1f} s")


def train_main(argv=None):
    sys.exit(run_tool(_train, argv))


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


def _open_net(args, parser, log):
    from runtime.net import Net
    path = args.model or args.net
    if not path:
        parser.error("give the net file: NET (or --model=NET)")
    import compiler
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
    return net


def _test(argv):
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
    sys.exit(run_tool(_test, argv))


# --- lrcn-time -------------------------------------------------------------------------------

def _time(argv):
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
    sys.exit(run_tool(_time, argv))
