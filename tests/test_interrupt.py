"""Ctrl-C during `gapfit fit`: one line, status 130, nothing lost, nothing left behind.

Each test starts a real `gapfit fit` subprocess (in a session of its own,
killed with its group at teardown by the ``spawn`` fixture), waits, by polling
with a deadline, for a moment of the fit, sends SIGINT there and checks the
outcome. bench/sigint_fit.py does the same at many random moments.
"""
from __future__ import annotations

import os
import signal
import sys

import pytest

from conftest import DATA, GAPFIT, wait_for

TRAIN = str(DATA / "Cu_emt_train.xyz")
FAST_FLAGS = ["--n-max", "3", "--l-max", "3", "--cutoff", "4.0", "--n-sparse", "60", "--no-progress",
              "--train-error-frames", "0"]
INTERRUPTED = "gapfit fit: interrupted"

# `gapfit fit` with featomic's ASE system adapter instrumented: the first time featomic asks for the
# positions of a training frame (a ctypes callback, inside descriptor computation), the callback
# creates MARKER and runs Python code until the SIGINT the test sends has come. Before the fix,
# the KeyboardInterrupt raised there was dropped by ctypes and the fit died of a FeatomicError
# ("failed to get the array shape ...") or went on as if Ctrl-C had never been pressed.
IN_CALLBACK = r"""
import os, sys, time
import featomic.systems.ase as fa
from gapfit import _interrupt
from gapfit.cli import main

marker = sys.argv[1]
positions = fa.AseSystem.positions

def instrumented(self):
    if self.size() > 1 and not os.path.exists(marker):
        open(marker, "w").close()
        deadline = time.monotonic() + 60
        while not _interrupt.requested() and time.monotonic() < deadline:
            pass
    return positions(self)

fa.AseSystem.positions = instrumented
sys.argv = ["gapfit"] + sys.argv[2:]
sys.exit(main())
"""


@pytest.fixture
def previous(tmp_path):
    """An output folder holding a previous model, its log and hygiene report: (folder, model path, snapshot)."""
    folder = tmp_path / "out"
    folder.mkdir()
    for name, content in [("m.npz", b"previous model \x00\x01"), ("m.npz.log", b"previous log\n"),
                          ("m.npz.hygiene.csv", b"rank,index\n")]:
        (folder / name).write_bytes(content)
    return folder, folder / "m.npz", _snapshot(folder)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _session_alive(sid: int) -> list:
    """Live (not zombie) processes of the session ``sid``."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def _interrupted_cleanly(proc, err_path, folder, before):
    rc = proc.wait(timeout=60)
    err = err_path.read_text()
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    lines = err.rstrip("\n").splitlines()
    assert lines[-1] == INTERRUPTED and lines.count(INTERRUPTED) == 1, err[-3000:]
    assert _snapshot(folder) == before  # previous model, log and report as they were; nothing added


def _log_says(err_path, text):
    return lambda: err_path.exists() and text in err_path.read_text()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_inside_featomic_callback(previous, tmp_path, spawn):
    folder, model, before = previous
    marker, err_path = tmp_path / "in_callback", tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = spawn([sys.executable, "-c", IN_CALLBACK, str(marker), "fit", TRAIN, "-o", str(model)] + FAST_FLAGS,
                     stderr=err)
    wait_for(marker.exists, "featomic's positions callback on a training frame", timeout_s=60, proc=proc)
    proc.send_signal(signal.SIGINT)
    _interrupted_cleanly(proc, err_path, folder, before)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_while_fitting(previous, tmp_path, spawn):
    """After the sparse points: descriptors with gradients, design rows, the solve."""
    folder, model, before = previous
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = spawn(GAPFIT + ["fit", TRAIN, "-o", str(model)] + FAST_FLAGS, stderr=err)
    wait_for(_log_says(err_path, "sparse points chosen"), "the sparse points", timeout_s=60, proc=proc)
    proc.send_signal(signal.SIGINT)
    _interrupted_cleanly(proc, err_path, folder, before)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_with_local_workers_stops_them_all(previous, tmp_path, spawn):
    """Ctrl-C in a terminal signals the whole process group, the Dask workers too."""
    folder, model, before = previous
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = spawn(GAPFIT + ["fit", TRAIN, "-o", str(model), "--workers", "2"] + FAST_FLAGS, stderr=err)
    wait_for(_log_says(err_path, "running on 2 local worker processes"), "the local cluster", timeout_s=60,
             proc=proc)
    assert len(_session_alive(proc.pid)) >= 3  # gapfit and its two workers, at least
    os.killpg(proc.pid, signal.SIGINT)
    _interrupted_cleanly(proc, err_path, folder, before)
    wait_for(lambda: not _session_alive(proc.pid), "every process of the fit to end", timeout_s=10)


HALF_BUILT = r"""
import os, signal, sys
from gapfit import _interrupt

class HalfBuilt:
    # like llvmlite's objects: the interrupt came before the attribute the finaliser needs was set
    def __del__(self):
        self._handle.close()

interrupt = sys.argv[1] == "interrupt"
with _interrupt.handling_sigint(process_exit=True):
    try:
        obj = HalfBuilt()
        if interrupt:
            os.kill(os.getpid(), signal.SIGINT)
            _interrupt.check()
        del obj
    except KeyboardInterrupt:
        _interrupt.reported()
        del obj
        print("interrupted", file=sys.stderr)
"""


@pytest.mark.parametrize("interrupt", [True, False])
def test_finalisers_of_objects_an_interrupt_cut_short_stay_quiet(tmp_path, interrupt):
    """After Ctrl-C, a finaliser failing on an object whose construction the interrupt cut short (numba's
    compiler in a fresh venv) prints nothing more; without an interrupt the same failure is still reported."""
    import subprocess
    script = tmp_path / "half_built.py"
    script.write_text(HALF_BUILT)
    r = subprocess.run([sys.executable, str(script), "interrupt" if interrupt else "none"], capture_output=True,
                       text=True, timeout=60)
    if interrupt:
        assert r.stderr.strip() == "interrupted"
    else:
        assert "Exception ignored" in r.stderr and "_handle" in r.stderr
