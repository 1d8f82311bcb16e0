"""core.data.duplicates: exact and near duplicates, leaks across a split, conflicting labels, the cache, training's
drop of validation duplicates, the Evaluate count and ``python -m core inspect``. Photo-like images are made here with
numpy and Pillow (smooth random colour fields with shapes: a flat image's perceptual hash says nothing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import encoded, make_zip, photo, run_cli, tiny_config
from PIL import Image

from core.data import duplicates, hashes
from core.data.dataset import load_dataset, split_dataset
from core.evaluate import leaks


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def variants(seed: int) -> dict[str, bytes]:
    """The acceptance cases: an exact copy (another format, same pixels), resized, JPEG q50, 5 % cropped."""
    im = photo(seed)
    w, h = im.size
    dx, dy = round(w * 0.025), round(h * 0.025)
    return {
        "copy.bmp": encoded(im, "BMP"),
        "resized.png": encoded(im.resize((w // 2, h // 2), Image.Resampling.BILINEAR)),
        "q50.jpg": encoded(im, "JPEG", quality=50),
        "cropped.png": encoded(im.crop((dx, dy, w - dx, h - dy))),
    }


def pair_of(found, a: str, b: str):
    hits = [p for p in found.pairs if {p.a, p.b} == {a, b}]
    return hits[0] if hits else None


@pytest.fixture
def folder(tmp_path) -> Path:
    """cats/: an original, its four copies and 4 other photos; dogs/: 5 other photos."""
    root = tmp_path / "pets"
    write(root / "cats" / "original.png", encoded(photo(1)))
    for name, data in variants(1).items():
        write(root / "cats" / name, data)
    for k in range(4):
        write(root / "cats" / f"other{k}.png", encoded(photo(10 + k)))
    for k in range(5):
        write(root / "dogs" / f"dog{k}.png", encoded(photo(20 + k)))
    return root


# ---------------------------------------------------------------------------------------------- finding


def test_exact_resized_recompressed_and_cropped_copies_are_found_and_different_photos_are_not(folder):
    found = duplicates.find_duplicates(load_dataset(folder))
    assert found.images == 14 and found.unreadable == 0
    exact = pair_of(found, "cats/original.png", "cats/copy.bmp")
    assert exact is not None and exact.kind == "exact" and exact.distance == 0
    for name in ("resized.png", "q50.jpg", "cropped.png"):
        near = pair_of(found, "cats/original.png", f"cats/{name}")
        assert near is not None, name
        assert near.kind == "near" and near.distance <= hashes.NEAR and near.relation == "same class"
    # The five versions of one photo pair with each other (10 pairs) and with nothing else.
    copies = {"cats/original.png", *(f"cats/{n}" for n in variants(1))}
    assert found.pairs_total == 10 and all({p.a, p.b} <= copies for p in found.pairs)
    assert found.involved == 5 and found.exact == 1 and found.near == 9
    assert found.same_class == 10 and found.different_classes == 0 and found.leaks == 0
    assert found.summary()[0] == "10 pairs of duplicate images (1 exact, 9 near), involving 5 images of 14."


def test_a_photo_in_two_classes_is_a_conflict_and_across_train_and_val_a_leak(tmp_path):
    root = tmp_path / "split"
    for part in ("train", "val"):
        for cls, base in (("cats", 30), ("dogs", 40)):
            for k in range(3):
                write(root / part / cls / f"{k}.png", encoded(photo(base + k + (100 if part == "val" else 0))))
    write(root / "val" / "cats" / "leaked.jpg", encoded(photo(31), "JPEG", quality=80))  # train/cats/1.png
    write(root / "train" / "dogs" / "mislabelled.png", encoded(photo(32)))  # train/cats/2.png, as a dog
    ds = load_dataset(root)
    found = duplicates.find_duplicates(ds)
    assert found.pairs_total == 2
    leak = pair_of(found, "train/cats/1.png", "val/cats/leaked.jpg")
    assert leak.relation == "leak" and leak.kind == "near" and {leak.split_a, leak.split_b} == {"train", "val"}
    conflict = pair_of(found, "train/cats/2.png", "train/dogs/mislabelled.png")
    assert conflict.relation == "different classes" and conflict.kind == "exact"
    assert {conflict.class_a, conflict.class_b} == {"cats", "dogs"}
    assert found.pairs[0] is leak  # leaks come first
    assert (found.leaks, found.different_classes, found.same_class) == (1, 1, 1)
    summary = " ".join(found.summary())
    assert "1 pair across train/val/test (a leak)" in summary and "conflicting labels" in summary


def test_no_duplicates_says_so(tmp_path):
    for k in range(6):
        write(tmp_path / "d" / ("a" if k % 2 else "b") / f"{k}.png", encoded(photo(50 + k)))
    found = duplicates.find_duplicates(load_dataset(tmp_path / "d"))
    assert found.pairs_total == 0 and found.pairs == []
    assert found.summary() == [
        "No duplicates among the 6 images (exact or near, resized, recompressed or slightly cropped)."
    ]


def test_the_search_finds_the_same_pairs_as_comparing_every_pair_over_blocks(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    n = 300
    h = hashes.Hashes(
        [f"{k}.png" for k in range(n)],
        np.array([k.to_bytes(32, "big") for k in range(n)], dtype="S32"),
        rng.integers(0, 2**63, n, dtype=np.uint64),
        rng.integers(0, 2**63, n, dtype=np.uint64),
        rng.integers(0, 256, (n, 192), dtype=np.uint8),
        np.full(n, 500, dtype=np.uint32),
        np.ones(n, dtype=bool),
    )
    h.phash[100:110] = h.phash[5]  # near copies of image 5 (their dHashes differ by chance)
    h.dhash[100:110] = h.dhash[5] ^ np.uint64(0b1011)
    h.thumb[100:110] = np.clip(h.thumb[5].astype(int) + rng.integers(-6, 7, (10, 192)), 0, 255)  # and look alike
    h.phash[200:204] = h.phash[7]  # hashes alike, thumbnails not: not duplicates
    h.dhash[200:204] = h.dhash[7]
    monkeypatch.setattr(hashes, "ROWS", 64)
    monkeypatch.setattr(hashes, "COLUMNS", 96)
    found = {(int(i), int(j)) for a, b, _ in hashes.near_pairs(h) for i, j in zip(a, b, strict=True)}
    d = np.bitwise_count(h.phash[:, None] ^ h.phash[None, :]) + np.bitwise_count(h.dhash[:, None] ^ h.dhash[None, :])
    mad = np.abs(h.thumb[:, None, :].astype(int) - h.thumb[None, :, :]).mean(axis=2)
    same = h.exact[:, None] == h.exact[None, :]
    alike = (d <= hashes.NEAR) & ((mad <= hashes.CLOSE) | same)
    expected = {(int(i), int(j)) for i, j in zip(*np.nonzero(alike), strict=True) if i < j}
    assert found == expected and len(found) == 55
    assert not any(max(i, j) >= 200 for i, j in found)
    val = hashes.duplicated(h, range(100, 300), range(0, 100))
    assert np.flatnonzero(val).tolist() == list(range(10))  # 100-109 copy 5; 200-203 only share hashes with 7


# ---------------------------------------------------------------------------------------------- the cache


def test_a_saved_dataset_is_hashed_once_and_again_when_the_hashing_changes(folder, tmp_path, monkeypatch):
    from core.workspace.datasets import open_dataset, save_zip

    entries = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    ds = open_dataset(save_zip(make_zip(tmp_path / "pets.zip", entries)).id)
    assert not hashes.cached(ds)
    calls = []
    first = duplicates.find_duplicates(ds, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (14, 14) and hashes.cached(ds)
    assert (ds.root.parent / hashes.CACHE_FILE).is_file()
    # The hashes come from the cache: a file damaged since is not even opened, and nothing is reported.
    (ds.root / "cats" / "q50.jpg").write_bytes(b"not an image any more")
    calls.clear()
    again = duplicates.find_duplicates(ds, progress=lambda done, total: calls.append((done, total)))
    assert calls == [] and again.to_dict() == first.to_dict()
    # Another hashing version invalidates the cache: everything is hashed again, and the damaged file left out.
    monkeypatch.setattr(hashes, "HASH_VERSION", hashes.HASH_VERSION + 1)
    assert not hashes.cached(ds)
    changed = duplicates.find_duplicates(ds, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (14, 14)
    assert changed.images == 13 and changed.unreadable == 1 and changed.pairs_total == 6


def test_a_dataset_read_from_a_folder_writes_nothing_into_it(folder):
    before = sorted(p.name for p in folder.rglob("*"))
    duplicates.find_duplicates(load_dataset(folder))
    assert sorted(p.name for p in folder.rglob("*")) == before


# ---------------------------------------------------------------------------------------------- the split


def test_check_split_drops_validation_duplicates_of_training_images_but_never_a_class_s_last(folder):
    ds = load_dataset(folder)
    index = {it.path: i for i, it in enumerate(ds.items)}
    train = [index["cats/original.png"], index["cats/other0.png"], index["dogs/dog0.png"], index["dogs/dog1.png"]]
    val = [index["cats/q50.jpg"], index["cats/cropped.png"], index["cats/other1.png"], index["dogs/dog2.png"]]
    (tr, va), check = duplicates.check_split(ds, (train, val), drop=True, limit=0.5)
    assert tr == train and va == [index["cats/other1.png"], index["dogs/dog2.png"]]
    assert check.dropped == ["cats/q50.jpg", "cats/cropped.png"] and check.remaining == 0
    assert check.metrics() == {
        "val_duplicates_dropped": 2,
        "val_duplicates": 0,
        "val_duplicates_dropped_files": ["cats/q50.jpg", "cats/cropped.png"],
    }
    # Every validation cat duplicates a training image: one stays, so validation still has cats, and is counted.
    (tr, va), check = duplicates.check_split(ds, (train, val[:2] + val[3:]), drop=True, limit=1.0)
    assert va == [index["cats/cropped.png"], index["dogs/dog2.png"]]
    assert check.dropped == ["cats/q50.jpg"] and check.remaining == 1
    # Off: nothing changes, the duplicates are counted.
    split, check = duplicates.check_split(ds, (train, val), drop=False)
    assert split == (train, val) and check.dropped == [] and check.remaining == 2


def test_check_split_never_drops_more_than_its_limit_of_validation_and_says_so(folder):
    ds = load_dataset(folder)
    index = {it.path: i for i, it in enumerate(ds.items)}
    train = [index["cats/original.png"], index["cats/other0.png"], index["dogs/dog0.png"], index["dogs/dog1.png"]]
    val = [index["cats/q50.jpg"], index["cats/cropped.png"], index["cats/other1.png"], index["dogs/dog2.png"]]
    # 2 of 4 would go: above the default 5 % (one image of four), so none goes and the run records why.
    split, check = duplicates.check_split(ds, (train, val), drop=True)
    assert split == (train, val) and check.dropped == [] and check.remaining == 2 and check.over_limit
    assert check.metrics() == {"val_duplicates_dropped": 0, "val_duplicates": 2, "val_duplicates_over_limit": 0.05}
    # One of four may go at 5 % (at least one image, so a single real copy in a small validation set still goes).
    (_, va), check = duplicates.check_split(ds, (train, val[1:]), drop=True)
    assert va == val[2:] and check.dropped == ["cats/cropped.png"] and not check.over_limit
    assert duplicates.allowed_drops(40, 0.05) == 2 and duplicates.allowed_drops(10, 0.05) == 1
    assert duplicates.allowed_drops(10, 0.0) == 0 and duplicates.allowed_drops(20, 1.0) == 20


def digit_scans(root: Path) -> list[str]:
    """The 1 797 distinct handwritten-digit scans scikit-learn ships (8x8 grey), as dark-on-white 32x32 PNGs in
    one folder per digit: real images with little detail, many alike but none a copy of another."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for k, (pixels, digit) in enumerate(zip(digits.images, digits.target, strict=True)):
        im = Image.fromarray((255 - pixels * 255 / 16).astype(np.uint8)).resize((32, 32), Image.Resampling.BILINEAR)
        paths.append(f"{digit}/{k}.png")
        write(root / paths[-1], encoded(im))
    return paths


