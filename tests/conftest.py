"""Shared fixtures: small fits on the project's own EMT Cu data (fast settings)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gapfit  # noqa: I001  first: it sets OpenBLAS's thread timeout before numpy loads (docs/index.md)
import ase.io
import pytest
from hypothesis import HealthCheck, settings

# Fuzzing: "ci" (default) is derandomised, so every run of the suite draws the
# same examples and cannot fail at random; "long" explores at random, for
# local runs (HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py).
# Timing-based health checks are off: a loaded CI machine must not fail a test.
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True, database=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
SHARED = ROOT.parent / "shared" / "data"

# Small SOAP for speed in tests; the physics does not depend on the size.
FAST = dict(n_max=4, l_max=4, cutoff=4.5, cutoff_transition_width=1.0)


@pytest.fixture(scope="session")
def cu_train():
    return ase.io.read(DATA / "Cu_emt_train.xyz", ":")


@pytest.fixture(scope="session")
def cu_test():
    return ase.io.read(DATA / "Cu_emt_test.xyz", ":")


@pytest.fixture(scope="session")
def cu_model(cu_train):
    """featomic model on the shipped data (all environments as sparse points)."""
    return gapfit.GAP(**FAST, n_sparse=300, seed=1).fit(cu_train)


@pytest.fixture(scope="session")
def cu_model_dscribe(cu_train):
    """dscribe (analytic mode) model on a few frames."""
    small = [a for a in cu_train if len(a) <= 8][:8] + [cu_train[1]]
    return gapfit.GAP(**FAST, backend="dscribe", dscribe_mode="analytic", n_sparse=100).fit(small)


@pytest.fixture(scope="session")
def cu_model_dscribe_smooth(cu_train):
    """dscribe smooth (weighting, numerical derivatives) model on a few frames."""
    small = [a for a in cu_train if len(a) <= 8][:6]
    return gapfit.GAP(**FAST, backend="dscribe", dscribe_mode="smooth", n_sparse=60).fit(small)


BACKEND_MODELS = ["cu_model", "cu_model_dscribe", "cu_model_dscribe_smooth"]


def shared_file(*parts) -> Path:
    """A file under ../shared/data, or skip the test when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (../shared is not beside this checkout)")
    return p


#: The gapfit command line as a subprocess, independent of the console script.
GAPFIT = [sys.executable, "-m", "gapfit.cli"]


@pytest.fixture
def spawn():
    """Start subprocesses that are killed, with their whole process group, at teardown, pass or fail."""
    procs = []

    def start(cmd, **kwargs):
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=60)


def wait_for(condition, what: str, timeout_s: float = 240.0, proc=None):
    """Poll ``condition()`` until true; fail naming ``what`` at the deadline or if ``proc`` died first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            if condition():
                return
            raise AssertionError(f"process exited ({proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
