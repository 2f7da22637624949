"""Filter (filter_layer.cpp), built by compile_net and run by runtime.Net: NumPy
transcriptions of Caffe's forward and backward loops, the varying number of kept rows, and
Caffe's refusals."""

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import compiler
from compiler.errors import CompileError
from runtime.net import Net


def filter_net(shapes, tops=("a_kept", "b_kept")):
    names = list(shapes)
    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }"
                    for s in shapes.values())
    inputs = " ".join(f'top: "{n}"' for n in names)
    bottoms = " ".join(f'bottom: "{n}"' for n in names)
    top_text = " ".join(f'top: "{t}"' for t in tops)
    return (f'layer {{ name: "in" type: "Input" {inputs} input_param {{ {dims} }} }}\n'
            f'layer {{ name: "filter" type: "Filter" {bottoms} {top_text} }}\n')


SHAPES = {"a": (5, 3, 2), "b": (5, 4), "s": (5, 1)}


def build(shapes=SHAPES, tops=("a_kept", "b_kept")):
    return Net(compiler.load_text(filter_net(shapes, tops), "net", "f.prototxt"))


def caffe_forward(bottoms, selector):
    """FilterLayer::Reshape (indices_to_forward_) and Forward_cpu's row copies."""
    indices = [item for item in range(selector.shape[0]) if selector.reshape(-1)[item]]
    tops = []
    for bottom in bottoms:
        dim = bottom.size // bottom.shape[0]
        flat, top = bottom.reshape(-1), np.zeros((len(indices),) + bottom.shape[1:])
        for n, index in enumerate(indices):
            top.reshape(-1)[n * dim:(n + 1) * dim] = flat[index * dim:(index + 1) * dim]
        tops.append(top)
    return tops, indices


def caffe_backward(top_diff, bottom_shape, indices):
    """Backward_cpu: kept rows take their top row's diff, the others are set to zero."""
    dim = int(np.prod(bottom_shape[1:]))
    diff, next_kept = np.full(bottom_shape, np.nan).reshape(-1), 0
    for n in range(bottom_shape[0]):
        if next_kept < len(indices) and n == indices[next_kept]:
            diff[n * dim:(n + 1) * dim] = top_diff.reshape(-1)[next_kept * dim:
                                                                (next_kept + 1) * dim]
            next_kept += 1
        else:
            diff[n * dim:(n + 1) * dim] = 0
    return diff.reshape(bottom_shape)


@pytest.mark.parametrize("selector", [[1, 0, 2, 0, -0.5], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1],
                                      [0, float("nan"), 0, 0, 3]])
def test_forward_and_backward_equal_caffes_loops(selector):
    net = build().double()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(SHAPES["a"]), rng.standard_normal(SHAPES["b"])
    s = np.array(selector).reshape(5, 1)
    (expected_a, expected_b), indices = caffe_forward([a, b], s)
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    out = net(a=ta, b=tb, s=torch.tensor(s))
    np.testing.assert_array_equal(out["a_kept"].detach().numpy(), expected_a)
    np.testing.assert_array_equal(out["b_kept"].detach().numpy(), expected_b)
    grad_a = rng.standard_normal(expected_a.shape)
    grad_b = rng.standard_normal(expected_b.shape)
    torch.autograd.backward([out["a_kept"], out["b_kept"]],
                            [torch.tensor(grad_a), torch.tensor(grad_b)])
    np.testing.assert_array_equal(ta.grad.numpy(), caffe_backward(grad_a, a.shape, indices))
    np.testing.assert_array_equal(tb.grad.numpy(), caffe_backward(grad_b, b.shape, indices))


def test_gradient_reaches_kept_rows_only_and_never_the_selector():
    net = build().double()
    s = torch.tensor([[1.0], [0.0], [1.0], [1.0], [0.0]], requires_grad=True)
    a = torch.randn(5, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x, y: tuple(net(a=x, b=y, s=s.detach()).values()), (a, b),
                     eps=1e-6, atol=1e-6)
    out = net(a=a, b=b, s=s)
    (out["a_kept"].sum() + out["b_kept"].sum()).backward()
    assert s.grad is None


def test_compiled_shape_is_caffes_set_up_shape_and_runs_vary():
    net = build()
    assert [net.compiled.blobs[t] for t in ("a_kept", "b_kept")] == [(5, 3, 2), (5, 4)]
    for kept in ([1, 0, 0, 0, 0], [1, 1, 0, 1, 0]):
        s = torch.tensor(kept, dtype=torch.float32).reshape(5, 1)
        out = net(a=torch.randn(5, 3, 2), b=torch.randn(5, 4), s=s)
        assert out["a_kept"].shape == (sum(kept), 3, 2) and out["b_kept"].shape == (sum(kept), 4)


@pytest.mark.parametrize("shapes, tops, message", [
    ({"a": (5, 3), "s": (5, 2)}, ("k",), "selector dimensions must be singletons"),
    ({"a": (5, 3), "b": (4, 3), "s": (5,)}, ("k", "l"),
     "each bottom should have the same 0th dimension as the selector (5,): bottom 1 is (4, 3)"),
    ({"a": (5, 3), "s": (5,)}, ("k", "l"), "takes one top per filtered bottom"),
    ({"s": (5,)}, ("k",), "needs at least 2 bottoms, has 1"),
])
def test_caffes_refusals_are_located(shapes, tops, message):
    with pytest.raises(CompileError) as caught:
        build(shapes, tops)
    assert caught.value.line == 2 and message in caught.value.message


MANY_TO_ONE = '''layer { name: "in" type: "Input" top: "x" top: "cont" top: "last" top: "label"
  input_param { shape { dim: 3 dim: 2 dim: 4 } shape { dim: 3 dim: 2 } shape { dim: 6 }
                shape { dim: 6 } } }
layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
  recurrent_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "rows" type: "Reshape" bottom: "h" top: "rows"
  reshape_param { shape { dim: -1 dim: 5 } } }
layer { name: "pick" type: "Filter" bottom: "rows" bottom: "label" bottom: "last"
  top: "final" top: "final_label" }
layer { name: "fc" type: "InnerProduct" bottom: "final" top: "scores"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "scores" bottom: "final_label" top: "loss" }
'''


def test_many_to_one_sequence_loss_reads_the_last_step_only():
    """LRCN's many-to-one use: the loss of the (T x N) LSTM outputs reads only the rows the
    selector marks (the last step of each stream); the layers after Filter take its row count."""
    net = Net(compiler.load_text(MANY_TO_ONE, "net", "m2o.prototxt"), phase="TRAIN")
    feed = dict(x=torch.randn(3, 2, 4), cont=torch.tensor([[0.0, 0], [1, 1], [1, 1]]),
                last=torch.tensor([0.0, 0, 0, 0, 1, 1]), label=torch.tensor([0.0, 1, 2, 0, 2, 1]))
    loss = net(**feed).loss
    net.run(feed, keep_all=True)
    rows, final = net.blobs["rows"].data, net.blobs["final"].data
    np.testing.assert_array_equal(final, rows[4:6])
    fc = net.layer("fc")
    scores = torch.from_numpy(final) @ fc.blobs[0].detach().t() + fc.blobs[1].detach()
    expected = torch.nn.functional.cross_entropy(scores, torch.tensor([2, 1]))
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert net.layer("lstm").blobs[0].grad.abs().sum() > 0
