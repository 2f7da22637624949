"""--precision: the arithmetic of a net's matrix products and convolutions (runtime.gemm says
what each choice computes). Kept apart from runtime.gemm so that a tool's --help loads no torch.
"""

PRECISIONS = ("float32", "bfloat16", "tf32")


def add_argument(parser):
    """--precision on a tool's argument parser."""
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="arithmetic of the matrix products and convolutions: float32 "
                             "(Caffe's, the default), bfloat16 (products about twice as fast "
                             "on CPUs with bfloat16 instructions, which pays on large layers; "
                             "weights, states and losses stay float32) or tf32 (CUDA only)")


def configure(parser, name):
    """Apply a tool's --precision; a choice this machine cannot run is the parser's error."""
    from runtime import gemm
    try:
        gemm.set_precision(name)
    except ValueError as error:
        parser.error(str(error))
