"""Training on several processes with Caffe's multi-GPU semantics, over torch.distributed.

A `World` is this process's place in a process group (gloo on CPU, NCCL on CUDA). The solver
uses it at three points and nowhere else:
- start: rank 0's weights (and, on resume, its solver history, iteration and each rank's run
  state) are broadcast, so every rank starts identical whatever it loaded;
- every iteration, after the iter_size local passes: one all-reduce of the gradients (summed,
  then divided by the number of ranks: Caffe averages), of the local loss (so the log shows the
  mean over all ranks) and of the stop / snapshot requests (so every rank stops or snapshots
  at the same iteration). Clipping, the division by iter_size, regularisation and the update
  follow on identical gradients, in Caffe's order;
- snapshots: every rank's run state (data positions, recurrent state, random generators) is
  gathered to rank 0, which alone writes the files.

Every collective has a deadline (the process group's timeout), so a rank that dies or hangs
ends the others with PeerError instead of a hang. Transport is torch.distributed only; byte
strings travel as uint8 tensors (nothing is pickled).
"""

import datetime
import os

import torch
import torch.distributed as dist

from compiler.errors import CompileError

DEFAULT_TIMEOUT_S = 1800      # torch's own default; test passes on rank 0 must fit in it


class PeerError(CompileError):
    """Another rank failed, died or stopped answering; this rank stops too. `quiet` when a
    launcher reports the failing rank itself (this rank's message would repeat it)."""

    def __init__(self, message, quiet=False):
        super().__init__(message)
        self.quiet = quiet


class World:
    """This process's rank among `size` training processes.

    group: a torch.distributed process group (None: the default group, which must be
    initialised). device: where gradients live (NCCL needs CUDA tensors).
    """

    def __init__(self, group=None, device=None):
        if not dist.is_initialized():
            raise CompileError("torch.distributed is not initialised",
                               hint="call World.from_env() (under torchrun) or "
                                    "torch.distributed.init_process_group() first")
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.backend = dist.get_backend(group)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if self.backend == "nccl" and self.device.type != "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())

    @classmethod
    def from_env(cls, device=None, timeout_s=None):
        """Join the process group torchrun (or lrcn-train's launcher) describes in RANK,
        WORLD_SIZE, MASTER_ADDR and MASTER_PORT; NCCL when `device` is CUDA, gloo otherwise."""
        missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
                   if name not in os.environ]
        if missing:
            raise CompileError(f"the environment does not describe a process group (missing "
                               f"{', '.join(missing)})", hint="start the script with torchrun")
        device = torch.device(device) if device is not None else torch.device("cpu")
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            timeout = datetime.timedelta(seconds=timeout_s or DEFAULT_TIMEOUT_S)
            try:
                dist.init_process_group(backend, init_method="env://", timeout=timeout)
            except (RuntimeError, ValueError, OSError) as error:
                raise PeerError(f"cannot join the process group: {_first_line(error)}") \
                    from None
        return cls(device=device)

    @property
    def is_root(self):
        return self.rank == 0

    def close(self):
        if dist.is_initialized() and self.group is None:
            dist.destroy_process_group()

    # --- collectives (each wrapped: a lost peer becomes one PeerError) ---------------------

    def _run(self, what, operation, *args, **kwargs):
        try:
            return operation(*args, group=self.group, **kwargs)
        except (RuntimeError, ValueError, OSError) as error:
            raise PeerError(f"rank {self.rank}: lost the other ranks during {what} (a rank "
                            f"stopped, died or hung): {_first_line(error)}",
                            quiet=bool(os.environ.get("LRCN_LAUNCHED"))) from None

    def broadcast_tensors(self, tensors):
        """Overwrite every tensor with rank 0's value."""
        with torch.no_grad():
            for tensor in tensors:
                staged = tensor.detach().to(self.device)
                self._run("the broadcast from rank 0", dist.broadcast, staged, src=0)
                if staged is not tensor:
                    tensor.copy_(staged)

    def reduce_iteration(self, gradients, loss, requests):
        """Average `gradients` in place over the ranks (Caffe: sum / number of devices), and
        return (the ranks' mean loss, the number of ranks that made each request)."""
        flat = [g.detach().reshape(-1).to(self.device, torch.float64 if g.dtype ==
                                          torch.float64 else torch.float32) for g in gradients]
        tail = torch.tensor([float(loss)] + [float(r) for r in requests],
                            dtype=torch.float32, device=self.device)
        buffer = torch.cat(flat + [tail]) if flat else tail
        self._run("the gradient all-reduce", dist.all_reduce, buffer)
        offset = 0
        with torch.no_grad():
            for gradient in gradients:
                count = gradient.numel()
                gradient.copy_(buffer[offset:offset + count].view_as(gradient))
                gradient.div_(self.size)
                offset += count
        tail = buffer[offset:].cpu()
        return float(tail[0]) / self.size, [int(round(float(v))) for v in tail[1:]]

    def broadcast_bytes(self, data):
        """Rank 0's bytes on every rank (others pass None)."""
        length = torch.tensor([len(data) if self.is_root else 0], dtype=torch.int64,
                              device=self.device)
        self._run("the broadcast from rank 0", dist.broadcast, length, src=0)
        payload = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device)
                   if self.is_root else torch.empty(int(length), dtype=torch.uint8,
                                                    device=self.device))
        if int(length):
            self._run("the broadcast from rank 0", dist.broadcast, payload, src=0)
        return bytes(payload.cpu().numpy()) if int(length) else b""

    def gather_bytes(self, data):
        """Every rank's bytes, in rank order, on rank 0 (None elsewhere)."""
        length = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        lengths = [torch.zeros_like(length) for _ in range(self.size)]
        self._run("the gather of run states", dist.all_gather, lengths, length)
        longest = max(int(n) for n in lengths)
        payload = torch.zeros(longest, dtype=torch.uint8, device=self.device)
        if data:
            payload[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        parts = [torch.zeros_like(payload) for _ in range(self.size)]
        self._run("the gather of run states", dist.all_gather, parts, payload)
        if not self.is_root:
            return None
        return [bytes(part[:int(n)].cpu().numpy()) for part, n in zip(parts, lengths)]

    def root_first(self, action):
        """Run `action` on rank 0 only; if it fails, rank 0 raises its error and the other
        ranks stop with a quiet PeerError instead of waiting for data that never comes."""
        failure = None
        if self.is_root:
            try:
                action()
            except Exception as error:        # re-raised below, after telling the others
                failure = error
        flag = torch.tensor([1 if failure is not None else 0], dtype=torch.int64,
                            device=self.device)
        self._run("the broadcast from rank 0", dist.broadcast, flag, src=0)
        if failure is not None:
            raise failure
        if int(flag):
            raise PeerError("rank 0 failed (its error is reported above)", quiet=True)


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def resolve(world):
    """Solver's `world` argument: None, a World, or a torch.distributed process group."""
    if world is None or isinstance(world, World):
        return world
    return World(group=world)
