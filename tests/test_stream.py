"""Lazy frame reading and the bounded reservoir sample."""
from __future__ import annotations

import numpy as np
import pytest

from gapfit.data import read_frames
from gapfit.errors import InputError
from gapfit.stream import FrameSource, MemorySource, PrioritySample, as_source, frame_priorities
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
    # a range that crosses from the first file into the second
    n0 = src.counts[0]
    for a, k in zip(src.read(n0 - 2, n0 + 3), range(n0 - 2, n0 + 3)):
        _same(a, eager[k])
    # what a worker gets: paths and counts, read without counting again
    import pickle
    part = pickle.loads(pickle.dumps(src.part(n0 - 2, n0 + 3)))
    assert part.counts == src.counts
    for a, k in zip(part.read(n0 - 2, n0 + 3), range(n0 - 2, n0 + 3)):
        _same(a, eager[k])
    # frames in memory: the same interface, and a part keeps the global numbers
    mem = as_source(eager)
    assert isinstance(mem, MemorySource) and len(mem) == len(eager)
    held = mem.part(5, 9)
    assert len(held) == len(eager) and len(held.frames) == 4
    assert [a.info["gapfit_source"] for a in held.read(6, 8)] == [eager[k].info["gapfit_source"] for k in (6, 7)]
    with pytest.raises(IndexError):
        list(held.read(0, 3))
    assert isinstance(as_source(FILES), FrameSource)


def test_frame_source_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        FrameSource([str(tmp_path / "missing.xyz")])
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(InputError, match="empty.xyz"):
        FrameSource([str(tmp_path / "empty.xyz")])
    with pytest.raises(IndexError):
        FrameSource(FILES).take([10 ** 6])


def _offer(sample, frames, seed):
    """Offer frames {frame index: n rows}; each row's value is its global position (frame, row)."""
    for f, n in frames:
        rows = (np.int64(f) << 32) + np.arange(n)
        sample.add(rows, frame_priorities(seed, f, n), rows)


def test_priority_sample_is_uniform_bounded_and_mergeable():
    n_frames, per_frame, size, runs = 100, 10, 100, 400
    n = n_frames * per_frame
    counts = np.zeros(n)
    for seed in range(runs):
        s = PrioritySample(size)
        _offer(s, [(f, per_frame) for f in range(n_frames)], seed)
        kept = s.sample()
        assert len(kept) == size and len(np.unique(kept)) == size and s.n_seen == n
        assert np.all(np.diff(kept) > 0)  # in order of position, whatever the arrival order
        counts[(kept >> 32) * per_frame + (kept & 0xFFFFFFFF)] += 1
    # each row is kept with probability size/n: binomial(runs, 0.1) counts, mean 40, sd 6
    expected = runs * size / n
    chi2 = np.sum((counts - expected) ** 2 / (expected * (1 - size / n)))
    assert chi2 < n + 5 * np.sqrt(2 * n)  # chi-square with ~n dof: mean n, sd sqrt(2n)
    assert abs(counts[:100].mean() - counts[-100:].mean()) < 4.0  # early and late rows alike

    # disjoint parts sampled apart, in any order and chunking, merge into the sample of the whole
    frames = [(f, 3 + f % 7) for f in range(60)]
    whole = PrioritySample(25)
    _offer(whole, frames, 11)
    parts = [PrioritySample(25) for _ in range(3)]
    for k, fr in enumerate(frames[::-1]):
        _offer(parts[k % 3], [fr], 11)
    merged = parts[2].merge(parts[0]).merge(parts[1])
    np.testing.assert_array_equal(merged.sample(), whole.sample())
    assert merged.n_seen == whole.n_seen == sum(m for _, m in frames)
    small = PrioritySample(10)
    _offer(small, [(0, 4)], 0)
    np.testing.assert_array_equal(small.sample(), np.arange(4))
    everything = PrioritySample(None)
    _offer(everything, frames, 0)
    assert len(everything.sample()) == sum(m for _, m in frames)


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


def test_streamed_merge_tree_is_the_fixed_tree():
    # one process merges blocks as they finish, a cluster level by level: the same tree, so the same rounding
    from gapfit.executors import _StreamingTree, tree_reduce
    for n in range(1, 40):
        items = [str(i) for i in range(n)]
        tree = _StreamingTree(lambda a, b: f"({a} {b})")
        for it in items:
            tree.add(it)
            assert len(tree.stack) <= n.bit_length()  # memory: O(log n) partial results
        assert tree.result() == tree_reduce(items, lambda a, b: f"({a} {b})")


def test_fit_from_files_equals_fit_from_frames_and_uses_every_frame_for_e0(tmp_path):
    import gapfit
    frames = read_frames([FILES[0]])
    settings = dict(seed=2, n_sparse=40, hygiene=False)
    streamed = gapfit.GAP(**settings).fit(FILES[0])
    eager = gapfit.GAP(**settings).fit(frames)
    assert streamed.calibration_ is not None  # frames were held out for the calibration
    np.testing.assert_array_equal(streamed.alpha_, eager.alpha_)
    # e0 and the default δ come from every frame, held-out ones included, as prepare() has them
    ref = gapfit.GAP(**settings)
    ref.prepare(frames)
    assert streamed.e0_ == pytest.approx(ref.e0_, rel=1e-12)
    assert [t.delta_eV for t in streamed.terms_] == pytest.approx([t.delta_eV for t in ref.terms_], rel=1e-12)
    # check_data leaves a fitted model fitted
    streamed.check_data(FILES[0])
    streamed.predict(frames[:1])
