"""runtime.sharding in one process: which records each rank's data layers read."""

import h5py
import numpy as np
import pytest

from compiler.errors import CompileError
from distributed_support import LM_NET, ROW_NET, write_rows, write_streams
from runtime.net import Net
from runtime.sharding import Shard


def _net(tmp_path, text, shard, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return Net(str(path), phase="TRAIN", data_shard=shard)


def _lm(tmp_path):
    write_streams(str(tmp_path))
    return LM_NET.replace("{list}", str(tmp_path / "streams.txt"))


def test_rank_reads_its_chunk_of_every_global_batch(tmp_path):
    write_rows(str(tmp_path))
    with h5py.File(tmp_path / "rows.h5") as handle:
        rows = handle["x"][...]
    text = ROW_NET.replace("{list}", str(tmp_path / "rows.txt")).replace("{batch}", "4")
    net = _net(tmp_path, text, Shard(1, 2, 7))
    data = net.layer("data")
    for batch in range(3):
        x, _ = data()
        # One process with batch 8 reads rows 8k..8k+8; rank 1 of 2 keeps the second half.
        np.testing.assert_array_equal(x.numpy(), rows[8 * batch + 4:8 * batch + 8])
    assert net.blobs["x"].shape == (4, 5)


def test_sequence_streams_are_split_by_stream_not_by_row(tmp_path):
    net = _net(tmp_path, _lm(tmp_path), Shard(1, 2, 5))
    with h5py.File(tmp_path / "streams.h5") as handle:
        cont = handle["cont"][...]
    data = net.layer("data")
    for batch in range(2):
        tops = data()
        # Every time step (row), only streams 2 and 3: whole sequences stay on this rank.
        np.testing.assert_array_equal(tops[0].numpy(), cont[5 * batch:5 * batch + 5, 2:4])
    assert net.shard_plan.streams
    assert net.compiled.blobs["h"] == (5, 2, 5)


def test_a_reshape_writing_the_stream_count_is_a_clear_error(tmp_path):
    text = _lm(tmp_path).replace(
        'layer { name: "predict"',
        'layer { name: "fix" type: "Reshape" bottom: "h" top: "h2"\n'
        '  reshape_param { shape { dim: 5 dim: 4 dim: 5 } } }\n'
        'layer { name: "predict"').replace('bottom: "h" top: "predict"',
                                           'bottom: "h2" top: "predict"')
    _net(tmp_path, text, None)     # fine on one process
    with pytest.raises(CompileError) as error:
        _net(tmp_path, text, Shard(0, 2, 5))
    message = str(error.value)
    assert "layer 'fix' (Reshape)" in message and "number of streams (4)" in message
    assert "each rank has 2 streams" in message and "write 0" in message


def test_streams_that_do_not_divide_are_refused(tmp_path):
    with pytest.raises(CompileError, match="4 streams cannot be split evenly over 3 ranks"):
        _net(tmp_path, _lm(tmp_path), Shard(0, 3, 5))
