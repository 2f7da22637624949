"""runtime.fillers.fill_ against Caffe's filler.hpp: bounds, moments, fan modes, bilinear."""

import math

import pytest
import torch

from lrcn_proto import caffe_pb2
from runtime.fillers import fill_


def filler(**fields):
    return caffe_pb2.FillerParameter(**fields)


def filled(shape, seed=0, dtype=torch.float64, **fields):
    return fill_(torch.empty(shape, dtype=dtype), filler(**fields),
                 torch.Generator().manual_seed(seed))


def test_default_filler_is_constant_zero():
    assert torch.equal(filled((3, 4), **{}), torch.zeros(3, 4, dtype=torch.float64))


def test_constant_uses_value():
    assert torch.all(filled((2, 5), type="constant", value=0.25) == 0.25)


def test_uniform_stays_in_bounds_with_uniform_moments():
    values = filled((200, 500), type="uniform", min=-2.0, max=3.0)
    assert values.min() >= -2.0 and values.max() < 3.0
    assert values.mean().item() == pytest.approx(0.5, abs=0.02)
    assert values.var().item() == pytest.approx(25 / 12, rel=0.02)


def test_gaussian_moments():
    values = filled((200, 500), type="gaussian", mean=1.5, std=0.5)
    assert values.mean().item() == pytest.approx(1.5, abs=0.005)
    assert values.std().item() == pytest.approx(0.5, rel=0.01)


def test_gaussian_sparse_keeps_sparse_over_shape0_of_weights():
    # filler.hpp: Bernoulli mask with p = sparse / shape(0).
    values = filled((20, 5000), type="gaussian", std=1.0, sparse=5)
    density = (values != 0).double().mean().item()
    assert density == pytest.approx(5 / 20, abs=0.01)


def test_gaussian_sparse_zero_gives_zeros():
    assert torch.all(filled((4, 6), type="gaussian", sparse=0) == 0)


def test_gaussian_sparse_above_shape0_is_rejected():
    with pytest.raises(ValueError, match="sparse"):
        filled((2, 6), type="gaussian", sparse=3)


@pytest.mark.parametrize("kind", ["constant", "uniform", "xavier", "msra", "positive_unitball"])
def test_sparse_is_rejected_outside_gaussian(kind):
    with pytest.raises(ValueError, match="sparse"):
        filled((2, 6), type=kind, sparse=1)


# Shape (6, 4, 3, 3): fan_in = count / shape[0] = 36, fan_out = count / shape[1] = 54.
FAN = {"FAN_IN": 36.0, "FAN_OUT": 54.0, "AVERAGE": 45.0}
BIG_CONV = (600, 4, 3, 3)  # same fan_in; fan_out 1350, only for sample statistics


@pytest.mark.parametrize("norm", sorted(FAN))
def test_xavier_bound_follows_variance_norm(norm):
    values = filled((6, 4, 3, 3), type="xavier", variance_norm=norm)
    bound = math.sqrt(3 / FAN[norm])
    assert values.abs().max().item() <= bound
    assert values.abs().max().item() > 0.9 * bound


@pytest.mark.parametrize("norm", sorted(FAN))
def test_msra_std_follows_variance_norm(norm):
    shape = (6, 4, 3, 3)
    n = FAN[norm]
    # Many independent draws of the small blob give a precise std estimate.
    draws = torch.stack([filled(shape, seed=s, type="msra", variance_norm=norm)
                         for s in range(200)])
    assert draws.std().item() == pytest.approx(math.sqrt(2 / n), rel=0.02)
    assert draws.mean().item() == pytest.approx(0.0, abs=0.01)


def test_xavier_variance_matches_uniform():
    values = filled(BIG_CONV, type="xavier")
    assert values.var().item() == pytest.approx(1 / 36, rel=0.02)


def test_fans_are_integer_divisions_of_legacy_shape():
    # A 1-D blob: num() = 10, channels() = 1 (LegacyShape), so fan_in = 1, fan_out = 10.
    values = filled((10,), type="xavier", variance_norm="FAN_OUT")
    assert values.abs().max().item() <= math.sqrt(3 / 10)
    values = filled((7, 3), type="xavier", variance_norm="AVERAGE")  # (3 + 7) / 2 = 5
    assert values.abs().max().item() <= math.sqrt(3 / 5)


def test_positive_unitball_rows_sum_to_one():
    values = filled((5, 3, 2, 2), type="positive_unitball")
    assert torch.all(values >= 0) and torch.all(values <= 1)
    torch.testing.assert_close(values.reshape(5, -1).sum(dim=1),
                               torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("size, profile", [
    (4, [0.25, 0.75, 0.75, 0.25]),                 # factor 2: f = 2, c = 0.75
    (5, [1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3]),         # factor 3: f = 3, c = 2 / 3
    (2, [1.0, 0.0]),                                # f = 1, c = 0
])
def test_bilinear_kernel_values(size, profile):
    values = filled((3, 2, size, size), dtype=torch.float32, type="bilinear")
    p = torch.tensor(profile, dtype=torch.float64)
    expected = (p[:, None] * p[None, :]).to(torch.float32)
    for out_channel in range(3):
        for in_channel in range(2):
            torch.testing.assert_close(values[out_channel, in_channel], expected,
                                       rtol=0, atol=1e-7)


def test_bilinear_needs_square_4d_blob():
    with pytest.raises(ValueError, match="4-D"):
        filled((3, 4, 4), type="bilinear")
    with pytest.raises(ValueError, match="square"):
        filled((1, 1, 3, 4), type="bilinear")


def test_unknown_type_lists_allowed_types():
    with pytest.raises(ValueError, match="unknown filler type 'glorot'.*xavier"):
        filled((2, 2), type="glorot")


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "xavier", "msra", "positive_unitball"])
def test_same_seed_same_blob_other_seed_other_blob(kind):
    first = filled((4, 3, 2, 2), seed=7, type=kind)
    again = filled((4, 3, 2, 2), seed=7, type=kind)
    other = filled((4, 3, 2, 2), seed=8, type=kind)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_fill_is_in_place_and_float32_matches_float32_draws():
    tensor = torch.empty(3, 4)
    out = fill_(tensor, filler(type="uniform"), torch.Generator().manual_seed(3))
    assert out is tensor
    expected = torch.rand((3, 4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(tensor, expected)


def test_fill_parameter_leaves_it_without_grad_history():
    parameter = torch.nn.Parameter(torch.zeros(2, 3))
    fill_(parameter, filler(type="gaussian"), torch.Generator().manual_seed(0))
    assert parameter.grad_fn is None and parameter.requires_grad
    assert parameter.abs().sum() > 0
