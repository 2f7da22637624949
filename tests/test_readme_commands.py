"""Every shell block of the documents users follow (README.md, data/*/README.md, docs/*.md)
runs, as written, in a scratch copy of the repository, or is listed in SKIPPED with the reason
it cannot run here.

Each document is a walkthrough from a fresh checkout: its blocks run in order in one scratch
copy of the repository's tracked files (a later block uses what an earlier one wrote), a fresh
copy per document. The commands' text is run as written except for the substitutions in
SUBSTITUTIONS, each with its reason (training cut to a few iterations, and the snapshot names
that follow from that).

The fast tests check that every block is either run or skipped with a reason, that every
table entry still matches a block, and that the tools the documents name exist. The runs take
many minutes: they are marked `long` (python -m pytest -m long tests/test_readme_commands.py).
"""

import configparser
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
COMMAND_START = re.compile(r"^\$?\s*(lrcn-|python3? -m |pip |git |torchrun )")
ITERATIONS = 2

# (document, the block's first line): why the block cannot run in a test.
SKIPPED = {
    ("README.md", "pip install -e . && lrcn-train solvers/caption_solver.prototxt"):
        "installs into the Python environment and runs the whole suite: CI's .ci/run does "
        "both (its caption training runs here in the image-captioning block)",
    ("README.md", "lrcn-activity-data --videos UCF-101 "
                  "--split ucfTrainTestlist/trainlist01.txt \\"):
        "needs UCF-101 (an external dataset)",
    ("README.md", "lrcn-train SOLVER --gpu 0,1            # one process per listed GPU (NCCL); "
                  "--gpu all: every GPU"):
        "needs GPUs and several machines (SOLVER is a placeholder; the CPU --nproc path is "
        "tests/runtime/test_distributed_cli.py)",
    ("data/video_actions/README.md", "lrcn-video-data --videos YouTubeClips "
                                     "--sentences train=train.txt --sentences val=val.txt \\"):
        "needs MSVD and the VGG-16 model (external)",
    ("docs/git-diff-driver.md", "$ lrcn-diff old/net.prototxt new/net.prototxt --phase TEST"):
        "a transcript of output for two nets that are not in the repository",
}

# (pattern, replacement, why): regular-expression substitutions applied to every block run.
SUBSTITUTIONS = [
    (r"\blrcn-train ", f"lrcn-train --iterations {ITERATIONS} ",
     "training is cut to a few iterations (lrcn-train's documented override of max_iter)"),
    (r"_iter_(\d+|\$\{iter\})\.caffemodel", f"_iter_{ITERATIONS}.caffemodel",
     "the snapshots of the cut training runs"),
]


def documents():
    """The documents users follow, relative to the repository root, in run order."""
    found = ["README.md"] + sorted(glob.glob("data/*/README.md", root_dir=ROOT)) \
        + sorted(glob.glob("docs/*.md", root_dir=ROOT))
    return [path.replace(os.sep, "/") for path in found]


def fenced_blocks(text):
    """[(language, first line number, text)] of the ``` fenced blocks of a Markdown text."""
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^```\s*(\S*)", line)
        if fence and language is None:
            language, start, lines = fence.group(1), number + 1, []
        elif fence:
            blocks.append((language, start, "\n".join(lines) + "\n"))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def shell_blocks(document):
    """{(document, first line): text} of a document's shell blocks, in order."""
    with open(os.path.join(ROOT, document), encoding="utf-8") as handle:
        text = handle.read()
    return {(document, block.splitlines()[0]): block
            for language, _, block in fenced_blocks(text) if language in SHELL_LANGUAGES}


def substituted(command):
    for pattern, replacement, _ in SUBSTITUTIONS:
        command = re.sub(pattern, replacement, command)
    return command


def console_scripts():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    return {line.split("=")[0].strip()
            for line in config["options.entry_points"]["console_scripts"].strip().splitlines()}


# ------------------------------------------------------------------------------ fast checks

def test_fenced_blocks_are_found_with_their_language():
    text = "intro\n```bash\nlrcn-check a\n  b\n```\nmore\n```\nplain\n```\n"
    assert fenced_blocks(text) == [("bash", 3, "lrcn-check a\n  b\n"), ("", 8, "plain\n")]


def test_every_block_runs_or_is_skipped_with_a_reason():
    blocks = {key: text for document in documents() for key, text in shell_blocks(document).items()}
    assert len(blocks) >= 10
    stale = set(SKIPPED) - set(blocks)
    assert not stale, f"SKIPPED names blocks no document has: {stale}"
    assert all(len(reason) > 20 for reason in SKIPPED.values())
    for pattern, _, reason in SUBSTITUTIONS:
        assert any(re.search(pattern, text) for key, text in blocks.items()
                   if key not in SKIPPED), f"substitution {pattern!r} matches no block run"


def test_every_command_in_the_documents_is_in_a_shell_block():
    """A command in an untagged fence or an indented block would be neither run nor listed."""
    for document in documents():
        with open(os.path.join(ROOT, document), encoding="utf-8") as handle:
            text = handle.read()
        for language, number, block in fenced_blocks(text):
            first = block.lstrip().splitlines()[0] if block.strip() else ""
            assert language or not COMMAND_START.match(first), \
                f"{document}:{number}: a command block needs ```bash: {first}"
        outside = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        for line in outside.splitlines():
            assert not (line.startswith("    ") and COMMAND_START.match(line.strip())), \
                f"{document}: an indented command outside a ```bash block: {line.strip()}"


def test_the_tools_the_documents_name_exist():
    scripts = console_scripts()
    for document in documents():
        with open(os.path.join(ROOT, document), encoding="utf-8") as handle:
            named = set(re.findall(r"`(lrcn-[a-z][a-z0-9-]*)", handle.read()))
        for key, text in shell_blocks(document).items():
            named |= set(re.findall(r"(?:^|[\s;(&|])(lrcn-[a-z][a-z0-9-]*)", text))
        assert named <= scripts, f"{document} names tools that do not exist: " \
                                 f"{sorted(named - scripts)}"


# ------------------------------------------------------------------------------ the runs

def scratch_copy(target):
    """The repository's tracked files (what a fresh clone has) under `target`, a git repo."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                            check=True, timeout=120).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = os.path.join(ROOT, relative)
        if os.path.isfile(source):
            os.makedirs(os.path.join(target, os.path.dirname(relative)), exist_ok=True)
            shutil.copy2(source, os.path.join(target, relative))
    subprocess.run(["git", "init", "-q", str(target)], check=True, timeout=60)


@pytest.mark.long
@pytest.mark.parametrize("document", documents())
def test_the_documents_commands_run(document, tmp_path):
    scratch_copy(tmp_path)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
               + os.environ["PATH"])
    ran = 0
    for key, block in shell_blocks(document).items():
        if key in SKIPPED:
            continue
        result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", substituted(block)],
                                cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=3600)
        assert result.returncode == 0, (
            f"{document}: the block starting {key[1]!r} failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
        ran += 1
    assert ran or all(key in SKIPPED for key in shell_blocks(document))
