"""Duplicates on the pages, through AppTest: the Dataset page's section (counts, pairs side by side, hashed once per
saved dataset) and the Evaluate page's warning for a run whose validation images duplicate training images."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import encoded, make_zip, photo
from pagetest import assert_clean, open_app, texts

from core.data import hashes
from core.workspace import datasets
from core.workspace.runs import MARKER, RUN_FORMAT, RUN_VERSION, runs_dir, write_json
from ui.duplicates_views import EXPANDER


def saved_with_duplicates(tmp_path: Path):
    """A saved split dataset: a leak (train/val), a photo in both classes, and different photos otherwise."""
    entries = {}
    for part, offset in (("train", 0), ("val", 1000)):
        for cls, base in (("cats", 200), ("dogs", 300)):
            for k in range(4):
                entries[f"{part}/{cls}/{k}.png"] = encoded(photo(base + offset + k))
    entries["val/cats/leaked.jpg"] = encoded(photo(201), "JPEG", quality=60)  # train/cats/1.png, recompressed
    entries["train/dogs/cat.png"] = encoded(photo(202))  # train/cats/2.png, labelled dog
    return datasets.open_dataset(datasets.save_zip(make_zip(tmp_path / "pets.zip", entries)).id)


def section(at):
    (found,) = [e for e in at.expander if e.label.startswith(EXPANDER)]
    return found


def test_the_dataset_page_shows_leaks_and_conflicts_with_the_pairs_side_by_side_once(tmp_path):
    ds = saved_with_duplicates(tmp_path)
    at = open_app("pages/dataset.py", query={"dataset": ds.id})
    assert "Duplicates" in texts(at.subheader)
    assert "2 pairs of duplicate images (1 exact, 1 near), involving 4 images of 18." in texts(at.markdown)
    warnings = texts(at.warning)
    assert any(w.startswith("1 pair across train/val/test (a leak)") for w in warnings)
    assert any(w.startswith("1 pair in different classes (conflicting labels)") for w in warnings)
    pairs = section(at)
    assert pairs.label == f"{EXPANDER} (2)"
    assert len(pairs.image) == 4  # two pairs, side by side, the leak first
    assert [i.captions[0] for i in pairs.image[:2]] == [
        "train/cats/1.png (cats · train)",
        "val/cats/leaked.jpg (cats · val)",
    ]
    assert "**Leak** · near duplicate" in texts(pairs.markdown)[0]
    # Hashed once, kept beside the dataset: a reload reads it back instead of decoding the images again.
    cache = ds.root.parent / hashes.CACHE_FILE
    written = cache.stat().st_mtime_ns
    again = open_app("pages/dataset.py", query={"dataset": ds.id})
    assert section(again).label == f"{EXPANDER} (2)" and cache.stat().st_mtime_ns == written


def test_a_dataset_without_duplicates_says_so_in_one_line(tmp_path):
    entries = {f"{cls}/{k}.png": encoded(photo(400 + 10 * i + k)) for i, cls in enumerate(("a", "b")) for k in range(3)}
    ds = datasets.open_dataset(datasets.save_zip(make_zip(tmp_path / "clean.zip", entries)).id)
    at = open_app("pages/dataset.py", query={"dataset": ds.id})
    assert "No duplicates among the 6 images (exact or near, resized, recompressed or slightly cropped)." in texts(
        at.caption
    )
    assert not [e for e in at.expander if e.label.startswith(EXPANDER)]


def evaluated_run(name: str, metrics: dict, val: int = 40) -> Path:
    """A run folder as training saves it (no model needed: the page reads its saved evaluation), with ``val``
    validation images and ``metrics``."""
    from core.evaluate.evaluation import compute_metrics

    run = runs_dir() / name
    run.mkdir(parents=True)
    (run / "model.keras").write_bytes(b"")
    files = [f"{'ab'[k % 2]}/{k}.png" for k in range(val)]
    write_json(run / "classes.json", ["a", "b"])
    write_json(run / "config.json", {})
    write_json(run / "metrics.json", {"val_accuracy": 0.9, **metrics})
    write_json(run / "split.json", {"root": str(run / "gone"), "train": ["a/t.png"], "val": files, "test": []})
    ev = compute_metrics([k % 2 for k in range(val)], [[0.9, 0.1] if k % 2 == 0 else [0.2, 0.8] for k in range(val)],
                         ["a", "b"], files, top_k=1)  # fmt: skip
    ev.source, ev.split, ev.data, ev.created = "val", "val", "pets.zip", "2024-05-01T12:00:00"
    (run / "evaluation.json").write_text(json.dumps(ev.to_dict()))
    marker = {"format": RUN_FORMAT, "version": RUN_VERSION, "status": "completed", "finished": "2024-05-01T11:00:00",
              "dataset": "pets.zip", "val_accuracy": 0.9}  # fmt: skip
    write_json(run / MARKER, marker)
    return run


def test_evaluate_warns_when_validation_images_duplicate_training_images(tmp_path):
    run = evaluated_run("20240501-110000-pets-leak", {"val_duplicates": 3, "val_duplicates_dropped": 0})
    at = open_app("pages/evaluate.py", query={"run": run.name})
    message = "3 of 40 validation images duplicate training images: the validation accuracy is likely optimistic."
    assert message in texts(at.warning)
    assert not [w for w in texts(at.warning) if "Training kept them" in w]


def test_evaluate_says_why_training_kept_more_duplicates_than_its_limit(tmp_path):
    metrics = {"val_duplicates": 12, "val_duplicates_dropped": 0, "val_duplicates_over_limit": 0.05}
    run = evaluated_run("20240501-110000-pets-alike", metrics)
    at = open_app("pages/evaluate.py", query={"run": run.name})
    [warning] = [w for w in texts(at.warning) if "duplicate training images" in w]
    assert warning.startswith("12 of 40 validation images duplicate training images")
    assert "more than the 5% of validation the check drops on its own" in warning
    assert "train again with a higher “Drop at most this share of validation”" in warning


def test_evaluate_says_nothing_for_a_clean_run_or_one_trained_before_the_check(tmp_path):
    for name, metrics in (("20240501-110000-pets-clean", {"val_duplicates": 0, "val_duplicates_dropped": 2}),
                          ("20240501-100000-pets-old", {})):  # fmt: skip
        run = evaluated_run(name, metrics)
        at = open_app("pages/evaluate.py", query={"run": run.name})
        assert_clean(at)
        assert not [w for w in texts(at.warning) if "duplicate training images" in w]


def test_the_train_form_offers_the_drop_switch_on_by_default(tmp_path):
    from pagetest import load

    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    switch = at.checkbox(key="cfg_drop_val_duplicates")
    assert switch.value is True and switch.label == "Drop validation images that duplicate training images"
    limit = at.slider(key="cfg_val_duplicates_limit")
    assert limit.value == 0.05 and limit.label == "Drop at most this share of validation"
    switch.uncheck().run()
    assert not [s for s in at.slider if s.key == "cfg_val_duplicates_limit"]  # nothing to limit when off
