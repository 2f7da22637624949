"""LRCN's video-level test protocol and `lrcn-activity-eval`.

Per video (classify_video.py in LisaAnne/lisa-caffe-public@lstm_video_deploy): the net's softmax
output for every frame of every test clip and every one of the 10 crops is averaged, first over
the crops of a frame, then over all frames of all clips; the prediction is the argmax. RGB and
flow are fused by averaging their per-video probabilities with weights p and 1 - p (the paper
reports p = 1/2 and p = 1/3). Accuracy is the fraction of test videos predicted correctly;
the mean per-class accuracy is reported beside it.

Per-video probability files (.npz, written by save_video_probabilities):

    video_ids      (V,)   str     e.g. v_ApplyEyeMakeup_g01_c01
    labels         (V,)   int     0-based true class
    probabilities  (V, C) float   averaged class probabilities, rows summing to 1
    class_names    (C,)   str     optional
"""
from __future__ import annotations

import argparse
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lrcn_apps.activity.errors import ActivityError

PROG = "lrcn-activity-eval"
PAPER_FUSION_WEIGHTS = (1.0 / 2.0, 1.0 / 3.0)
ROW_SUM_TOLERANCE = 1e-3


# ---------------------------------------------------------------------------------------------
# The protocol, on arrays

def average_frame_probabilities(clip_probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """Per-frame softmax outputs of one video's test clips -> its (C,) class probabilities.

    Each clip array is (T, C) or (T, crops, C). Crops are averaged within each frame, then all
    frames of all clips are averaged with equal weight (the original concatenated the frames
    of all clips and took one mean, so a clip with more frames counts for more).
    """
    per_frame = []
    for clip in clip_probabilities:
        clip = np.asarray(clip, dtype=np.float64)
        if clip.ndim == 3:
            clip = clip.mean(axis=1)
        if clip.ndim != 2:
            raise ValueError(f"clip probabilities must be (T, C) or (T, crops, C), "
                             f"got {clip.shape}")
        per_frame.append(clip)
    if not per_frame:
        raise ValueError("a video needs at least one clip")
    return np.concatenate(per_frame, axis=0).mean(axis=0)


def predict(probabilities: np.ndarray) -> np.ndarray:
    """(V, C) -> (V,) predicted classes (ties go to the lowest class, like numpy's argmax)."""
    return np.argmax(np.asarray(probabilities), axis=-1)


def fuse(rgb: np.ndarray, flow: np.ndarray, rgb_weight: float) -> np.ndarray:
    """p * RGB + (1 - p) * flow, with p = rgb_weight in [0, 1]."""
    if not 0.0 <= rgb_weight <= 1.0:
        raise ValueError(f"the RGB weight must be in [0, 1], got {rgb_weight}")
    return rgb_weight * np.asarray(rgb) + (1.0 - rgb_weight) * np.asarray(flow)


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int
    per_class_correct: np.ndarray   # (C,)
    per_class_total: np.ndarray     # (C,)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    @property
    def per_class_accuracy(self) -> np.ndarray:
        """(C,) accuracy per class; NaN for a class without test videos."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.per_class_correct / self.per_class_total

    @property
    def mean_class_accuracy(self) -> float:
        """Mean over the classes that have test videos."""
        return float(np.nanmean(self.per_class_accuracy))


def accuracy(labels: np.ndarray, probabilities: np.ndarray) -> Accuracy:
    labels = np.asarray(labels)
    num_classes = np.asarray(probabilities).shape[-1]
    hits = predict(probabilities) == labels
    per_class_total = np.bincount(labels, minlength=num_classes)
    per_class_correct = np.bincount(labels, weights=hits, minlength=num_classes).astype(np.int64)
    return Accuracy(int(hits.sum()), int(labels.size), per_class_correct, per_class_total)


# ---------------------------------------------------------------------------------------------
# Probability files

@dataclass(frozen=True)
class VideoProbabilities:
    video_ids: np.ndarray       # (V,) str
    labels: np.ndarray          # (V,) int64
    probabilities: np.ndarray   # (V, C) float64
    class_names: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return self.probabilities.shape[1]


def save_video_probabilities(path: str | Path, video_ids: Sequence[str], labels: Sequence[int],
                             probabilities: np.ndarray,
                             class_names: Sequence[str] | None = None) -> None:
    arrays = {"video_ids": np.asarray(video_ids, dtype=str),
              "labels": np.asarray(labels, dtype=np.int64),
              "probabilities": np.asarray(probabilities, dtype=np.float64)}
    if class_names is not None:
        arrays["class_names"] = np.asarray(class_names, dtype=str)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def load_video_probabilities(path: str | Path) -> VideoProbabilities:
    """Read and check a probability file; every problem is one ActivityError naming the file."""
    path = str(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise ActivityError("no such file", path) from None
    except IsADirectoryError:
        raise ActivityError("is a folder, expected a .npz file", path) from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise ActivityError(f"not a readable .npz file ({error})", path) from None
    missing = [name for name in ("video_ids", "labels", "probabilities") if name not in arrays]
    if missing:
        raise ActivityError(f"missing array(s) {', '.join(missing)} (expected video_ids, "
                            "labels, probabilities and optionally class_names)", path)
    return check_video_probabilities(arrays, path)


def check_video_probabilities(arrays: dict, path: str) -> VideoProbabilities:
    ids, labels, probs = arrays["video_ids"], arrays["labels"], arrays["probabilities"]
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise ActivityError(f"probabilities must be (videos, classes >= 2), got {probs.shape}",
                            path)
    count = probs.shape[0]
    if ids.shape != (count,) or labels.shape != (count,):
        raise ActivityError(f"video_ids {ids.shape} and labels {labels.shape} must both be "
                            f"({count},) to match probabilities {probs.shape}", path)
    if ids.dtype.kind != "U":
        raise ActivityError(f"video_ids must be strings, got dtype {ids.dtype}", path)
    if len(set(ids.tolist())) != count:
        raise ActivityError("video_ids are not unique", path)
    if labels.dtype.kind not in "iu":
        raise ActivityError(f"labels must be integers, got dtype {labels.dtype}", path)
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ActivityError(f"labels must be in 0..{probs.shape[1] - 1}", path)
    if probs.dtype.kind not in "fiu" or not np.all(np.isfinite(probs)) or probs.min() < 0:
        raise ActivityError("probabilities must be finite and non-negative", path)
    row_sums = probs.sum(axis=1)
    bad = np.flatnonzero(np.abs(row_sums - 1.0) > ROW_SUM_TOLERANCE)
    if bad.size:
        raise ActivityError(f"probabilities of video '{ids[bad[0]]}' sum to "
                            f"{row_sums[bad[0]]:.4g}, not 1 (save softmax outputs, not scores)",
                            path)
    names = arrays.get("class_names")
    if names is not None and (names.shape != (probs.shape[1],) or names.dtype.kind != "U"):
        raise ActivityError(f"class_names must be {probs.shape[1]} strings, got {names.shape}",
                            path)
    return VideoProbabilities(ids, labels.astype(np.int64), probs.astype(np.float64), names)


def align(reference: VideoProbabilities, other: VideoProbabilities,
          reference_path: str, other_path: str) -> VideoProbabilities:
    """`other` reordered to `reference`'s video order; the two must cover the same videos."""
    if other.num_classes != reference.num_classes:
        raise ActivityError(f"has {other.num_classes} classes, {reference_path} has "
                            f"{reference.num_classes}", other_path)
    position = {video: index for index, video in enumerate(other.video_ids.tolist())}
    missing = [video for video in reference.video_ids.tolist() if video not in position]
    if missing or len(position) != len(reference.video_ids):
        example = missing[0] if missing else sorted(set(position) - set(reference.video_ids))[0]
        raise ActivityError(f"covers other videos than {reference_path} (e.g. '{example}')",
                            other_path)
    order = np.asarray([position[video] for video in reference.video_ids.tolist()])
    labels = other.labels[order]
    differs = np.flatnonzero(labels != reference.labels)
    if differs.size:
        video = reference.video_ids[differs[0]]
        raise ActivityError(f"gives video '{video}' label {labels[differs[0]]}, {reference_path} "
                            f"gives {reference.labels[differs[0]]}", other_path)
    return VideoProbabilities(reference.video_ids, labels, other.probabilities[order],
                              other.class_names)


# ---------------------------------------------------------------------------------------------
# Report

@dataclass(frozen=True)
class ModelResult:
    name: str
    rgb_weight: float      # 1 for RGB alone, 0 for flow alone
    result: Accuracy


def evaluate_models(rgb: VideoProbabilities | None, flow: VideoProbabilities | None,
                    fusion_weights: Sequence[float]) -> list[ModelResult]:
    results = []
    if rgb is not None:
        results.append(ModelResult("RGB", 1.0, accuracy(rgb.labels, rgb.probabilities)))
    if flow is not None:
        results.append(ModelResult("flow", 0.0, accuracy(flow.labels, flow.probabilities)))
    if rgb is not None and flow is not None:
        for weight in fusion_weights:
            fused = fuse(rgb.probabilities, flow.probabilities, weight)
            results.append(ModelResult(f"fusion p={weight:.3f}", weight,
                                       accuracy(rgb.labels, fused)))
    return results


def percent(value: float) -> str:
    return "-" if np.isnan(value) else f"{100.0 * value:.2f}%"


def format_table(results: Sequence[ModelResult], class_names: Sequence[str],
                 per_class: bool) -> str:
    total = results[0].result.total
    lines = [f"{total} videos, {len(class_names)} classes (p = RGB weight in p*RGB + (1-p)*flow)",
             f"{'model':<16} {'correct':>9} {'accuracy':>9} {'mean class acc':>15}"]
    for model in results:
        r = model.result
        lines.append(f"{model.name:<16} {f'{r.correct}/{r.total}':>9} {percent(r.accuracy):>9} "
                     f"{percent(r.mean_class_accuracy):>15}")
    if per_class:
        width = max(len(name) for name in class_names)
        lines.append("")
        lines.append(f"{'class':<{width}} {'videos':>6} "
                     + " ".join(f"{model.name:>16}" for model in results))
        for index, name in enumerate(class_names):
            count = results[0].result.per_class_total[index]
            cells = " ".join(f"{percent(m.result.per_class_accuracy[index]):>16}"
                             for m in results)
            lines.append(f"{name:<{width}} {count:>6} {cells}")
    return "\n".join(lines)


def results_json(results: Sequence[ModelResult], class_names: Sequence[str]) -> dict:
    def nullable(value: float):
        return None if np.isnan(value) else float(value)

    return {
        "videos": results[0].result.total,
        "classes": len(class_names),
        "class_names": list(class_names),
        "results": [{
            "model": m.name,
            "rgb_weight": m.rgb_weight,
            "correct": m.result.correct,
            "accuracy": m.result.accuracy,
            "mean_class_accuracy": nullable(m.result.mean_class_accuracy),
            "per_class_accuracy": {name: nullable(m.result.per_class_accuracy[i])
                                   for i, name in enumerate(class_names)},
        } for m in results],
    }


# ---------------------------------------------------------------------------------------------
# Command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Video accuracy of LRCN activity models from saved per-video class\n"
                    "probabilities (.npz with video_ids, labels, probabilities[, class_names]),\n"
                    "for RGB, flow and their weighted fusion.",
        epilog="example:\n"
               f"  {PROG} --rgb runs/activity/lrcn_rgb_test_probs.npz \\\n"
               "      --flow runs/activity/lrcn_flow_test_probs.npz --per-class \\\n"
               "      --json runs/activity/eval.json\n"
               "With both streams the fusions p = 1/2 and p = 1/3 are reported unless\n"
               "--fusion gives other RGB weights.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rgb", type=Path, metavar="FILE",
                        help="per-video probabilities of the RGB model")
    parser.add_argument("--flow", type=Path, metavar="FILE",
                        help="per-video probabilities of the flow model")
    parser.add_argument("--fusion", type=rgb_weight, nargs="+", metavar="P",
                        help="RGB weights p of the fusions p*RGB + (1-p)*flow "
                             "(default 0.5 0.3333...)")
    parser.add_argument("--per-class", action="store_true", help="also print per-class accuracy")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    return parser


