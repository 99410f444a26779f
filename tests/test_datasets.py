"""datasets.PatchesDataset: validation, in-memory and streaming modes giving the same samples, stats."""
from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import write_raster

import datasets
from datasets import PatchesDataset
from errors import SR4RSError

S = 4  # LR patch size
C = 2  # bands


def make_pair(folder: str, name: str, n: int, first: int = 0, dtype=np.int16, s: int = S, c: int = C,
              hr_n: int | None = None, hr_size: int | None = None,
              hr_c: int | None = None) -> tuple[str, str]:
    """A LR/HR pair of patches images whose patch i holds (first + i) * 10 + band everywhere (HR: + 1000)."""
    hr_n = n if hr_n is None else hr_n
    hs = 4 * s if hr_size is None else hr_size
    hr_c = c if hr_c is None else hr_c
    lr = np.zeros((n * s, s, c), dtype)
    hr = np.zeros((hr_n * hs, hs, hr_c), dtype)
    for i in range(max(n, hr_n)):
        for b in range(max(c, hr_c)):
            if i < n and b < c:
                lr[i * s:(i + 1) * s, :, b] = (first + i) * 10 + b
            if i < hr_n and b < hr_c:
                hr[i * hs:(i + 1) * hs, :, b] = (first + i) * 10 + b + 1000
    lr_path = write_raster(os.path.join(folder, f"{name}_lr.tif"), lr)
    hr_path = write_raster(os.path.join(folder, f"{name}_hr.tif"), hr)
    return lr_path, hr_path


def patch_ids(batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """The patch numbers of the LR and HR samples of a batch (from the values make_pair wrote)."""
    lr = batch["lr"].numpy().astype(np.int64)
    hr = batch["hr"].numpy().astype(np.int64)
    return lr[:, 0, 0, 0] // 10, (hr[:, 0, 0, 0] - 1000) // 10


@pytest.fixture(scope="module")
def two_pairs(tmp_path_factory) -> tuple[list[str], list[str]]:
    folder = str(tmp_path_factory.mktemp("patches"))
    a = make_pair(folder, "a", 7)
    b = make_pair(folder, "b", 6, first=7)
    return [a[0], b[0]], [a[1], b[1]]


def test_attributes(two_pairs):
    ds = PatchesDataset(*two_pairs)
    assert (ds.n_patches, ds.nbands, ds.lr_patch_size, ds.hr_patch_size) == (13, C, S, 4 * S)
    assert ds.dtype == np.int16


def test_modes_give_identical_samples(two_pairs):
    mem = PatchesDataset(*two_pairs)
    stream = PatchesDataset(*two_pairs, streaming=True)
    dm, dst = mem.tf_dataset(3, seed=5), stream.tf_dataset(3, seed=5)
    epochs = []
    for _ in range(3):
        bm, bs = list(dm), list(dst)
        assert len(bm) == len(bs) == 13 // 3  # last incomplete batch dropped
        ids = []
        for x, y in zip(bm, bs, strict=True):
            assert x["lr"].shape == (3, S, S, C) and x["hr"].shape == (3, 4 * S, 4 * S, C)
            assert x["lr"].dtype == y["lr"].dtype == np.int16
            np.testing.assert_array_equal(x["lr"], y["lr"])
            np.testing.assert_array_equal(x["hr"], y["hr"])
            lr_ids, hr_ids = patch_ids(x)
            np.testing.assert_array_equal(lr_ids, hr_ids)  # LR and HR pair up patch by patch
            # every pixel and band of a sample belongs to the same patch
            np.testing.assert_array_equal(x["lr"][..., 1].numpy(), x["lr"][..., 0].numpy() + 1)
            ids.extend(lr_ids.tolist())
        assert len(set(ids)) == 12 and set(ids) <= set(range(13))
        epochs.append(ids)
    assert epochs[0] != epochs[1] != epochs[2]  # reshuffled on each iteration
    # the same seed gives the same sequence of epochs in a new dataset
    again = [patch_ids(b)[0].tolist() for b in PatchesDataset(*two_pairs).tf_dataset(3, seed=5)]
    assert sum(again, []) == epochs[0]


def test_single_band_patches_stream_like_in_memory(tmp_path):
    lr, hr = make_pair(str(tmp_path), "pan", 5, c=1)
    batches = [list(PatchesDataset([lr], [hr], streaming=streaming).tf_dataset(2, seed=1))
               for streaming in (False, True)]
    assert len(batches[0]) == len(batches[1]) == 2
    for mem, stream in zip(*batches, strict=True):
        assert stream["lr"].shape == (2, S, S, 1)
        np.testing.assert_array_equal(mem["lr"], stream["lr"])
        np.testing.assert_array_equal(mem["hr"], stream["hr"])


def test_no_shuffle_keeps_file_order(two_pairs):
    for streaming in (False, True):
        ds = PatchesDataset(*two_pairs, streaming=streaming)
        ids = [patch_ids(b)[0].tolist() for b in ds.tf_dataset(4, shuffle=False)]
        assert sum(ids, []) == list(range(12))


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])  # float: Chan; integers: histograms
def test_stats_chunked_and_identical(tmp_path, monkeypatch, dtype):
    monkeypatch.setattr(datasets, "CHUNK_BYTES", 100)  # several chunks per file
    rng = np.random.default_rng(0)
    lr = np.clip(rng.normal(100, 30, (5 * S, S, 3)), 0, 255).astype(dtype)
    hr = np.clip(rng.normal(50, 7, (5 * 4 * S, 4 * S, 3)), 0, 255).astype(dtype)
    if dtype == np.int16:
        hr -= 200
    paths = [write_raster(str(tmp_path / "lr.tif"), lr)], [write_raster(str(tmp_path / "hr.tif"), hr)]
    mem, stream = PatchesDataset(*paths), PatchesDataset(*paths, streaming=True)
    assert mem.lr_stats == stream.lr_stats and mem.hr_stats == stream.hr_stats
    for stats, arr in ((mem.lr_stats, lr), (mem.hr_stats, hr)):
        a = arr.astype(np.float64).reshape(-1, 3)
        np.testing.assert_allclose(stats["mean"], a.mean(0), rtol=1e-12)
        np.testing.assert_allclose(stats["std"], a.std(0), rtol=1e-10)
        assert stats["min"] == a.min(0).tolist() and stats["max"] == a.max(0).tolist()
        assert all(isinstance(v, float) for v in stats["mean"])


