"""Rebuild lrcn_proto/caffe_pb2.py from lrcn_proto/caffe.proto.

Usage: python -m lrcn_proto.regenerate   (needs grpcio-tools)
   or: python lrcn_proto/regenerate.py   (same, without importing the package,
       for when the current caffe_pb2.py cannot be imported)

protoc runs with the repository root as its include path, so the schema is
registered as "lrcn_proto/caffe.proto" and its classes live in module
"lrcn_proto.caffe_pb2". pycaffe registers its schema as "caffe.proto" (or
"caffe/proto/caffe.proto"), so both can be imported in one process. The output
is deterministic: running this twice gives the same file.
"""

import filecmp
import os
import shutil
import sys
import tempfile

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(PACKAGE_DIR)
PROTO = os.path.join("lrcn_proto", "caffe.proto")
OUTPUT = os.path.join("lrcn_proto", "caffe_pb2.py")


def regenerate():
    """Run protoc into a scratch folder, then copy the result into place.

    Returns (path written, whether its content changed).
    """
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.exit("lrcn_proto.regenerate needs grpcio-tools: pip install grpcio-tools")

    target = os.path.join(ROOT, OUTPUT)
    with tempfile.TemporaryDirectory(prefix="lrcn_proto-") as scratch:
        status = protoc.main([
            "grpc_tools.protoc",
            "--proto_path=" + ROOT,
            "--python_out=" + scratch,
            os.path.join(ROOT, PROTO),
        ])
        if status != 0:
            sys.exit("protoc failed on %s (exit status %d)" % (PROTO, status))
        produced = os.path.join(scratch, OUTPUT)
        changed = not (os.path.exists(target) and filecmp.cmp(produced, target, shallow=False))
        if changed:
            shutil.copyfile(produced, target)
    return target, changed


def main():
    target, changed = regenerate()
    state = "updated" if changed else "unchanged"
    print("wrote %s (%s) from %s" % (os.path.relpath(target), state, PROTO))


if __name__ == "__main__":
    main()
