"""lrcn-train's launcher: one training process per GPU (`--gpu 0,1`, `--gpu all`) or N CPU
processes (`--nproc N`) on this machine.

The launcher starts the workers with the environment torchrun would give them (RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free MASTER_PORT), so a worker runs exactly
the code a torchrun-started lrcn-train runs. Each worker runs in its own session: a Ctrl-C in
the terminal reaches the launcher only, which passes SIGINT / SIGTERM on to every worker as
SIGTERM; the ranks agree on the iteration to stop at, rank 0 snapshots once and all stop (a
second signal stops them at once). Rank 0 writes the log to the terminal; the other ranks'
output goes to files in a temporary folder, shown only when they fail.

When a worker fails, the others are stopped within a bounded time (they notice the lost peer
at their next collective, or are killed after a grace period), and the user sees one message:
the first failure, with its rank. Workers in launched mode write their error to
LRCN_ERROR_FILE instead of the terminal, so nothing is reported twice.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PEER_LOST = 3           # a worker's exit status when it stopped because another rank failed
GRACE_S = 5             # after a failure, how long the other ranks get to stop by themselves
                        # (a lost peer shows at once; a hung rank is killed: snapshots are atomic)
_POLL_S = 0.1


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_command(argv):
    """The command that runs lrcn-train's body in a worker (the same interpreter)."""
    return [sys.executable, "-c", "from runtime.cli import train_main; train_main()"] + \
        list(argv)


def launch(argv, count, gpus=None, log=None):
    """Run `count` workers of lrcn-train with `argv`; return the exit status for the user.
    gpus: the CUDA device numbers, one per worker (None: CPU processes)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    folder = tempfile.mkdtemp(prefix="lrcn-train-ranks-")
    port = free_port()
    workers = []
    try:
        for rank in range(count):
            env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank),
                       WORLD_SIZE=str(count), LOCAL_WORLD_SIZE=str(count),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LRCN_LAUNCHED="1",
                       LRCN_ERROR_FILE=os.path.join(folder, f"rank{rank}.error"))
            if gpus is not None:
                env["LRCN_GPUS"] = ",".join(str(g) for g in gpus)
            # As torchrun: N processes each using every core spin-wait for one another
            # (a small net ran 10x slower on 2 cores); share the cores out instead.
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
            output = None if rank == 0 else open(os.path.join(folder, f"rank{rank}.log"), "wb")
            try:
                workers.append(subprocess.Popen(worker_command(argv), env=env, stdout=output,
                                                stderr=output, start_new_session=True))
            finally:
                if output is not None:
                    output.close()
        return _supervise(workers, folder, log)
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _supervise(workers, folder, log):
    signals = []

    def forward(signum, frame):
        signals.append(signum)
        for process in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
    previous = {number: signal.signal(number, forward)
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        exits = {}            # rank -> (status, order of exit)
        first_failure = None
        while len(exits) < len(workers):
            for rank, process in enumerate(workers):
                if rank not in exits and process.poll() is not None:
                    exits[rank] = (process.returncode, len(exits))
                    if process.returncode != 0 and first_failure is None:
                        first_failure = time.monotonic()
            if first_failure is not None and time.monotonic() - first_failure > GRACE_S:
                for rank, process in enumerate(workers):
                    if rank not in exits:
                        process.kill()
                        process.wait()
                        exits[rank] = ("stopped", len(exits))
            time.sleep(_POLL_S)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    failed = [(order, rank, status) for rank, (status, order) in exits.items()
              if status not in (0, "stopped")]
    if not failed:
        return 0
    # The cause: the first rank to fail on its own account; a rank that only lost its peers
    # (PEER_LOST) is the cause only when no other rank failed (a hang: it timed out).
    own = [f for f in failed if f[2] != PEER_LOST]
    _, rank, status = min(own or failed)
    if signals and status in (130, -signal.SIGTERM, -signal.SIGINT):
        log("stopped at once by a second signal: the last complete snapshot is kept")
        return 130
    log(_describe(rank, status, folder))
    return 1


def _describe(rank, status, folder):
    message = _read(os.path.join(folder, f"rank{rank}.error"))
    if message:
        return message if message.startswith(f"rank {rank}:") else f"rank {rank}: {message}"
    if isinstance(status, int) and status < 0:
        name = signal.Signals(-status).name if -status in signal.Signals._value2member_map_ \
            else str(-status)
        return f"rank {rank} was killed by signal {name}; the other ranks were stopped"
    tail = _read(os.path.join(folder, f"rank{rank}.log"))
    tail = "\n".join(tail.splitlines()[-15:])
    return f"rank {rank} exited with status {status}" + (f":\n{tail}" if tail else "")


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def report_error(message):
    """In a launched worker, hand the error to the launcher instead of printing it."""
    path = os.environ.get("LRCN_ERROR_FILE")
    if not path:
        return False
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(message)
    return True