def test_mixed_types_promoted(tmp_path):
    lr, _ = make_pair(str(tmp_path), "u8", 3, dtype=np.uint8)
    _, hr = make_pair(str(tmp_path), "u16", 3, dtype=np.uint16)
    ds = PatchesDataset([lr], [hr], streaming=True)
    assert ds.dtype == np.uint16
    batch = next(iter(ds.tf_dataset(3, shuffle=False)))
    assert batch["lr"].dtype == batch["hr"].dtype == np.uint16
    assert patch_ids(batch)[0].tolist() == [0, 1, 2]


def test_wait_seconds(two_pairs):
    ds = PatchesDataset(*two_pairs, streaming=True)
    assert ds.pop_wait_seconds() == 0.0
    list(ds.tf_dataset(2, seed=1))
    assert ds.pop_wait_seconds() > 0.0
    assert ds.pop_wait_seconds() == 0.0
    mem = PatchesDataset(*two_pairs)
    assert mem.pop_wait_seconds() > 0.0  # the initial load, once
    list(mem.tf_dataset(2, seed=1))
    assert mem.pop_wait_seconds() == 0.0


def _error(lr: list[str], hr: list[str], streaming: bool = False) -> str:
    with pytest.raises(SR4RSError) as info:
        PatchesDataset(lr, hr, streaming=streaming)
    return str(info.value)


