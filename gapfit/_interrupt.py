"""Ctrl-C for the command line: one KeyboardInterrupt, raised only where Python can unwind it.

Python runs a signal handler in the main thread between two bytecodes, wherever
they are, and that includes the Python callbacks a compiled library calls.
featomic and metatensor call back into Python through ctypes for every system
and every array (its shape, its data, its destruction), and they catch only
``Exception``: a KeyboardInterrupt raised in such a callback is printed by
ctypes ("Exception ignored on calling ctypes callback function") and dropped,
and the library gets an undefined return value. It then fails with an
unrelated error (``FeatomicError: internal featomic error: failed to get the
array shape ... can not find gradients with respect to 'cell' in this block``)
or, when the garbage reads as success, carries on as if Ctrl-C had never been
pressed.

:func:`handling_sigint` installs a SIGINT handler that raises
KeyboardInterrupt only at a safe point:

- not while a frame of such a library (:data:`CALLBACK_PACKAGES`) is on the
  main thread's stack: the interrupt is kept and delivered again every
  :data:`RETRY_S` seconds until it lands outside;
- not inside a :func:`deferred` region (outputs being set up or torn down, a
  local cluster starting): it is raised when the region ends;
- once only: a second Ctrl-C while the first unwinds is noted, not raised, so
  the clean-up runs to its end;
- never after :func:`point_of_no_return` (the outputs are being committed).

A KeyboardInterrupt that still gets dropped (a finaliser, another library's
callback) reaches ``sys.unraisablehook``, which arms it again instead of
printing it. :func:`requested` tells whether Ctrl-C came, so that an error
raised on the way out is reported as the interrupt it is.

Worker processes started inside :func:`sigint_blocked` (the local Dask
cluster of ``--workers N``) inherit a blocked SIGINT: Ctrl-C in a terminal
signals the whole process group, and they leave stopping to this process,
which closes the cluster.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator, Optional

#: Packages whose Python code runs as callbacks of compiled code (ctypes): an
#: exception raised there is dropped and the library handed an undefined status.
CALLBACK_PACKAGES = frozenset({"featomic", "metatensor"})

#: Seconds between deliveries of an interrupt that came at an unsafe point.
RETRY_S = 0.02


class _State:
    def __init__(self) -> None:
        self.installed = False
        self.requested = False  # Ctrl-C came
        self.raised = False  # its KeyboardInterrupt was raised
        self.final = False  # past the point of no return, or already reported: ignore Ctrl-C
        self.depth = 0  # open deferred() regions
        self.timer: Optional[threading.Timer] = None
        self.main_id: Optional[int] = None


_state = _State()


def requested() -> bool:
    """True once Ctrl-C came during :func:`handling_sigint`, before the point of no return."""
    return _state.requested


def _in_callback_package(frame) -> bool:
    while frame is not None:
        name = frame.f_globals.get("__name__") or ""
        if name.partition(".")[0] in CALLBACK_PACKAGES:
            return True
        frame = frame.f_back
    return False


def _deliver_later() -> None:
    """Send SIGINT to the main thread again in RETRY_S seconds (one timer at a time)."""
    s = _state
    if s.timer is not None and s.timer.is_alive():
        return

    def fire() -> None:
        if s.installed and s.requested and not (s.raised or s.final) and s.main_id is not None:
            signal.pthread_kill(s.main_id, signal.SIGINT)

    s.timer = threading.Timer(RETRY_S, fire)
    s.timer.daemon = True
    s.timer.start()


def _handler(signum, frame) -> None:
    s = _state
    if s.final or s.raised:
        return
    s.requested = True
    if s.depth:
        return  # deferred() raises it when the region ends
    if _in_callback_package(frame):
        _deliver_later()
        return
    s.raised = True
    raise KeyboardInterrupt


def _unraisable(hook):
    def unraisable(u) -> None:
        s = _state
        if s.installed and isinstance(u.exc_value, KeyboardInterrupt):
            # ours, dropped by a finaliser or a callback: raise it again at a safe point
            if not s.final:
                s.raised = False
                _deliver_later()
            return
        if s.installed and s.requested:
            # the interrupt may have cut short an object's construction (numba's compiler, llvmlite's
            # PipelineTuningOptions, measured in a fresh venv), whose finaliser then fails when it is
            # collected; that is the interrupt's doing, and the one line "interrupted" already says so
            return
        hook(u)
    return unraisable


@contextlib.contextmanager
def handling_sigint(*, process_exit: bool = False) -> Iterator[None]:
    """Ctrl-C handled as the module docstring says, for the length of the block.

    ``process_exit``: the block is the whole program (the ``gapfit`` command);
    Ctrl-C is ignored after it, while the process exits (its status is the
    block's). Otherwise (``main([...])`` called from Python) the previous
    handler is restored. Outside the main thread this does nothing: signals
    are handled there only.
    """
    s = _state
    if threading.current_thread() is not threading.main_thread() or s.installed:
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    previous_hook = sys.unraisablehook
    s.__init__()
    s.main_id = threading.get_ident()
    s.installed = True
    signal.signal(signal.SIGINT, _handler)
    sys.unraisablehook = _unraisable(previous_hook)
    try:
        yield
    finally:
        s.final = True
        if s.timer is not None:
            s.timer.cancel()
        if process_exit:
            # ignored by the kernel from here on: the interpreter's shutdown puts back the default action
            # of a signal handled in Python, and a late Ctrl-C would then kill the process (status -2)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
            sys.unraisablehook = previous_hook
            s.installed = False


def reported() -> None:
    """The interrupt has been reported: ignore Ctrl-C from now on."""
    _state.final = True


def check() -> None:
    """Raise KeyboardInterrupt here if Ctrl-C came and was not raised yet."""
    s = _state
    if s.installed and s.requested and not (s.raised or s.final):
        s.raised = True
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """No KeyboardInterrupt inside the block; one that came meanwhile is raised when it ends.

    (When the block ends by another exception, that one goes on, and the
    interrupt stays :func:`requested`.)
    """
    s = _state
    s.depth += 1
    try:
        yield
    finally:
        s.depth -= 1
    if s.depth == 0:
        check()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Inside a :func:`deferred` region, a block where Ctrl-C interrupts again (the work between set-up and
    tear-down); an interrupt that came before it is raised on entry."""
    s = _state
    saved, s.depth = s.depth, 0
    try:
        check()
        yield
    finally:
        s.depth = saved


def point_of_no_return() -> None:
    """Raise KeyboardInterrupt if Ctrl-C came; else ignore Ctrl-C from now on: the outputs are committed next."""
    s = _state
    check()
    if s.installed:
        s.final = True


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread, and so in the threads and processes started in the block.

    A signal that comes meanwhile stays pending and is delivered when the block ends.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # multiprocessing's resource tracker blocks SIGINT while it starts and then *unblocks* it in the
    # thread that started it (on first use, e.g. by a cluster's first worker): have it running already
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