def rgb_weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got '{text}'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got '{text}'")
    return value


def class_names_for(streams: Sequence[VideoProbabilities]) -> list[str]:
    for stream in streams:
        if stream.class_names is not None:
            return stream.class_names.tolist()
    return [f"class {index}" for index in range(streams[0].num_classes)]


def run(args: argparse.Namespace) -> str:
    rgb = None if args.rgb is None else load_video_probabilities(args.rgb)
    flow = None if args.flow is None else load_video_probabilities(args.flow)
    if rgb is not None and flow is not None:
        flow = align(rgb, flow, str(args.rgb), str(args.flow))
    streams = [stream for stream in (rgb, flow) if stream is not None]
    weights = args.fusion if args.fusion is not None else PAPER_FUSION_WEIGHTS
    results = evaluate_models(rgb, flow, weights)
    names = class_names_for(streams)
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(results_json(results, names), indent=2) + "\n",
                                 encoding="utf-8")
        except OSError as error:
            raise ActivityError(f"cannot write ({error.strerror})", str(args.json)) from None
    return format_table(results, names, args.per_class)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rgb is None and args.flow is None:
        parser.error("give --rgb, --flow or both")
    if args.fusion is not None and (args.rgb is None or args.flow is None):
        parser.error("--fusion needs both --rgb and --flow")
    try:
        print(run(args))
    except ActivityError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
