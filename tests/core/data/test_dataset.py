"""core.data.dataset: layouts, validation by content, junk and skipped files, hostile zips, the report."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import COLORS, class_entries, jpeg_bytes, make_zip
from PIL import Image

from core.config import TrainConfig
from core.data.dataset import load_dataset, scan_folder, split_dataset, stratified_split
from core.data.zips import Limits
from core.util.errors import UserError


def encode(fmt: str, color=(200, 30, 30), size=(24, 18), **kw) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt, **kw)
    return buf.getvalue()


def write_tree(root: Path, entries: dict[str, bytes]) -> Path:
    """The same entries as a zip would hold, written as a folder."""
    for name, data in entries.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def split_entries(prefix="", splits=(("train", 8), ("val", 3)), classes=("red", "blue")) -> dict[str, bytes]:
    return {
        f"{prefix}{split}/{cls}/{i}.jpg": jpeg_bytes(COLORS[cls], seed=1000 * s + 100 * k + i)
        for s, (split, n) in enumerate(splits)
        for k, cls in enumerate(classes)
        for i in range(n)
    }


def truncated_jpeg() -> bytes:
    arr = np.random.default_rng(5).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    data = buf.getvalue()
    return data[: len(data) // 2]


def reasons(ds) -> dict[str, str]:
    return {s["file"]: s["reason"] for s in ds.report.skipped}


def contents(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.fixture
def work(tmp_path) -> Path:
    w = tmp_path / "work" / "inner"
    w.mkdir(parents=True)
    return w


# ---------------------------------------------------------------------------------------------- layouts


def assert_red_blue(ds, per_class=10):
    assert ds.classes == ["blue", "red"]
    assert ds.report.classes == ["blue", "red"]
    assert ds.report.layout == "classes" and not ds.has_split
    assert ds.report.counts == {"blue": {"all": per_class}, "red": {"all": per_class}}
    assert ds.report.total == 2 * per_class
    assert len(ds.items) == 2 * per_class
    assert all(it.split == "" for it in ds.items)
    for it in ds.items:
        assert (ds.root / it.path).is_file()
        assert f"/{ds.classes[it.label]}/" in f"/{it.path}"  # the label is the folder the file sits in
    assert ds.report.skipped == [] and ds.report.warnings == []


def test_class_folders_at_top(colour_zip, work):
    ds = load_dataset(colour_zip, work)
    assert_red_blue(ds)
    assert ds.report.source == "colours.zip"
    assert ds.root.parent == work.resolve(), "extracted into a new folder inside work_dir"
    assert sorted(ds.labels()) == [0] * 10 + [1] * 10
    assert len(ds.paths()) == 20


@pytest.mark.parametrize("prefix", ["101_ObjectCategories/", "outer/inner/"])
def test_wrapper_folders_are_stripped(tmp_path, work, prefix):
    z = make_zip(tmp_path / "wrapped.zip", class_entries(prefix, per_class=10))
    ds = load_dataset(z, work)
    assert_red_blue(ds)
    assert all(it.path.startswith(prefix) for it in ds.items)


def test_wrapper_with_only_junk_beside_it_is_still_stripped(tmp_path, work):
    entries = class_entries("wrap/", per_class=10)
    entries["__MACOSX/wrap/._red"] = b"\x00\x05\x16\x07"
    entries[".DS_Store"] = b"junk"
    ds = load_dataset(make_zip(tmp_path / "w.zip", entries), work)
    assert_red_blue(ds)
    assert ds.report.ignored == 2


@pytest.mark.parametrize("val_name", ["val", "valid", "validation", "VAL"])
def test_split_layout(tmp_path, work, val_name):
    entries = split_entries(splits=(("train", 8), (val_name, 3), ("test", 2)))
    ds = load_dataset(make_zip(tmp_path / "split.zip", entries), work)
    assert ds.report.layout == "split" and ds.has_split
    assert ds.classes == ["blue", "red"]
    assert ds.report.counts == {c: {"train": 8, "val": 3, "test": 2} for c in ("blue", "red")}
    assert {it.split for it in ds.items} == {"train", "val", "test"}
    assert len(ds.paths("train")) == 16 and len(ds.paths("val")) == 6 and len(ds.paths("test")) == 4
    assert sorted(ds.labels("val")) == [0, 0, 0, 1, 1, 1]
    for it in ds.items:
        folder = {"train": "train", "val": val_name, "test": "test"}[it.split]
        assert it.path.startswith(f"{folder}/{ds.classes[it.label]}/")
    assert not any("val" in w for w in ds.report.warnings)


def test_split_layout_inside_a_wrapper(tmp_path, work):
    entries = split_entries("data/", splits=(("train", 10), ("validation", 2)))
    ds = load_dataset(make_zip(tmp_path / "split.zip", entries), work)
    assert ds.report.layout == "split"
    assert ds.report.counts == {c: {"train": 10, "val": 2} for c in ("blue", "red")}


def test_train_and_test_only_warns_val_comes_from_train(tmp_path, work):
    entries = split_entries(splits=(("train", 10), ("test", 3)))
    ds = load_dataset(make_zip(tmp_path / "tt.zip", entries), work)
    assert ds.report.layout == "split"
    assert ds.report.counts == {c: {"train": 10, "test": 3} for c in ("blue", "red")}
    assert not ds.paths("val")
    assert any("val" in w and "train" in w for w in ds.report.warnings), ds.report.warnings


def test_train_folder_alone_is_a_wrapper_of_classes(tmp_path, work):
    ds = load_dataset(make_zip(tmp_path / "t.zip", split_entries(splits=(("train", 10),))), work)
    assert ds.report.layout == "classes"
    assert ds.classes == ["blue", "red"]


def test_split_class_missing_from_train_is_dropped(tmp_path, work):
    entries = split_entries(splits=(("train", 10), ("val", 3)), classes=("red", "blue"))
    entries.update({f"val/green/{i}.jpg": jpeg_bytes(COLORS["green"], seed=i) for i in range(3)})
    ds = load_dataset(make_zip(tmp_path / "s.zip", entries), work)
    assert ds.classes == ["blue", "red"]
    assert any("'green'" in w and "no training images" in w for w in ds.report.warnings)
    assert not any("green" in p.as_posix() for p in ds.paths())


def test_files_beside_the_splits_are_reported(tmp_path, work):
    entries = split_entries(splits=(("train", 10), ("val", 3)))
    entries["README.txt"] = b"about this dataset"
    entries["extra/red/x.jpg"] = jpeg_bytes()
    entries["train/labels.csv"] = b"a,b\n"
    ds = load_dataset(make_zip(tmp_path / "s.zip", entries), work)
    assert ds.report.layout == "split"
    skipped = reasons(ds)
    assert set(skipped) == {"README.txt", "extra/red/x.jpg", "train/labels.csv"}
    assert "class folder" in skipped["train/labels.csv"]
    assert ds.report.total == 26


def test_second_val_folder_is_reported_not_lost(tmp_path, work):
    entries = split_entries(splits=(("train", 10), ("val", 2), ("valid", 1)))
    ds = load_dataset(make_zip(tmp_path / "s.zip", entries), work)
    assert ds.report.counts == {c: {"train": 10, "val": 2} for c in ("blue", "red")}
    assert {Path(f).parts[0] for f in reasons(ds)} == {"valid"}
    assert len(ds.report.skipped) == 2


def test_folder_input(tmp_path):
    folder = write_tree(tmp_path / "photos", class_entries(per_class=10))
    before = contents(folder)
    ds = load_dataset(folder)
    assert_red_blue(ds)
    assert ds.root == folder
    assert ds.report.source == "photos"
    assert contents(folder) == before, "a folder is read in place, never modified"


def test_folder_input_with_wrapper_and_split(tmp_path):
    folder = write_tree(tmp_path / "ds", split_entries("wrap/", splits=(("train", 10), ("valid", 2))))
    ds = load_dataset(str(folder))
    assert ds.report.layout == "split"
    assert ds.report.counts == {c: {"train": 10, "val": 2} for c in ("blue", "red")}
    assert all((folder / it.path).is_file() for it in ds.items)


def test_scan_folder_refuses_a_file(tmp_path):
    f = tmp_path / "x.jpg"
    f.write_bytes(jpeg_bytes())
    with pytest.raises(UserError, match="not a folder"):
        scan_folder(f)


def test_nested_folders_inside_a_class_belong_to_it(tmp_path, work):
    entries = class_entries(per_class=10)
    entries.update({f"red/more/deeper/{i}.jpg": jpeg_bytes(COLORS["red"], seed=500 + i) for i in range(3)})
    ds = load_dataset(make_zip(tmp_path / "n.zip", entries), work)
    assert ds.report.counts == {"blue": {"all": 10}, "red": {"all": 13}}


def test_class_names_keep_unicode_and_spaces(tmp_path, work):
    entries = {f"{cls}/{i}.jpg": jpeg_bytes(seed=i) for cls in ("chats noirs", "Épées") for i in range(10)}
    ds = load_dataset(make_zip(tmp_path / "u.zip", entries), work)
    assert ds.classes == ["chats noirs", "Épées"]
    assert json.loads(ds.report.to_json())["classes"] == ["chats noirs", "Épées"]


# ---------------------------------------------------------------------------------------------- recognised by content


def test_images_are_recognised_by_content_not_name(tmp_path, work):
    entries = class_entries(per_class=10)
    entries.update(
        {
            "red/png_named.jpg": encode("PNG"),
            "red/UPPER.JPG": encode("JPEG"),
            "red/Shout.PNG": encode("PNG"),
            "red/no_extension": encode("JPEG"),
            "red/wrong.txt": encode("BMP"),
        }
    )
    ds = load_dataset(make_zip(tmp_path / "c.zip", entries), work)
    assert ds.report.skipped == []
    assert ds.report.counts["red"] == {"all": 15}
    names = {Path(it.path).name for it in ds.items}
    assert {"png_named.jpg", "UPPER.JPG", "Shout.PNG", "no_extension", "wrong.txt"} <= names


def test_all_accepted_formats(tmp_path, work):
    formats = {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP", "tif": "TIFF"}
    entries = {
        f"{cls}/{i}.{ext}": encode(fmt, COLORS[cls], (20 + i, 16))
        for cls in ("red", "blue")
        for ext, fmt in formats.items()
        for i in range(2)
    }
    ds = load_dataset(make_zip(tmp_path / "f.zip", entries), work)
    assert ds.report.skipped == []
    assert ds.report.counts == {"blue": {"all": 12}, "red": {"all": 12}}


# ---------------------------------------------------------------------------------------------- ignored and skipped


def test_junk_is_ignored_quietly(tmp_path, work):
    entries = class_entries(per_class=10)
    junk = {
        "__MACOSX/red/._0.jpg": b"\x00\x05\x16\x07apple",
        "__MACOSX/._red": b"\x00\x05\x16\x07",
        "red/._0.jpg": b"\x00\x05\x16\x07apple",
        "red/.DS_Store": b"\x00\x00\x00\x01Bud1",
        "blue/Thumbs.db": b"\xd0\xcf\x11\xe0",
        "blue/desktop.ini": b"[.ShellClassInfo]",
        "blue/.hidden.jpg": jpeg_bytes(),
        ".git/config": b"[core]",
    }
    entries.update(junk)
    ds = load_dataset(make_zip(tmp_path / "j.zip", entries), work)
    assert ds.report.ignored == len(junk)
    assert ds.report.skipped == []
    assert ds.report.total == 20
    assert not any("__MACOSX" in p.as_posix() for p in ds.root.rglob("*")), "junk is not even extracted"


def test_junk_in_a_folder_is_ignored(tmp_path):
    entries = class_entries(per_class=10)
    entries.update({"red/Thumbs.db": b"x", "blue/._1.jpg": b"x", "blue/.DS_Store": b"x"})
    ds = load_dataset(write_tree(tmp_path / "f", entries))
    assert ds.report.skipped == []
    assert ds.report.ignored == 3
    assert ds.report.total == 20


def test_bad_files_are_skipped_with_a_reason(tmp_path, work):
    inner = make_zip(tmp_path / "inner.zip", {"red/inside_nested.jpg": jpeg_bytes()}).read_bytes()
    entries = class_entries(per_class=10)
    bad = {
        "red/notes.txt": b"these are not pixels\n",
        "red/cut.jpg": truncated_jpeg(),
        "blue/empty.jpg": b"",
        "blue/more.zip": inner,
        "stray.jpg": jpeg_bytes(),
        "red/icon.ico": encode("ICO", size=(16, 16)),
        "blue/pixmap.ppm": encode("PPM"),
    }
    entries.update(bad)
    ds = load_dataset(make_zip(tmp_path / "b.zip", entries), work)
    skipped = reasons(ds)
    assert set(skipped) == set(bad)
    assert "not an image" in skipped["red/notes.txt"]
    assert "truncated" in skipped["red/cut.jpg"]
    assert "empty" in skipped["blue/empty.jpg"]
    assert "archive" in skipped["blue/more.zip"] and "not expanded" in skipped["blue/more.zip"]
    assert "class folder" in skipped["stray.jpg"]
    assert "unsupported format (ICO)" in skipped["red/icon.ico"]
    assert "unsupported format (PPM)" in skipped["blue/pixmap.ppm"]
    assert ds.report.counts == {"blue": {"all": 10}, "red": {"all": 10}}
    assert ds.report.ignored == 0
    extracted = contents(ds.root)
    assert not any("inside_nested" in p or p.endswith(".zip") for p in extracted), "nested zip left alone"
    assert [s["file"] for s in ds.report.skipped] == sorted(s["file"] for s in ds.report.skipped)


def test_bad_files_in_a_folder_are_skipped(tmp_path):
    entries = class_entries(per_class=10)
    entries.update(
        {"red/cut.jpg": truncated_jpeg(), "blue/empty.png": b"", "blue/inner.zip": b"PK\x05\x06" + bytes(18)}
    )
    ds = load_dataset(write_tree(tmp_path / "f", entries))
    assert set(reasons(ds)) == {"red/cut.jpg", "blue/empty.png", "blue/inner.zip"}
    assert ds.report.total == 20


def test_duplicate_names_keep_the_first(tmp_path, work):
    entries = class_entries(per_class=10)
    z = make_zip(tmp_path / "d.zip", entries)
    with pytest.warns(UserWarning), zipfile.ZipFile(z, "a") as zf:
        zf.writestr("red/0.jpg", b"second copy, not an image")
    ds = load_dataset(z, work)
    assert [s["reason"] for s in ds.report.skipped] == ["duplicate name in the zip"]
    assert ds.report.counts["red"] == {"all": 10}
    with Image.open(ds.root / "red/0.jpg") as im:
        assert im.format == "JPEG", "the first entry is the one kept"


# ---------------------------------------------------------------------------------------------- hostile zips


def assert_nothing_left(tmp_path: Path, work: Path):
    assert list(work.iterdir()) == [], "no partial extraction folder"
    assert not [p for p in tmp_path.rglob("*evil*")], "nothing written outside the extraction folder"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("../evil.txt", "outside"),
        ("red/../../evil.jpg", "outside"),
        ("a/../../evil", "outside"),
        ("../../../../../../../../evil.jpg", "outside"),
        ("..\\evil.jpg", "outside"),
        ("red\\..\\..\\evil.jpg", "outside"),
        ("C:\\evil.jpg", "absolute"),
        ("c:/evil.jpg", "absolute"),
        ("\\\\server\\share\\evil.jpg", "absolute"),
    ],
)
def test_path_traversal_refuses_the_whole_zip(tmp_path, work, name, match):
    entries = class_entries(per_class=3)
    entries[name] = jpeg_bytes()
    entries["zzz/last.jpg"] = jpeg_bytes()  # after the bad entry: proves nothing is half-extracted
    z = make_zip(tmp_path / "hostile.zip", entries)
    with pytest.raises(UserError, match=match) as info:
        load_dataset(z, work)
    assert "refusing" in str(info.value)
    assert_nothing_left(tmp_path, work)


def test_absolute_path_is_refused(tmp_path, work):
    target = tmp_path / "abs_evil.txt"
    entries = class_entries(per_class=3)
    entries[str(target)] = b"owned"
    entries["/tmp/evil_from_zip_test.txt"] = b"owned"
    with pytest.raises(UserError, match="absolute path"):
        load_dataset(make_zip(tmp_path / "hostile.zip", entries), work)
    assert not target.exists()
    assert not Path("/tmp/evil_from_zip_test.txt").exists()
    assert_nothing_left(tmp_path, work)


def test_symlink_entry_is_refused(tmp_path, work):
    z = make_zip(tmp_path / "link.zip", class_entries(per_class=3))
    with zipfile.ZipFile(z, "a") as zf:
        info = zipfile.ZipInfo("red/evil_link.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, str(tmp_path / "evil_target"))
    with pytest.raises(UserError, match="symbolic link"):
        load_dataset(z, work)
    assert_nothing_left(tmp_path, work)


def test_ratio_bomb_is_stopped(tmp_path, work):
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in class_entries(per_class=3).items():
            zf.writestr(name, data)
        zf.writestr("red/evil_zeros.jpg", bytes(50 * 1024**2))
    assert z.stat().st_size < 1024**2
    with pytest.raises(UserError, match="zip bomb") as info:
        load_dataset(z, work)
    msg = str(info.value)
    assert "evil_zeros.jpg" in msg and "200 times" in msg and "limit" in msg
    assert "50.0 MB" in msg, "the message gives the sizes"
    assert_nothing_left(tmp_path, work)


def test_lowered_ratio_limit(tmp_path, work):
    rng = np.random.default_rng(0)
    text = rng.choice(list(b"ACGT"), 2 * 1024**2).astype(np.uint8).tobytes()  # compresses about 4:1
    entries = class_entries(per_class=10)
    entries["red/evil_genome.txt"] = text
    z = make_zip(tmp_path / "g.zip", entries)
    ds = load_dataset(z, work)  # default limit: fine, the file is simply not an image
    assert "red/evil_genome.txt" in reasons(ds)
    with pytest.raises(UserError, match="expands more than 2 times") as info:
        load_dataset(z, work, limits=Limits(max_ratio=2))
    assert "evil_genome.txt" in str(info.value)
    assert [p.name for p in work.iterdir()] == [ds.root.name], "only the first, successful extraction remains"


def test_small_entries_may_compress_well(tmp_path, work):
    entries = class_entries(per_class=10)
    entries["red/evil_small.txt"] = bytes(500_000)  # ratio ~500 but under ratio_floor_bytes
    ds = load_dataset(make_zip(tmp_path / "s.zip", entries), work)
    assert "red/evil_small.txt" in reasons(ds)


def test_too_many_entries(tmp_path, work):
    entries = {f"{c}/{i}.jpg": b"x" for c in ("red", "blue") for i in range(10)}
    with pytest.raises(UserError, match="entries") as info:
        load_dataset(make_zip(tmp_path / "many.zip", entries), work, limits=Limits(max_entries=10))
    assert "20" in str(info.value) and "limit of 10" in str(info.value)
    assert_nothing_left(tmp_path, work)


def test_too_many_bytes_in_total(tmp_path, work):
    rng = np.random.default_rng(1)
    entries = {f"{c}/{i}.jpg": rng.bytes(30_000) for c in ("red", "blue") for i in range(4)}  # 240 KB, incompressible
    with pytest.raises(UserError, match="zip bomb") as info:
        load_dataset(make_zip(tmp_path / "big.zip", entries), work, limits=Limits(max_total_bytes=100 * 1024))
    assert "234.4 KB" in str(info.value) and "limit of 100.0 KB" in str(info.value)
    assert_nothing_left(tmp_path, work)


def test_total_limit_counts_real_bytes_exactly(tmp_path, work):
    entries = class_entries(per_class=10)
    z = make_zip(tmp_path / "ok.zip", entries)
    total = sum(len(v) for v in entries.values())
    assert load_dataset(z, work, limits=Limits(max_total_bytes=total)).report.total == 20
    with pytest.raises(UserError, match="limit"):
        load_dataset(z, work, limits=Limits(max_total_bytes=total - 1))


def test_entries_are_streamed_in_full(tmp_path, work):
    rng = np.random.default_rng(3)
    big = rng.bytes(3 * 1024**2 + 17)  # several read chunks
    entries = class_entries(per_class=10)
    entries["red/evil_big.bin"] = big
    ds = load_dataset(make_zip(tmp_path / "b.zip", entries), work)
    assert (ds.root / "red/evil_big.bin").read_bytes() == big


def test_file_and_folder_with_the_same_name(tmp_path, work):
    entries = class_entries(per_class=3)
    entries["red/sub"] = b"a file"
    entries["red/sub/x.jpg"] = jpeg_bytes()
    with pytest.raises(UserError, match=r"Could not write 'red/sub/x\.jpg'"):
        load_dataset(make_zip(tmp_path / "clash.zip", entries), work)
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_damaged_compressed_data(tmp_path, work, method):
    z = tmp_path / "bad.zip"
    with zipfile.ZipFile(z, "w", method) as zf:
        zf.writestr("red/a.txt", bytes(range(256)) * 400)
        zf.writestr("blue/b.txt", b"fine")
    data = bytearray(z.read_bytes())
    data[60:70] = bytes(10)  # inside the first entry's compressed data, just after its local header
    z.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"bad.zip is damaged \('red/a.txt' cannot be read\)"):
        load_dataset(z, work)
    assert list(work.iterdir()) == []


def test_not_a_zip(tmp_path, work):
    fake = tmp_path / "photos.zip"
    fake.write_bytes(np.random.default_rng(2).bytes(5000))
    with pytest.raises(UserError, match=r"photos\.zip is not a zip"):
        load_dataset(fake, work)
    assert list(work.iterdir()) == []


def test_zip_of_an_unknown_version(tmp_path, work):
    z = make_zip(tmp_path / "future.zip", class_entries(per_class=3))
    data = bytearray(z.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 6] = 189  # "version needed to extract": 18.9, newer than zipfile knows
    z.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"future\.zip is not a zip file or cannot be read"):
        load_dataset(z, work)
    assert list(work.iterdir()) == []


def test_a_single_image_is_not_a_zip(tmp_path, work):
    img = tmp_path / "cat.jpg"
    img.write_bytes(jpeg_bytes())
    with pytest.raises(UserError, match="not a zip"):
        load_dataset(img, work)


def test_missing_path(tmp_path, work):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(tmp_path / "nope.zip", work)


# ---------------------------------------------------------------------------------------------- errors and warnings


def test_only_loose_images(tmp_path, work):
    entries = {f"{i}.jpg": jpeg_bytes(seed=i) for i in range(5)}
    with pytest.raises(UserError, match="No class folders"):
        load_dataset(make_zip(tmp_path / "loose.zip", entries), work)
    assert list(work.iterdir()) == [], "the extraction folder is removed when scanning fails"


def test_loose_images_in_a_folder(tmp_path):
    folder = write_tree(tmp_path / "loose", {f"{i}.png": encode("PNG") for i in range(3)})
    with pytest.raises(UserError, match="class"):
        load_dataset(folder)


def test_single_class_folder_is_refused(tmp_path, work):
    with pytest.raises(UserError, match="class"):
        load_dataset(make_zip(tmp_path / "one.zip", class_entries(classes=("red",), per_class=10)), work)
    assert list(work.iterdir()) == []


def test_only_one_class_with_usable_images(tmp_path, work):
    entries = class_entries(classes=("red",), per_class=10)
    entries.update({f"blue/{i}.txt": b"text" for i in range(5)})
    with pytest.raises(UserError, match=r"only one class with usable images \('red'\)"):
        load_dataset(make_zip(tmp_path / "one.zip", entries), work)
    assert list(work.iterdir()) == []


def test_empty_zip(tmp_path, work):
    with pytest.raises(UserError):
        load_dataset(make_zip(tmp_path / "empty.zip", {}), work)
    assert list(work.iterdir()) == []


def test_tiny_and_empty_classes_are_dropped_with_a_warning(tmp_path, work):
    entries = class_entries(classes=("red", "blue", "green"), per_class=10)
    entries = {k: v for k, v in entries.items() if not k.startswith("green/") or k == "green/0.jpg"}
    z = make_zip(tmp_path / "t.zip", entries)
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr(zipfile.ZipInfo("empty_class/"), b"")
        zf.writestr("junk_only/.DS_Store", b"x")
    ds = load_dataset(z, work)
    assert ds.classes == ["blue", "red"]
    assert ds.report.counts == {"blue": {"all": 10}, "red": {"all": 10}}
    warnings = "\n".join(ds.report.warnings)
    assert "'green' has only 1 usable image" in warnings
    assert "'empty_class' has no usable images" in warnings
    assert "'junk_only' has no usable images" in warnings
    assert all(Path(it.path).parts[0] in ("red", "blue") for it in ds.items)


def test_empty_class_folder_in_a_folder(tmp_path):
    folder = write_tree(tmp_path / "f", class_entries(per_class=10))
    (folder / "nothing").mkdir()
    ds = load_dataset(folder)
    assert ds.classes == ["blue", "red"]
    assert any("'nothing' has no usable images" in w for w in ds.report.warnings)


def test_imbalance_warning(tmp_path, work):
    entries = class_entries(classes=("red",), per_class=31)
    entries.update(class_entries(classes=("blue",), per_class=3))
    ds = load_dataset(make_zip(tmp_path / "i.zip", entries), work)
    imbalance = [w for w in ds.report.warnings if "imbalanced" in w]
    assert len(imbalance) == 1
    assert "'red' has 31" in imbalance[0] and "'blue' only 3" in imbalance[0]


def test_ten_to_one_is_not_imbalanced(tmp_path, work):
    entries = class_entries(classes=("red",), per_class=30)
    entries.update(class_entries(classes=("blue",), per_class=3))
    ds = load_dataset(make_zip(tmp_path / "i.zip", entries), work)
    assert not any("imbalanced" in w for w in ds.report.warnings)


def test_small_class_warning(tmp_path, work):
    entries = class_entries(classes=("red",), per_class=10)
    entries.update(class_entries(classes=("blue",), per_class=9))
    ds = load_dataset(make_zip(tmp_path / "s.zip", entries), work)
    small = [w for w in ds.report.warnings if "unreliable" in w]
    assert small == ["Class 'blue' has only 9 images; results for it will be unreliable."]


# ---------------------------------------------------------------------------------------------- report


def test_report_json_round_trip_and_sizes(tmp_path, work):
    sizes = {"red": [(40, 30), (50, 20), (60, 100)], "blue": [(10, 10), (80, 5)]}
    entries = {
        f"{cls}/{i}.png": encode("PNG", COLORS[cls], size) for cls, ss in sizes.items() for i, size in enumerate(ss)
    }
    entries["red/bad.txt"] = b"no"
    entries["red/huge_but_bad.jpg"] = truncated_jpeg()  # skipped files do not count in the sizes
    ds = load_dataset(make_zip(tmp_path / "r.zip", entries), work)
    data = json.loads(ds.report.to_json())
    assert data == ds.report.to_dict()
    assert data["classes"] == ["blue", "red"]
    assert data["counts"] == {"blue": {"all": 2}, "red": {"all": 3}}
    assert data["total"] == 5
    assert data["layout"] == "classes" and data["source"] == "r.zip"
    assert {s["file"] for s in data["skipped"]} == {"red/bad.txt", "red/huge_but_bad.jpg"}
    assert all(set(s) == {"file", "reason"} for s in data["skipped"])
    assert data["image_sizes"] == {
        "min_width": 10,
        "median_width": 50,
        "max_width": 80,
        "min_height": 5,
        "median_height": 20,
        "max_height": 100,
    }
    assert isinstance(data["warnings"], list) and data["warnings"]  # small classes
    assert data["ignored"] == 0


def test_report_sizes_ignore_dropped_classes(tmp_path, work):
    entries = class_entries(per_class=10, size=(40, 30))
    entries["lonely/0.png"] = encode("PNG", size=(999, 777))
    ds = load_dataset(make_zip(tmp_path / "r.zip", entries), work)
    assert ds.report.image_sizes["max_width"] == 40 and ds.report.image_sizes["max_height"] == 30


def test_median_of_even_count(tmp_path, work):
    entries = {f"{c}/{i}.png": encode("PNG", size=(10 * (i + 1), 7)) for c in ("a", "b") for i in range(2)}
    ds = load_dataset(make_zip(tmp_path / "m.zip", entries), work)
    assert ds.report.image_sizes["median_width"] == 15
    assert ds.report.image_sizes["median_height"] == 7


# ---------------------------------------------------------------------------------------------- progress


def test_progress_reaches_the_end(colour_zip, work):
    calls: list[tuple[int, int]] = []
    load_dataset(colour_zip, work, progress=lambda done, total: calls.append((done, total)))
    assert calls, "progress was never called"
    assert all(0 < done <= total for done, total in calls)
    assert calls[-1][0] == calls[-1][1] == 20, "the last call is the image check finishing"
    assert (20, 20) in calls[:20], "extraction of the 20 entries reports too"
    dones = [d for d, t in calls]
    assert dones[:20] == list(range(1, 21)) and dones[20:] == list(range(1, 21))


def test_progress_for_a_folder(tmp_path):
    folder = write_tree(tmp_path / "f", class_entries(per_class=10))
    calls = []
    load_dataset(folder, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (20, 20)


def test_progress_exception_aborts_and_cleans_up(colour_zip, work):
    class Stop(Exception):
        pass

    def cancel(done, total):
        if done == 5:
            raise Stop

    with pytest.raises(Stop):
        load_dataset(colour_zip, work, progress=cancel)
    assert list(work.iterdir()) == []


def test_default_work_dir_is_the_temp_folder(colour_zip, tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    ds = load_dataset(colour_zip)
    assert ds.root.parent == temp.resolve()
    assert os.path.isdir(ds.root)


# ---------------------------------------------------------------------------------------------- the split


def test_stratified_split_keeps_every_class_in_both_parts():
    labels = [0] * 10 + [1] * 3 + [2] * 2 + [3] * 50 + [4] * 1
    train_idx, val_idx = stratified_split(labels, 0.1, seed=0)
    assert sorted(train_idx + val_idx) == list(range(len(labels)))
    assert not set(train_idx) & set(val_idx)
    assert train_idx == sorted(train_idx) and val_idx == sorted(val_idx)
    val_counts = Counter(labels[i] for i in val_idx)
    train_counts = Counter(labels[i] for i in train_idx)
    assert val_counts == {0: 1, 1: 1, 2: 1, 3: 5}  # 10% rounded, at least one, never the whole class
    assert train_counts == {0: 9, 1: 2, 2: 1, 3: 45, 4: 1}  # a single image can only train


def test_stratified_split_respects_the_fraction():
    labels = [0] * 100 + [1] * 40
    _, val_idx = stratified_split(labels, 0.25, seed=3)
    counts = Counter(labels[i] for i in val_idx)
    assert counts == {0: 25, 1: 10}


def test_stratified_split_is_deterministic_per_seed():
    labels = [i % 3 for i in range(60)]
    assert stratified_split(labels, 0.2, seed=5) == stratified_split(labels, 0.2, seed=5)
    assert stratified_split(labels, 0.2, seed=5)[1] != stratified_split(labels, 0.2, seed=6)[1]


def test_split_dataset_without_own_split_is_stratified(tmp_path, work):
    ds = load_dataset(make_zip(tmp_path / "c.zip", class_entries(per_class=8)), work)
    train_idx, val_idx = split_dataset(ds, TrainConfig(validation_split=0.25))
    assert sorted(train_idx + val_idx) == list(range(len(ds.items)))
    assert Counter(ds.items[i].label for i in val_idx) == {0: 2, 1: 2}
    assert split_dataset(ds, TrainConfig(validation_split=0.25)) == (train_idx, val_idx)
    assert split_dataset(ds, TrainConfig(validation_split=0.25, seed=1)) != (train_idx, val_idx)


def test_split_dataset_uses_the_datasets_own_val_folder(tmp_path, work):
    entries = split_entries("data/", splits=(("train", 5), ("valid", 3), ("test", 2)))
    ds = load_dataset(make_zip(tmp_path / "s.zip", entries), work)
    train_idx, val_idx = split_dataset(ds, TrainConfig(validation_split=0.5))
    assert {ds.items[i].split for i in train_idx} == {"train"}
    assert {ds.items[i].split for i in val_idx} == {"val"}
    assert len(train_idx) == 10 and len(val_idx) == 6  # test images are never trained on or validated with


def test_split_dataset_with_train_and_test_only_splits_train(tmp_path, work):
    ds = load_dataset(make_zip(tmp_path / "s.zip", split_entries(splits=(("train", 5), ("test", 2)))), work)
    train_idx, val_idx = split_dataset(ds, TrainConfig(validation_split=0.2))
    assert {ds.items[i].split for i in train_idx + val_idx} == {"train"}
    assert Counter(ds.items[i].label for i in val_idx) == {0: 1, 1: 1}
    assert len(train_idx) == 8