def test_distinct_low_detail_scans_are_not_called_copies(tmp_path):
    digit_scans(tmp_path / "digits")
    ds = load_dataset(tmp_path / "digits")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ds.items))
    val, train = order[:360].tolist(), order[360:].tolist()
    h = hashes.dataset_hashes(ds)
    by_hashes = np.zeros(len(val), dtype=bool)  # what the hashes alone would say: nearly every scan a copy
    for start in range(0, len(val), 64):
        rows, cols = np.array(val[start : start + 64]), np.array(train)
        d = np.bitwise_count(h.phash[rows, None] ^ h.phash[None, cols])
        d += np.bitwise_count(h.dhash[rows, None] ^ h.dhash[None, cols])
        by_hashes[start : start + 64] = (d <= hashes.NEAR).any(1)
    assert by_hashes.sum() > 300
    flagged = hashes.duplicated(h, val, train)
    assert flagged.sum() <= 0.01 * len(val)
    (_, kept), check = duplicates.check_split(ds, (train, val), drop=True)
    assert len(kept) >= 0.99 * len(val) and check.remaining == 0 and not check.over_limit


def test_training_drops_validation_duplicates_and_says_so_in_its_metrics(tmp_path):
    root = tmp_path / "data"
    for cls, base in (("cats", 60), ("dogs", 70)):
        for k in range(6):
            write(root / cls / f"{k}.png", encoded(photo(base + k)))
    for k in range(6):  # a resized copy of every cat: with a 50 % split, some land in validation, their twin in train
        write(root / "cats" / f"copy{k}.png", encoded(photo(60 + k).resize((128, 96))))
    ds = load_dataset(root)
    config = tiny_config(epochs=1, validation_split=0.5, val_duplicates_limit=1.0)
    train_idx, val_idx = split_dataset(ds, config)
    twins = {f"cats/{k}.png": f"cats/copy{k}.png" for k in range(6)} | {f"cats/copy{k}.png": f"cats/{k}.png" for k in
                                                                          range(6)}  # fmt: skip
    in_train = {ds.items[i].path for i in train_idx}
    leaking = [ds.items[i].path for i in val_idx if twins.get(ds.items[i].path) in in_train]
    assert leaking  # the seed's split does put some twins on both sides

    from core.train.training import train

    result = train(ds, config, tmp_path / "run")
    m = result.metrics
    assert m["val_duplicates_dropped"] == len(leaking) and sorted(m["val_duplicates_dropped_files"]) == sorted(leaking)
    assert m["val_duplicates"] == 0 and m["val_images"] == len(val_idx) - len(leaking)
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["val_duplicates_dropped"] == len(leaking)
    split = json.loads((result.run_dir / "split.json").read_text())
    assert not set(split["val"]) & set(leaking)
    assert leaks.held_out_duplicates(result.run_dir, "val") == (0, len(val_idx) - len(leaking))
    assert leaks.held_out_duplicates(result.run_dir, "test") is None  # no test/ folder