def test_validation_errors(tmp_path):
    d = str(tmp_path)
    good_lr, good_hr = make_pair(d, "good", 3)
    msg = _error([good_lr], [good_hr, good_hr])
    assert "1 LR patches images but 2 HR" in msg and good_hr in msg
    msg = _error([good_lr, good_lr], [good_hr])
    assert "2 LR patches images but 1 HR" in msg and good_lr in msg
    assert "no patches images" in _error([], [])

    not_multiple = write_raster(os.path.join(d, "odd.tif"), np.zeros((10, S, C), np.int16))
    msg = _error([not_multiple], [good_hr])
    assert not_multiple in msg and "not a multiple of its width" in msg

    lr, hr = make_pair(d, "count", 3, hr_n=4)
    msg = _error([lr], [hr])
    assert hr in msg and lr in msg and "4 patches" in msg and "has 3" in msg

    lr, hr = make_pair(d, "size", 3, hr_size=3 * S)
    msg = _error([lr], [hr])
    assert hr in msg and "not 4 x the LR patch size" in msg

    lr, hr = make_pair(d, "bands", 3, hr_c=C + 1)
    msg = _error([lr], [hr])
    assert hr in msg and "3 bands" in msg

    lr3, hr3 = make_pair(d, "bands3", 3, c=3)
    msg = _error([good_lr, lr3], [good_hr, hr3])
    assert lr3 in msg and "3 bands" in msg

    lr8, hr8 = make_pair(d, "size8", 3, s=8)
    msg = _error([good_lr, lr8], [good_hr, hr8])
    assert lr8 in msg and "patch size 8" in msg

    missing = os.path.join(d, "missing.tif")
    msg = _error([good_lr], [missing], streaming=True)
    assert missing in msg and "no such file" in msg

    garbage = os.path.join(d, "garbage.tif")
    with open(garbage, "w") as f:
        f.write("not an image")
    msg = _error([garbage], [good_hr])
    assert garbage in msg and "not a readable raster" in msg

    ds = PatchesDataset([good_lr], [good_hr])
    with pytest.raises(SR4RSError, match="batch size"):
        ds.tf_dataset(4)


def test_indices_restrict_the_patches_drawn(two_pairs):
    for streaming in (False, True):
        ds = PatchesDataset(*two_pairs, streaming=streaming)
        drawn = np.concatenate([patch_ids(b)[0] for b in ds.tf_dataset(2, seed=3, indices=[1, 4, 8, 9, 12])])
        assert sorted(drawn) == sorted(set(drawn)) and set(drawn) <= {1, 4, 8, 9, 12} and len(drawn) == 4
        with pytest.raises(SR4RSError, match="larger than the number of patches"):
            ds.tf_dataset(6, indices=[1, 2, 3])


def test_read_gives_the_patches_of_given_indices(two_pairs):
    for streaming in (False, True):
        lr, hr = PatchesDataset(*two_pairs, streaming=streaming).read(np.array([9, 2]))
        assert lr.shape == (2, S, S, C) and hr.shape == (2, 4 * S, 4 * S, C)
        assert list(lr[:, 0, 0, 0] // 10) == [9, 2] and list((hr[:, 0, 0, 0] - 1000) // 10) == [9, 2]


def test_augmentation_turns_lr_and_hr_alike_over_the_8_transforms(tmp_path):
    rng = np.random.default_rng(0)
    n = 64
    lr = rng.integers(0, 1000, (n, S, S, C)).astype(np.int16)
    hr = np.repeat(np.repeat(lr, 4, axis=1), 4, axis=2)  # HR = LR x4: any mismatch would show
    lr_path = write_raster(str(tmp_path / "lr.tif"), lr.reshape(n * S, S, C))
    hr_path = write_raster(str(tmp_path / "hr.tif"), hr.reshape(n * 4 * S, 4 * S, C))
    batches = {}
    for streaming in (False, True):
        ds = PatchesDataset([lr_path], [hr_path], streaming=streaming)
        batches[streaming] = [(b["lr"].numpy(), b["hr"].numpy())
                              for b in ds.tf_dataset(8, seed=5, shuffle=False, augment=True)]
    seen = set()
    for (l_mem, h_mem), (l_str, h_str) in zip(batches[False], batches[True], strict=True):
        assert (l_mem == l_str).all() and (h_mem == h_str).all()  # same transforms in both modes
        assert (np.repeat(np.repeat(l_mem, 4, axis=1), 4, axis=2) == h_mem).all()
    for i, patch in enumerate(np.concatenate([b[0] for b in batches[False]])):
        variants = [np.rot90(lr[i], k) for k in range(4)]
        variants += [np.fliplr(v) for v in variants]
        seen.add(next(k for k, v in enumerate(variants) if (v == patch).all()))
    assert seen == set(range(8))
