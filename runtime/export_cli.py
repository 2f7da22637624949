"""lrcn-export: write a Caffe net as an ONNX model with Caffe's semantics (runtime.onnx_export),
optionally verified against runtime.Net in onnxruntime.

Exits 0 on success, 1 on a user error (one located message) or a failed --check, 2 on bad
usage (argparse).
"""

import sys

from compiler.cli import ToolParser, input_shape_argument, run_tool
from compiler.errors import CompileError
from compiler.extras import require
from compiler.netstate import split_stages
from runtime import threads


def _exporter():
    require("onnx", "lrcn-export")
    from runtime import onnx_export
    return onnx_export


def _parser():
    ox = _exporter()
    parser = ToolParser(
        "lrcn-export",
        "Export a Caffe net to ONNX: a deploy net, or the data-free part of a train net (data "
        "layers become graph inputs named after their tops; loss and Accuracy layers are "
        "dropped and the blobs they read become outputs). Layer names become node names and "
        "blob names value names. Recurrent layers are unrolled over the net's T from zero "
        "state, or with --step take their states as inputs '<layer>.h0'/'<layer>.c0' and "
        "return '<layer>.hT'/'<layer>.cT'.",
        "lrcn-export deploy.prototxt --weights model.caffemodel -o model.onnx --check\n"
        "lrcn-export nets/lrcn_caption_deploy.prototxt --stage word,factored,2-layer --step \\\n"
        "    --weights runs/caption/lrcn_caption_iter_40.caffemodel -o word_step.onnx --check\n"
        "lrcn-export train.prototxt --phase TEST --input-shape data=1,3,32,32 "
        "-o net.onnx --dynamic-batch")
    parser.add_argument("net", metavar="NET", help="net .prototxt")
    parser.add_argument("--weights", metavar="W", help="weights: a.caffemodel[,b.caffemodel] "
                        "(or a .pt state_dict); without them the fillers' random values")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the .onnx file")
    parser.add_argument("--phase", type=str.upper, choices=("TRAIN", "TEST"), default="TEST",
                        help="phase to compile in (default TEST)")
    parser.add_argument("--stage", action="append", default=[], metavar="S",
                        help="add a stage to the NetState (repeatable; or comma-separated)")
    parser.add_argument("--level", type=int, default=0, metavar="N", help="NetState level")
    parser.add_argument("--opset", type=int, default=ox.DEFAULT_OPSET, metavar="N",
                        help=f"ONNX opset, {ox.MIN_OPSET} to {ox.MAX_OPSET} "
                        f"(default {ox.DEFAULT_OPSET})")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help=f"make the batch axis symbolic ('{ox.BATCH_DIM}'): axis 0 of each "
                        "input, axis 1 of the time-major (T, N, ...) inputs of recurrent layers")
    parser.add_argument("--input-shape", action="append", default=[], metavar="BLOB=D1,D2,...",
                        type=input_shape_argument,
                        help="shape of an input or data-layer top (e.g. a smaller batch, or a "
                        "data source that is not at hand); repeatable")
    threads.add_argument(parser)
    parser.add_argument("--check", action="store_true",
                        help="run the model in onnxruntime and runtime.Net on the same random "
                        f"inputs; exit 1 if an output differs by more than {ox.RTOL:g} times "
                        "its largest magnitude")
    parser.add_argument("--step", action="store_true",
                        help="recurrent states as explicit inputs '<layer>.h0'/'<layer>.c0' and "
                        "outputs '<layer>.hT'/'<layer>.cT' (1 x N x H), for decoding outside "
                        "Python (a T = 1 deploy net then takes one word per call); --check "
                        "chains 3 calls")
    parser.add_argument("--seed", type=int, default=1701,
                        help="seed of the random fillers and of --check's inputs")
    return parser


def _build_net(compiled, weights, seed):
    from runtime.net import Net
    try:
        return Net(compiled, weights=weights, seed=seed)
    except (ValueError, IndexError) as error:
        # A unit's own parameter check (the compiler's rules let a few through).
        raise CompileError(str(error), compiled.source_file) from None


def _export(argv):
    parser = _parser()
    args = parser.parse_args(argv)
    threads.configure(args.threads)
    ox = _exporter()
    if not ox.MIN_OPSET <= args.opset <= ox.MAX_OPSET:
        parser.error(f"--opset {args.opset}: choose {ox.MIN_OPSET} to {ox.MAX_OPSET}")
    import onnx

    import compiler
    from runtime.weights import write_bytes_atomically

    document = compiler.load_file(args.net)
    if document.kind != "net":
        raise CompileError(f"this is a {document.kind} definition, not a net", args.net,
                           hint="export the net file the solver names")
    state = dict(phase=args.phase, stages=split_stages(args.stage), level=args.level)
    shapes = dict(args.input_shape)
    deploy = ox.load_deployable(document, input_shapes=shapes, **state)
    for note in deploy.notes:
        print(f"note: {note}", file=sys.stderr)

    dynamic = ox.batch_axes(deploy.compiled) if args.dynamic_batch else None
    net = _build_net(deploy.compiled, args.weights, args.seed)
    model = ox.export_model(net, args.opset, step=args.step, dynamic=dynamic,
                            doc_string=f"Exported by lrcn-export from {args.net}")
    onnx.checker.check_model(model, full_check=True)
    write_bytes_atomically(args.output, model.SerializeToString())
    print(f"{args.output}: opset {args.opset}, {len(model.graph.node)} nodes; inputs "
          f"{', '.join(i.name for i in model.graph.input)}; outputs "
          f"{', '.join(o.name for o in model.graph.output)}")
    if not args.check:
        return 0
    return _check(model, net, args, dynamic)


def _check(model, net, args, dynamic):
    ox = _exporter()
    session = ox.onnx_session(model)
    steps = 3 if args.step else 1
    runs = [("", net)]
    if dynamic is not None:
        # The symbolic batch must hold for another size too: a second runtime.Net compiled
        # for batch + 1 (same weights).
        other = _build_net(ox.rebatch(net.compiled), None, args.seed)
        other.share_weights_from(net)
        runs.append((" (batch + 1)", other))
    failed = False
    for label, run_net in runs:
        diffs = ox.verify(model, run_net, seed=args.seed, steps=steps, session=session)
        calls = f" over {steps} chained calls" if steps > 1 else ""
        print(f"check{label}: onnxruntime vs runtime.Net{calls}")
        print(ox.format_report(diffs))
        failed |= not all(d.passed for d in diffs)
    if failed:
        print(f"check failed: an output differs by more than {ox.RTOL:g} times its largest "
              "magnitude", file=sys.stderr)
        return 1
    print("check passed")
    return 0


def export_main(argv=None):
    sys.exit(run_tool(_export, argv))


if __name__ == "__main__":
    export_main()
