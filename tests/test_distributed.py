"""The same fit on a 2-worker local Dask cluster, and what a dying worker does.

The clusters are started per module (fit tests) or per test (the killed
worker) and closed in teardown, with their worker processes.
"""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import gapfit
from gapfit.errors import WorkerError
from conftest import DATA

distributed = pytest.importorskip("distributed")
TRAIN = str(DATA / "Cu_emt_train.xyz")
# several blocks on a small set, so that both workers and the merge tree are used
SETTINGS = dict(seed=3, atoms_per_block=250, n_sparse=60)


def _cluster(**config):
    import dask
    with dask.config.set(config):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=50)
    return cluster, distributed.Client(cluster)


@pytest.fixture(scope="module")
def client():
    cluster, c = _cluster()
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def test_distributed_fit_equals_serial_fit(client):
    from threadpoolctl import threadpool_limits
    # the workers run one BLAS thread each; so does the serial fit here, so that both do the
    # same floating-point operations (BLAS results depend on the thread count in the last bits)
    with threadpool_limits(1):
        serial = gapfit.GAP(**SETTINGS).fit(TRAIN)
    dist = gapfit.GAP(**SETTINGS).fit(TRAIN, client=client)
    assert dist.training_summary_["workers"] == 2
    assert sum(len(a) for a in gapfit.data.read_frames([TRAIN])) / SETTINGS["atoms_per_block"] >= 3  # blocks
    for t1, t2 in zip(serial.terms_, dist.terms_):
        for k, v in t1.fitted_arrays().items():
            np.testing.assert_array_equal(t2.fitted_arrays()[k], v)
    rel = np.max(np.abs(dist.alpha_ - serial.alpha_)) / np.max(np.abs(serial.alpha_))
    assert rel <= 1e-8
    for key, value in serial.calibration_.items():
        assert dist.calibration_[key] == (pytest.approx(value, rel=1e-8) if isinstance(value, float) else value)
    assert dist.e0_ == serial.e0_
    assert [f.index for f in dist.hygiene_.frames] == [f.index for f in serial.hygiene_.frames]
    # frames in memory are sent to the workers block by block: the same model again
    frames = gapfit.data.read_frames([TRAIN])
    again = gapfit.GAP(**SETTINGS).fit(frames, client=client)
    np.testing.assert_allclose(again.alpha_, dist.alpha_, rtol=0, atol=1e-8 * np.max(np.abs(dist.alpha_)))
    # with the default BLAS threads the serial fit differs only in rounding: predictions agree closely
    threaded = gapfit.GAP(**SETTINGS).fit(TRAIN)
    test = gapfit.data.read_frames([str(DATA / "Cu_emt_test.xyz")])[:5]
    for p, q in zip(threaded.predict(test), dist.predict(test)):
        assert abs(p.energy - q.energy) < 1e-8 * len(p.forces)
        np.testing.assert_allclose(p.forces, q.forces, atol=1e-7)


def test_cli_workers_fit_equals_python_distributed_fit(client, tmp_path):
    from gapfit.cli import main
    out = tmp_path / "m.npz"
    assert main(["fit", TRAIN, "-o", str(out), "--workers", "2", "--atoms-per-block", "250", "--n-sparse", "60",
                 "--seed", "3", "--no-progress", "--train-error-frames", "0"]) == 0
    assert "running on 2 local worker processes" in (tmp_path / "m.npz.log").read_text()
    cli = gapfit.load(str(out))
    dist = gapfit.GAP(**SETTINGS).fit(TRAIN, client=client)
    assert np.max(np.abs(cli.alpha_ - dist.alpha_)) <= 1e-8 * np.max(np.abs(dist.alpha_))


def test_bad_frame_on_a_worker_is_the_same_clear_error(client, tmp_path):
    lines = open(TRAIN).read().splitlines(keepends=True)
    bad = tmp_path / "bad.xyz"
    frames, k = [], 0
    while k < len(lines):
        n = int(lines[k])
        frames.append(lines[k:k + n + 2])
        k += n + 2
    frames[30][1] = frames[30][1].replace("energy=", "energy=nan ignored=")
    bad.write_text("".join("".join(f) for f in frames))
    with pytest.raises(gapfit.errors.InputError, match=r"bad.xyz, frame 30.*energy"):
        gapfit.GAP(**SETTINGS).fit(str(bad), client=client)


class _KillOnDesignRows:
    """A worker plugin that kills its worker's process (as the kernel's OOM killer would) when a
    design-rows task starts."""

    name = "gapfit-test-kill"

    def setup(self, worker):
        pass

    def teardown(self, worker):
        pass

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith("gapfit-design-rows-") and "-block-" in str(key):
            os.kill(os.getpid(), signal.SIGKILL)


def test_killed_worker_gives_one_clear_error():
    from distributed.diagnostics.plugin import WorkerPlugin

    class Kill(_KillOnDesignRows, WorkerPlugin):
        pass
    # a task that killed one worker is not retried elsewhere (allowed-failures 0): the error is immediate
    cluster, c = _cluster(**{"distributed.scheduler.allowed-failures": 0})
    try:
        c.register_plugin(Kill(), name=Kill.name)
        with pytest.raises(WorkerError, match=r"worker died while computing design rows of frames \d+\.\.\d+ of "
                                              r".*Cu_emt_train.xyz"):
            gapfit.GAP(**SETTINGS).fit(TRAIN, client=c)
    finally:
        c.close()
        cluster.close()
