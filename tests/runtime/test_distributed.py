"""Issue 14: 2 gloo ranks reproduce one process with the combined batch (Caffe's semantics)."""

import functools
import os

import numpy as np
import pytest

from distributed_support import (SOLVER_CASES, lm_solver, row_solver, run_ranks, train,
                                  write_rows, write_streams)


def _row_job(folder, world):
    out = {}
    for name, lines in SOLVER_CASES:
        losses, weights, _ = train(row_solver(folder, name, lines, batch=4), world)
        out[name] = {"losses": losses, "weights": weights}
    return out


def _close(a, b, tolerance=1e-5):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, np.float64),
                               rtol=tolerance, atol=tolerance)


def test_two_ranks_reproduce_one_process_with_the_combined_batch(tmp_path):
    folder = str(tmp_path)
    write_rows(folder)
    ranks = run_ranks(tmp_path, functools.partial(_row_job, folder))
    for name, lines in SOLVER_CASES:
        losses, weights, solver = train(row_solver(folder, name, lines, batch=8))
        assert len(losses) == solver.param.max_iter
        for rank in ranks:
            # Every rank ends with the same weights, those of one process with batch 2B.
            for key, value in weights.items():
                _close(rank[name]["weights"][key], value)
        _close(ranks[0][name]["losses"], losses)
        frozen = [key for key in weights if key.startswith("frozen")]
        assert frozen and all(ranks[1][name]["weights"][key] == ranks[0][name]["weights"][key]
                              for key in frozen)


def _lm_job(folder, world):
    losses, weights, solver = train(lm_solver(folder), world)
    return {"losses": losses, "weights": weights,
            "shape": list(solver.net.blobs["cont"].shape)}


def test_sequence_streams_split_by_stream(tmp_path):
    """2 ranks x 2 streams == 1 process x 4 streams: each rank keeps whole streams and its
    LSTM state continues them across batches (BATCH_SIZE normalisers are equal per rank)."""
    folder = str(tmp_path)
    write_streams(folder)
    ranks = run_ranks(tmp_path, functools.partial(_lm_job, folder))
    losses, weights, _ = train(lm_solver(folder))
    assert [rank["shape"] for rank in ranks] == [[5, 2], [5, 2]]
    _close(ranks[0]["losses"], losses)
    for key, value in weights.items():
        _close(ranks[0]["weights"][key], value)
        _close(ranks[1]["weights"][key], value)
