"""Lazy frame reading and the bounded reservoir sample."""
from __future__ import annotations

import numpy as np
import pytest

from gapfit.data import read_frames
from gapfit.errors import InputError
from gapfit.stream import FrameSource, Reservoir
from conftest import DATA

FILES = [str(DATA / "Cu_emt_train.xyz"), str(DATA / "Cu_emt_test.xyz")]


def _same(a, b):
    assert a.info["gapfit_source"] == b.info["gapfit_source"]
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.cell[:], b.cell[:])
    assert a.get_potential_energy() == b.get_potential_energy()
    np.testing.assert_array_equal(a.get_forces(), b.get_forces())


def test_streamed_frames_equal_eager_frames():
    eager = read_frames(FILES)
    src = FrameSource(FILES)
    assert len(src) == len(eager)
    streamed = [a for c in src.chunks(7) for a in c]
    assert [len(c) for c in src.chunks(7)][:-1] == [7] * (len(eager) // 7 - (len(eager) % 7 == 0))
    for a, b in zip(streamed, eager):
        _same(a, b)
    pick = [len(eager) - 1, 0, 13, 13, 40]
    for a, k in zip(src.take(pick), sorted(set(pick))):
        _same(a, eager[k])


def test_frame_source_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        FrameSource([str(tmp_path / "missing.xyz")])
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(InputError, match="empty.xyz"):
        FrameSource([str(tmp_path / "empty.xyz")])
    with pytest.raises(IndexError):
        FrameSource(FILES).take([10 ** 6])


def test_reservoir_is_uniform_bounded_and_seeded():
    n, size, runs = 1000, 100, 400
    counts = np.zeros(n)
    sizes = [1, 50, 333, 7, 609]  # chunking must not matter
    for seed in range(runs):
        r = Reservoir(size, seed=seed)
        start = 0
        for s in sizes:
            r.add(np.arange(start, start + s))
            start += s
        kept = r.sample()
        assert len(kept) == size and len(np.unique(kept)) == size
        np.testing.assert_array_equal(kept, r.positions)
        counts[kept] += 1
    # each row is kept with probability size/n: binomial(runs, 0.1) counts, mean 40, sd 6
    expected = runs * size / n
    chi2 = np.sum((counts - expected) ** 2 / (expected * (1 - size / n)))
    assert chi2 < n + 5 * np.sqrt(2 * n)  # chi-square with ~n dof: mean n, sd sqrt(2n)
    assert abs(counts[:100].mean() - counts[-100:].mean()) < 4.0  # early and late rows alike
    a, b = Reservoir(10, seed=3), Reservoir(10, seed=3)
    for r in (a, b):
        r.add(np.arange(500).reshape(250, 2))
    np.testing.assert_array_equal(a.sample(), b.sample())
    small = Reservoir(10)
    small.add(np.arange(4))
    np.testing.assert_array_equal(small.sample(), np.arange(4))


def test_factors_merge_in_any_tree_order_to_the_serial_factor():
    from gapfit import sgp
    rng = np.random.default_rng(7)
    n_cols = 12
    chunks = [rng.standard_normal((m, n_cols)) for m in (40, 3, 25, 60, 5, 18, 30)]
    serial = sgp.qr_r(np.vstack(chunks))

    def signs_fixed(R):
        return R * np.sign(np.diag(R))[:, None]

    leaves = [sgp.qr_r(c)[:n_cols] if len(c) >= n_cols else c for c in chunks]
    # left fold, right fold and a balanced tree
    left = leaves[0]
    for f in leaves[1:]:
        left = sgp.merge_factors([left, f])
    right = leaves[-1]
    for f in leaves[-2::-1]:
        right = sgp.merge_factors([f, right])
    level = leaves
    while len(level) > 1:
        level = [sgp.merge_factors(level[i:i + 2]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    for R in (left, right, level[0]):
        np.testing.assert_allclose(signs_fixed(R), signs_fixed(serial), rtol=1e-10, atol=1e-10)
