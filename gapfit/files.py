"""Writing outputs so that a crash, a kill or a second process never leaves a mess.

- :class:`StagedFile`: a file written under a temporary name in its target's
  folder (``.tmp-PID-XXXX-NAME``) and renamed over the target only by
  :meth:`~StagedFile.commit`. Until then the old target is untouched; a
  killed process leaves only its temporary file, which the next write to the
  same target removes (its process is gone).
- :func:`atomic_write`: the one-shot form of the same.
- :class:`TargetLock`: an advisory lock (``flock``) on a target, so a second
  writer is refused with a clear message instead of interleaving with the
  first. The kernel drops the lock when its process dies, even by SIGKILL.

OS failures (folder not writable, target a folder, lock held) are raised as
:class:`gapfit.errors.OutputError` naming the path and what to do.
"""
from __future__ import annotations

import os
import re
import stat
import tempfile
from typing import Callable, Optional

from .errors import OutputError

_TMP_PREFIX = ".tmp-"


def _folder_of(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: str) -> list:
    """Delete temporary files of ``path`` left by processes that no longer run; returns their names."""
    folder, name = _folder_of(path), os.path.basename(path)
    pattern = re.compile(re.escape(_TMP_PREFIX) + r"(\d+)-[A-Za-z0-9_]+-" + re.escape(name) + "$")
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(folder, entry))
                removed.append(entry)
            except OSError:
                pass
    return removed


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _replace_refused(path: str) -> Optional[str]:
    """Why renaming over ``path`` will fail although its folder is writable, when that can be told now.

    In a folder with the sticky bit (as /tmp), only the owner of a file (or
    of the folder) may replace it; finding out at the final rename would
    waste the whole fit.
    """
    try:
        st_target = os.stat(path)
        st_folder = os.stat(_folder_of(path))
    except OSError:
        return None
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    if uid in (None, 0) or not (st_folder.st_mode & stat.S_ISVTX):
        return None
    if st_target.st_uid != uid and st_folder.st_uid != uid:
        return "it belongs to another user, in a folder with the sticky bit set"
    return None


def check_output_path(path: str) -> None:
    """Raise :class:`OutputError` when a file cannot be written at ``path`` (checked before any work).

    A folder in its place, a missing or read-only folder, or a file there that
    renaming cannot replace; writing nothing.
    """
    folder = _folder_of(path)
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a folder, cannot write a file there; choose another output name")
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write in folder {folder} (permission denied); "
                          "choose a writable output location")
    refused = _replace_refused(path)
    if refused:
        raise OutputError(f"{path}: cannot replace it ({refused}); remove it first or choose another output")


class StagedFile:
    """A new version of ``path`` written beside it and put in place by :meth:`commit`.

    ``tmp`` is the temporary path to write (binary or text, by any means);
    :meth:`commit` flushes it to disk and renames it over ``path``;
    :meth:`discard` deletes it. Usable as a context manager that discards
    unless committed.
    """

    def __init__(self, path: str):
        self.path = path
        folder = _folder_of(path)
        check_output_path(path)
        remove_stale_temporaries(path)
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-",
                                            suffix=f"-{os.path.basename(path)}", dir=folder)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write in folder {folder} ({_os_reason(exc)}); "
                              "choose a writable output location") from None
        os.close(fd)
        self.done = False
        self._synced = False

    def write(self, write: Callable) -> None:
        """Call ``write(fileobj)`` on the temporary file (binary), flushed to disk."""
        try:
            with open(self.tmp, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            self._synced = True
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write it ({_os_reason(exc)}); is the disk full?") from None

    def commit(self) -> None:
        """Flush the temporary file to disk and rename it over the target."""
        try:
            if not self._synced:  # written by other means (a log handler): flush it to disk now
                fd = os.open(self.tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            # mkstemp makes the file private; give it the permissions a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)
            os.replace(self.tmp, self.path)
        except OSError as exc:
            kept = self._keep_aside()
            raise OutputError(f"{self.path}: cannot replace it ({_os_reason(exc)}); "
                              + (f"the new file was kept as {kept}" if kept else "the new file was not kept")
                              ) from None
        self.done = True

    def _keep_aside(self) -> Optional[str]:
        """Rename the temporary file to a visible name after a failed commit, so nothing is lost."""
        aside = f"{self.path}.new"
        try:
            os.replace(self.tmp, aside)
            return aside
        except OSError:
            return self.tmp if os.path.exists(self.tmp) else None

    def discard(self) -> None:
        """Delete the temporary file (idempotent)."""
        if not self.done and os.path.exists(self.tmp):
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
        self.done = True

    def __enter__(self) -> "StagedFile":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def atomic_write(path: str, write: Callable) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it to ``path``."""
    with StagedFile(path) as staged:
        staged.write(write)
        staged.commit()


class TargetLock:
    """Exclusive advisory lock for writing ``path`` (a file or a run folder).

    The lock file is ``.NAME.lock`` beside the target (inside it for a
    folder). A second holder is refused at once with :class:`OutputError`
    naming the process that holds it.
    """

    def __init__(self, path: str, *, inside: bool = False):
        self.path = path
        if inside:
            self.lock_path = os.path.join(path, ".gapfit.lock")
        else:
            self.lock_path = os.path.join(_folder_of(path), f".{os.path.basename(path)}.lock")
        self._fd: Optional[int] = None

    def acquire(self) -> "TargetLock":
        import fcntl
        folder = os.path.dirname(self.lock_path)
        if not os.path.isdir(folder):
            raise OutputError(f"{self.path}: folder {folder} does not exist; create it first")
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"{self.path}: cannot write in folder {os.path.dirname(self.lock_path)} "
                                  f"({_os_reason(exc)}); choose a writable output location") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise OutputError(f"{self.path}: another gapfit run (pid {holder}) is writing it; wait for that "
                                  "run to end or choose another output") from None
            # the previous holder may have removed the file between our open and lock
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.lock_path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "TargetLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
