"""Issue 14: 2 gloo ranks reproduce one process with the combined batch (Caffe's semantics),
split sequence streams by stream, and resume exactly. One pair of processes runs every
distributed job (module fixture); each test compares one part with a single process."""

import glob
import os

import numpy as np
import pytest

from distributed_support import (SOLVER_CASES, lm_solver, row_solver, run_ranks, train,
                                 write_rows, write_streams)

RESUME_AT = 3


def _jobs(folder, world):
    out = {"rows": {}}
    for name, lines in SOLVER_CASES:
        losses, weights, _ = train(row_solver(folder, name, lines, batch=4), world)
        out["rows"][name] = {"losses": losses, "weights": weights}
    losses, weights, solver = train(lm_solver(folder), world)
    out["lm"] = {"losses": losses, "weights": weights,
                 "shape": list(solver.net.blobs["cont"].shape)}
    # Straight vs. resumed, with a snapshot whose LSTM state and data positions differ per rank.
    snapshots = os.path.join(folder, "resume")
    losses, weights, _ = train(lm_solver(folder, extra=f"snapshot: {RESUME_AT}",
                                         prefix=snapshots), world)
    out["straight"] = {"losses": losses, "weights": weights}
    resumed_losses, resumed_weights, _ = train(
        lm_solver(folder, prefix=snapshots + "_again"), world,
        resume=f"{snapshots}_iter_{RESUME_AT}.solverstate")
    out["resumed"] = {"losses": resumed_losses, "weights": resumed_weights}
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    write_rows(str(folder))
    write_streams(str(folder))
    return folder, run_ranks(folder, _worker_jobs(str(folder)))


def _worker_jobs(folder):
    import functools
    return functools.partial(_jobs, folder)


def _close(a, b, tolerance=1e-5):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, np.float64),
                               rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("case", [name for name, _ in SOLVER_CASES])
def test_two_ranks_reproduce_one_process_with_the_combined_batch(ranks, case):
    """2 ranks x batch 4 == 1 process x batch 8: the loss of every iteration and the final
    weights (shared params once, frozen ones unchanged), on every rank."""
    folder, results = ranks
    lines = dict(SOLVER_CASES)[case]
    losses, weights, solver = train(row_solver(str(folder), case, lines, batch=8))
    assert len(losses) == solver.param.max_iter
    _close(results[0]["rows"][case]["losses"], losses)
    for rank in results:
        assert sorted(rank["rows"][case]["weights"]) == sorted(weights)
        for key, value in weights.items():
            _close(rank["rows"][case]["weights"][key], value)
    assert "shared_w" in weights
    initial = train(row_solver(str(folder), case, lines, batch=8), iterations=0)[1]
    for key in ("frozen/0", "frozen/1"):
        assert results[1]["rows"][case]["weights"][key] == initial[key]


def test_sequence_streams_split_by_stream(ranks):
    """2 ranks x 2 streams == 1 process x 4 streams: each rank keeps whole streams and its
    LSTM state continues them across batches (BATCH_SIZE normalisers are equal per rank)."""
    folder, results = ranks
    losses, weights, _ = train(lm_solver(str(folder)))
    assert [rank["lm"]["shape"] for rank in results] == [[5, 2], [5, 2]]
    _close(results[0]["lm"]["losses"], losses)
    for rank in results:
        for key, value in weights.items():
            _close(rank["lm"]["weights"][key], value)


def test_two_rank_resume_is_exact(ranks):
    folder, results = ranks
    for rank in results:
        assert rank["resumed"]["losses"] == rank["straight"]["losses"][RESUME_AT:]
        assert rank["resumed"]["weights"] == rank["straight"]["weights"]
    assert len(glob.glob(str(folder / "resume_iter_*.solverstate.lrcn"))) == 2


def test_a_two_rank_snapshot_is_not_resumed_exactly_by_one_process(ranks):
    from compiler.errors import CompileError
    from runtime.solver import Solver
    folder, _ = ranks
    solver = Solver(lm_solver(str(folder), prefix=str(folder / "single")), log=lambda _: None)
    with pytest.raises(CompileError, match="written by 2 training process"):
        solver.restore(str(folder / f"resume_iter_{RESUME_AT}.solverstate"))
