"""core.data.hashes' search in blocks: the same pairs as comparing every pair at once, whatever the block sizes and
wherever the copies sit against the blocks' edges; the report kept from it independent of the order pairs come in;
and a hashing stopped half-way keeping what it did. The hashes are random here, with near copies planted."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import encoded, photo

from core.data import duplicates, hashes
from core.data.dataset import Dataset, Item, Report

N = 700
# Copies planted around the edges of blocks of 50 and 70 rows/columns: the last row of a block with the first of
# the next, the first image with the last, a column block's edge, three copies of one image (a group), and a
# copy that cannot be read.
PLANTED = [(49, 50), (0, N - 1), (69, 70), (139, 141), (300, 350), (300, 420), (300, 698), (5, 6)]
UNREADABLE = (6, 500)  # 6 copies 5, but it could not be read: never paired


def planted(seed: int = 0) -> hashes.Hashes:
    rng = np.random.default_rng(seed)
    h = hashes.Hashes(
        [f"c{k % 3}/{k}.png" for k in range(N)],
        np.array([k.to_bytes(32, "big") for k in range(N)], dtype="S32"),
        rng.integers(0, 2**63, N, dtype=np.uint64),
        rng.integers(0, 2**63, N, dtype=np.uint64),
        rng.integers(0, 256, (N, 192), dtype=np.uint8),
        np.full(N, 500, dtype=np.uint32),
        np.ones(N, dtype=bool),
    )
    for a, b in PLANTED:
        flips = rng.choice(64, int(rng.integers(0, 10)), replace=False)
        h.phash[b] = h.phash[a] ^ np.uint64(sum(1 << int(f) for f in flips))
        h.dhash[b] = h.dhash[a] ^ np.uint64(0b101)
        h.thumb[b] = np.clip(h.thumb[a].astype(int) + rng.integers(-5, 6, 192), 0, 255)
    h.phash[600], h.dhash[600] = h.phash[601], h.dhash[601]  # the same hashes, thumbnails not alike: no pair
    h.phash[650], h.dhash[650], h.exact[650] = h.phash[651], h.dhash[651], h.exact[651]  # the same pixels: a pair
    h.ok[list(UNREADABLE)] = False
    return h


def brute_force(h: hashes.Hashes) -> dict[tuple[int, int], int]:
    """Every pair i < j of readable images within the rule, with its distance, from the whole matrix at once."""
    d = np.bitwise_count(h.phash[:, None] ^ h.phash[None, :]) + np.bitwise_count(h.dhash[:, None] ^ h.dhash[None, :])
    mad = np.abs(h.thumb[:, None, :].astype(int) - h.thumb[None, :, :]).mean(axis=2)
    alike = (d <= hashes.NEAR) & ((mad <= hashes.CLOSE) | (h.exact[:, None] == h.exact[None, :]))
    alike &= h.ok[:, None] & h.ok[None, :]
    return {(int(i), int(j)): int(d[i, j]) for i, j in zip(*np.nonzero(alike), strict=True) if i < j}


def blocks(monkeypatch, rows: int, columns: int, confirm: int) -> None:
    monkeypatch.setattr(hashes, "ROWS", rows)
    monkeypatch.setattr(hashes, "COLUMNS", columns)
    monkeypatch.setattr(hashes, "CONFIRM", confirm)


def searched(h: hashes.Hashes, progress=None) -> dict[tuple[int, int], int]:
    found: dict[tuple[int, int], int] = {}
    for i, j, d in hashes.near_pairs(h, progress=progress):
        assert len(i) <= hashes.CONFIRM
        for pair in zip(i.tolist(), j.tolist(), d.tolist(), strict=True):
            assert pair[0] < pair[1] and pair[:2] not in found  # each pair once, the smaller index first
            found[pair[:2]] = pair[2]
    return found


@pytest.mark.parametrize(
    "rows, columns, confirm",
    [(50, 70, 3), (70, 50, 2), (64, 64, 16_384), (7, 1000, 1), (N, N, 16_384), (512, 4096, 16_384)],
)
def test_the_blocked_search_finds_exactly_the_pairs_of_the_whole_matrix(monkeypatch, rows, columns, confirm):
    h = planted()
    expected = brute_force(h)
    assert set(PLANTED) - {(5, 6)} <= set(expected) and (650, 651) in expected and (600, 601) not in expected
    assert not any(i in UNREADABLE or j in UNREADABLE for i, j in expected)
    blocks(monkeypatch, rows, columns, confirm)
    calls = []
    assert searched(h, progress=lambda done, total: calls.append((done, total))) == expected
    m = N - len(UNREADABLE)
    assert calls[-1] == (m * (m - 1) // 2, m * (m - 1) // 2)  # every pair compared, counted once
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


@pytest.mark.parametrize("rows, columns, confirm", [(50, 70, 3), (512, 4096, 16_384)])
def test_duplicated_agrees_with_the_whole_matrix(monkeypatch, rows, columns, confirm):
    h = planted(1)
    pairs = brute_force(h)
    rng = np.random.default_rng(2)
    order = rng.permutation(N)
    queries, targets = order[:300], order[300:]
    blocks(monkeypatch, rows, columns, confirm)
    got = hashes.duplicated(h, queries, targets)
    target_set = set(targets.tolist())
    expected = [any((min(q, t), max(q, t)) in pairs for t in target_set) for q in queries.tolist()]
    assert got.tolist() == expected and sum(expected) >= 3


def test_the_report_keeps_the_same_best_pairs_whatever_the_blocks(monkeypatch):
    h = planted()
    for k in range(200, 260):  # a flood: 60 copies of one image, 1 770 pairs, more than the report keeps
        h.phash[k], h.dhash[k], h.thumb[k] = h.phash[200], h.dhash[200] ^ np.uint64(k % 7), h.thumb[200]
    items = [Item(p, k % 3, "val" if k % 10 == 0 else "train") for k, p in enumerate(h.paths)]
    ds = Dataset(root=".", classes=["a", "b", "c"], items=items, report=Report("x.zip", "split", [], {}))
    monkeypatch.setattr(duplicates, "MAX_PAIRS", 40)
    reports = []
    for rows, columns, confirm in ((N, N, 16_384), (50, 70, 3), (7, 1000, 11)):
        blocks(monkeypatch, rows, columns, confirm)
        reports.append(duplicates.report(ds, h).to_dict())
    assert reports[0] == reports[1] == reports[2]
    found = reports[0]
    assert found["pairs_total"] == len(brute_force(h)) > 1770 and len(found["pairs"]) == 40
    assert found["pairs"][0]["relation"] == "leak"  # leaks first, then conflicts, then the rest


def test_a_stopped_hashing_keeps_the_images_it_hashed(tmp_path, monkeypatch):
    root = tmp_path / "files"
    for k in range(12):
        (root / "a").mkdir(parents=True, exist_ok=True)
        (root / "a" / f"{k}.png").write_bytes(encoded(photo(70 + k, (64, 48))))
    items = [Item(f"a/{k}.png", 0, "") for k in range(12)]
    ds = Dataset(
        root=root, classes=["a"], items=items, report=Report("x.zip", "classes", ["a"], {}), store=str(tmp_path)
    )
    monkeypatch.setattr(hashes, "SAVE_EVERY", 5)

    class Stop(Exception):
        pass

    def stop_after(done, total):
        if done >= 7:
            raise Stop

    with pytest.raises(Stop):
        hashes.dataset_hashes(ds, stop_after)
    assert len(hashes.read_hashes(tmp_path).paths) == 5  # the first 5 were written; the stop lost the next ones
    calls = []
    h = hashes.dataset_hashes(ds, lambda done, total: calls.append((done, total)))
    assert calls[-1] == (7, 7) and h.ok.all() and hashes.cached(ds)  # only the 7 missing ones hashed
