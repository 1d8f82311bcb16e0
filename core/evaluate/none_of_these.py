"""How well a run answers "none of these": the evaluated images' scores against images unlike every class.

    report = assess(run, inside_scores, dataset)     # what Evaluation.none_of_these holds (evaluation.json)
    report["sources"]    # per kind of "other" image: images, share flagged at the run's threshold, AUROC, scores

The in-distribution images are the ones the evaluation scored (a run's validation or test images); their share
above the threshold is the false-alarm rate there, which should be near the rate the run was trained for. The
"other" images, each a source of its own:

* the dataset's ``__other__`` folder (``core.data.dataset.OTHER``), when it has one: real examples of what the
  classifier will be shown and must not name;
* uniform noise and flat colours, made here (seeded, so every evaluation makes the same ones);
* each class held out in turn, from the run's own record (core.model.ood.held_out_classes, computed at training
  from the features then in memory): the images of a kind the model never saw.

For each: the share flagged ("none of these") at the run's threshold, and the AUROC of telling them from the
in-distribution images by the score (1: always, 0.5: chance). Imports TensorFlow (the run answers here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from core.data.dataset import Dataset
from core.model import ood
from core.model.predict import predict

MADE_IMAGES = 32  # of each made kind: noise, flat colours
CHUNK = 256
SEED = 0
SCORE_DIGITS = 4

Progress = Callable[[int, int], None]


def made_images(kind: str, n: int, size: int, seed: int = SEED) -> np.ndarray:
    """``n`` uint8 images of ``size`` px: "noise" (every pixel uniform at random) or "flat" (one colour each)."""
    rng = np.random.default_rng([seed, {"noise": 1, "flat": 2}[kind]])
    if kind == "noise":
        return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    colours = rng.integers(0, 256, (n, 1, 1, 3), dtype=np.uint8)
    return np.broadcast_to(colours, (n, size, size, 3)).copy()


def _row(source: str, label: str, scores, inside, state: ood.State) -> dict[str, Any]:
    scores = np.asarray(scores, np.float64)
    return {
        "source": source,
        "label": label,
        "images": len(scores),
        "flagged": float(np.mean(state.flags(scores))) if len(scores) else 0.0,
        "auroc": ood.auroc(inside, scores),
        "scores": [round(float(s), SCORE_DIGITS) for s in scores],
    }


def _other_scores(run, ds: Dataset, progress: Progress | None) -> tuple[list[float], int]:
    """The scores of the dataset's __other__ images that can be read, and how many could not."""
    paths = [str(ds.root / p) for p in ds.other]
    scores, unreadable = [], 0
    for start in range(0, len(paths), CHUNK):
        for p in predict(run, paths[start : start + CHUNK], top_k=1, exact=True):
            if p.ok:
                scores.append(p.score)
            else:
                unreadable += 1
        if progress:
            progress(min(start + CHUNK, len(paths)), len(paths))
    return scores, unreadable


def held_out_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The classes held out in turn, together: their images, the share flagged, the mean AUROC."""
    if not rows:
        return None
    images = sum(r["images"] for r in rows)
    aurocs = [r["auroc"] for r in rows if r["auroc"] is not None]
    return {
        "source": "held_out",
        "label": f"each class held out in turn ({len(rows)})",
        "images": images,
        "flagged": sum(r["flagged"] * r["images"] for r in rows) / images if images else 0.0,
        "auroc": float(np.mean(aurocs)) if aurocs else None,
        "scores": [],  # each class was scored by a fit without it: the scores of different fits do not mix
    }


def assess(run, inside_scores, ds: Dataset | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """The "none of these" part of an evaluation (see the module docstring); ``{"available": False, "reason"}``
    for a run that cannot say."""
    state: ood.State | None = run.ood
    if state is None:
        return {"available": False, "reason": ood.reason(run.path)}
    inside = np.asarray([s for s in inside_scores if s is not None], np.float64)
    out: dict[str, Any] = {
        "available": True, "method": state.method, "threshold": state.threshold, "rate": state.rate,
        "validation_flagged": state.validation_flagged, "validation_images": state.validation_images,
        "inside": {"images": len(inside), "flagged": float(np.mean(state.flags(inside))) if len(inside) else 0.0,
                   "scores": [round(float(s), SCORE_DIGITS) for s in inside]},
        "sources": [], "held_out": state.held_out, "warnings": [],
    }  # fmt: skip
    if ds is not None and ds.other:
        scores, unreadable = _other_scores(run, ds, progress)
        out["sources"].append(_row("other", "“other” images (the __other__ folder)", scores, inside, state))
        if unreadable:
            out["warnings"].append(f"{unreadable} of the __other__ folder's images could not be read and were skipped.")
    size = run.config.image_size
    for kind, label in (("noise", "uniform noise (made)"), ("flat", "flat colours (made)")):
        _, scores, _ = run.outputs(made_images(kind, MADE_IMAGES, size))
        out["sources"].append(_row(kind, label, scores, inside, state))
    if summary := held_out_summary(state.held_out):
        out["sources"].append(summary)
    return out
