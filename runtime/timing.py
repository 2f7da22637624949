"""Per-layer forward / backward timing for lrcn-time (Caffe's `caffe time`)."""

import time

import torch


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_layers(net, iterations, log=print):
    """Run one warm-up pass, then `iterations` forward+backward passes, timing every layer.

    Forward time is measured around each layer's call; backward time between the moment the
    gradient of a layer's tops is ready and the moment its bottoms' (and blobs') gradients are
    computed, through module backward hooks. Returns the table as text and logs Caffe's lines.
    """
    device = net.device
    forward = {name: 0.0 for name in net.layer_names}
    backward = {name: 0.0 for name in net.layer_names}
    started = {}
    handles = []
    # A module's full backward hook fires once its input gradients are ready; for a layer
    # whose inputs need none (the first layer) that is before its weight gradient is
    # computed. Inputs that need a gradient during timing make every layer's hook fire after
    # its whole backward (at the small cost of the first layer's input gradient).
    force_backward, net.force_backward = net.force_backward, True
    for name, unit in zip(net.layer_names, net.units):
        handles.append(unit.register_forward_pre_hook(_mark(started, ("f", name), device)))
        handles.append(unit.register_forward_hook(_add(started, ("f", name), forward, name,
                                                       device)))
        handles.append(unit.register_full_backward_pre_hook(_mark(started, ("b", name), device)))
        handles.append(unit.register_full_backward_hook(_add(started, ("b", name), backward,
                                                             name, device)))
    try:
        _pass(net)                                   # warm-up: allocations, lazy set-up
        for times in (forward, backward):
            for name in times:
                times[name] = 0.0
        log(f"Testing for {iterations} iterations.")
        total_start = time.perf_counter()
        for _ in range(iterations):
            _pass(net)
        _synchronize(device)
        total = time.perf_counter() - total_start
    finally:
        net.force_backward = force_backward
        for handle in handles:
            handle.remove()
    log("Average time per layer: ")
    rows = []
    for name in net.layer_names:
        f_ms, b_ms = forward[name] * 1e3 / iterations, backward[name] * 1e3 / iterations
        log(f"{name:>12s}\tforward: {f_ms:.5g} ms.")
        log(f"{name:>12s}\tbackward: {b_ms:.5g} ms.")
        rows.append((name, net.layer(name).layer.type, f_ms, b_ms))
    f_total = sum(r[2] for r in rows)
    b_total = sum(r[3] for r in rows)
    log(f"Average Forward pass: {f_total:.5g} ms.")
    log(f"Average Backward pass: {b_total:.5g} ms.")
    log(f"Average Forward-Backward: {total * 1e3 / iterations:.5g} ms.")
    log(f"Total Time: {total * 1e3:.5g} ms.")
    width = max(len(r[0]) for r in rows) if rows else 5
    lines = [f"{'layer':{width}s}  {'type':18s} {'forward ms':>11s} {'backward ms':>12s}"]
    lines += [f"{n:{width}s}  {t:18s} {f:11.3f} {b:12.3f}" for n, t, f, b in rows]
    lines.append(f"{'total':{width}s}  {'':18s} {f_total:11.3f} {b_total:12.3f}")
    lines.append(f"forward+backward per iteration (wall): {total * 1e3 / iterations:.3f} ms "
                 f"on {device}")
    return "\n".join(lines)


def _pass(net):
    outputs = net.run()
    loss = outputs.loss
    if not loss.requires_grad:
        # A deploy net has no loss: time the backward of every output's sum, as Caffe's
        # `caffe time` runs Backward() on any net.
        loss = sum(v.sum() for v in outputs.values() if v.requires_grad)
    if torch.is_tensor(loss) and loss.requires_grad:
        loss.backward()
    for parameter in net.parameters():
        parameter.grad = None


def _mark(started, key, device):
    def hook(*_):
        _synchronize(device)
        started[key] = time.perf_counter()
    return hook


def _add(started, key, totals, name, device):
    def hook(*_):
        _synchronize(device)
        if key in started:
            totals[name] += time.perf_counter() - started.pop(key)
    return hook