def test_an_old_run_is_checked_from_its_saved_dataset_s_cached_hashes_or_not_at_all(folder, tmp_path):
    from core.workspace.datasets import open_dataset, save_zip

    entries = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    ds = open_dataset(save_zip(make_zip(tmp_path / "pets.zip", entries)).id)
    run = tmp_path / "old-run"
    run.mkdir()
    split = {"root": str(ds.root), "train": ["cats/original.png", "dogs/dog0.png"],
             "val": ["cats/resized.png", "cats/other0.png", "dogs/dog1.png"], "test": []}  # fmt: skip
    (run / "split.json").write_text(json.dumps(split))
    (run / "metrics.json").write_text(json.dumps({"val_accuracy": 0.5}))  # trained before the check existed
    assert leaks.held_out_duplicates(run, "val") is None  # no hashes on disk: the page does not hash
    duplicates.find_duplicates(ds)
    assert leaks.held_out_duplicates(run, "val") == (1, 3)
    shutil.rmtree(ds.root.parent)  # the dataset deleted since
    assert leaks.held_out_duplicates(run, "val") is None
    (run / "split.json").unlink()
    assert leaks.held_out_duplicates(run, "val") is None


# ---------------------------------------------------------------------------------------------- the command line


def test_inspect_prints_the_duplicates_and_its_json_holds_them(folder, tmp_path):
    write(folder / "dogs" / "cat_as_dog.png", encoded(photo(11)))  # cats/other1.png again, labelled dog
    proc = run_cli("inspect", folder, env_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "duplicates: 11 pairs of duplicate images (2 exact, 9 near), involving 7 images of 15." in out
    assert "1 pair in different classes (conflicting labels)" in out
    lines = [line.strip() for line in out.splitlines()]
    assert "different classes, exact (distance 0): cats/other1.png  dogs/cat_as_dog.png  (cats / dogs)" in lines
    assert "... and 1 more pairs (--json lists 11)" in lines
    data = json.loads(run_cli("inspect", folder, "--json", env_dir=tmp_path).stdout)
    assert data["total"] == 15 and data["duplicates"]["pairs_total"] == 11
    assert data["duplicates"]["pairs"][0]["relation"] == "different classes"
