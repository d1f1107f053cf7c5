"""Ctrl-C at random moments of `gapfit fit`: does every interrupt end cleanly?

Reproduce (from the repository root; about 6 minutes per run of 20 tries on 2 cores):

    python bench/sigint_fit.py                      # 20 tries, one process
    python bench/sigint_fit.py --workers 2          # 20 tries, a local Dask cluster of 2 workers
    python bench/sigint_fit.py --n 50 --seed 3 --target main

Each try runs

    gapfit fit data/Cu_emt_train.xyz -o TRY/m.npz --no-progress [--workers N]

in a session of its own and sends SIGINT at one moment: to the whole process
group by default, as Ctrl-C in a terminal does (``--target main``: to the
gapfit process only). The moments are seeded and spread evenly (one drawn at
random in each of N equal slices) from ``--t-min`` (0.3 s) to
``--end-fraction`` (0.95) of the length of an uninterrupted fit, measured
first (the shortest of two). Even tries start with the uninterrupted fit's
model, log and hygiene report in the output folder (they must come out byte
for byte the same); odd tries start from an empty folder (it must stay
empty).

For each try the table shows: the exit status; whether stderr ends with the
one line ``gapfit fit: interrupted``, once, with no ``Traceback`` and no line
that is not one of gapfit's own log records (``stderr``); whether the output
folder holds exactly what it held before, nothing added (no temporary, lock,
log or report file) and nothing changed (``folder``); how many processes of
the try's session were still alive 5 s after gapfit exited (``left``); and
how long gapfit took to exit after the signal. A signal that comes after the
fit has started committing its outputs is too late to undo them: gapfit then
finishes (status 0, a complete new model: ``late``); on a loaded machine a
fit can also end before its moment (``ended first``, no signal sent). Neither
is a failure if nothing else is wrong. Exit status 1 if any try failed.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
INTERRUPTED = "gapfit fit: interrupted"
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) ")


def gapfit_exe() -> list:
    exe = Path(sys.executable).with_name("gapfit")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gapfit.cli"]


def snapshot(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def session_members(sid: int) -> list:
    """(pid, state, command) of the live processes whose session is ``sid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) != sid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        out.append((int(entry), fields[0], cmd[:100]))
    return out


def normalise(line: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "#", line)


def run_fit(cmd, out_dir: Path, t_signal, target: str, timeout_s: float, io_dir: Path):
    """Run one fit; SIGINT at t_signal seconds (None: no signal). Returns a dict of what happened."""
    err_path = io_dir / "stderr.txt"
    with open(err_path, "wb") as err, open(os.devnull, "wb") as devnull:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=devnull, stderr=err, start_new_session=True, cwd=io_dir)
        sent_at = sent_wall = None
        try:
            if t_signal is not None:
                while proc.poll() is None and time.monotonic() - t0 < t_signal:
                    time.sleep(min(0.01, max(0.0, t_signal - (time.monotonic() - t0))))
                if proc.poll() is None:
                    sent_at, sent_wall = time.monotonic() - t0, time.time()
                    if target == "group":
                        os.killpg(proc.pid, signal.SIGINT)
                    else:
                        os.kill(proc.pid, signal.SIGINT)
            try:
                rc = proc.wait(timeout=timeout_s)
                hung = False
            except subprocess.TimeoutExpired:
                hung = True
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
            t_exit = time.monotonic() - t0
            deadline = time.monotonic() + 5.0
            left = session_members(proc.pid)
            while left and time.monotonic() < deadline:
                time.sleep(0.1)
                left = session_members(proc.pid)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever of the session survived
            except (ProcessLookupError, PermissionError):
                pass
    return {"rc": rc, "hung": hung, "stderr": err_path.read_text(errors="replace"), "t_exit": t_exit,
            "sent_at": sent_at, "sent_wall": sent_wall, "left": left}


def wrote_time(log_path: Path):
    """Wall-clock time of the "wrote MODEL and its log" line of a fit's log, or None."""
    import datetime
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if " INFO wrote " in line:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    return None


def judge_stderr(text: str, known: set) -> tuple:
    """(ok, why) for the stderr of an interrupted fit."""
    lines = text.rstrip("\n").splitlines()
    if "Traceback" in text:
        return False, "traceback"
    if not lines or lines[-1] != INTERRUPTED:
        return False, f"last line {lines[-1]!r}" if lines else "empty"
    if sum(line == INTERRUPTED for line in lines) != 1:
        return False, "interrupted line repeated"
    stray = [line for line in lines[:-1] if not LOG_RECORD.match(line) and normalise(line) not in known]
    if stray:
        return False, f"{len(stray)} stray line(s), first {stray[0][:60]!r}"
    return True, ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="number of tries (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0, help="--workers N for gapfit (default: one process)")
    ap.add_argument("--data", default="data/Cu_emt_train.xyz")
    ap.add_argument("--target", choices=["group", "main"], default="group",
                    help="send SIGINT to the process group (as Ctrl-C in a terminal; default) or the main process")
    ap.add_argument("--t-min", type=float, default=0.3, help="earliest moment, s (default 0.3)")
    ap.add_argument("--end-fraction", type=float, default=0.95,
                    help="latest moment as a fraction of the uninterrupted fit's wall time (default 0.95)")
    ap.add_argument("--reference-runs", type=int, default=2, help="uninterrupted fits timed first (default 2)")
    ap.add_argument("--timeout", type=float, default=180.0, help="s to wait for exit after the signal")
    ap.add_argument("--gapfit", help="the command that runs gapfit, split on spaces (default: the venv's gapfit)")
    ap.add_argument("--keep", help="keep the tries' folders here (default: a temporary folder, removed)")
    ap.add_argument("extra", nargs="*", help="further gapfit fit flags (after --)")
    opts = ap.parse_args()

    work = Path(opts.keep) if opts.keep else Path(tempfile.mkdtemp(prefix="sigint_fit-"))
    work.mkdir(parents=True, exist_ok=True)
    flags = ["--no-progress"] + (["--workers", str(opts.workers)] if opts.workers else []) + opts.extra

    def cmd_for(out: Path) -> list:
        data = str((ROOT / opts.data).resolve()) if not os.path.isabs(opts.data) else opts.data
        exe = opts.gapfit.split() if opts.gapfit else gapfit_exe()
        return exe + ["fit", data, "-o", str(out / "m.npz")] + flags

    shown = " ".join(["gapfit", "fit", opts.data, "-o", "TRY/m.npz"] + flags)
    print(f"command: {shown}")
    print(f"SIGINT to: {'the process group (as Ctrl-C)' if opts.target == 'group' else 'the gapfit process'}; "
          f"seed {opts.seed}; {opts.n} tries")

    ref = work / "reference"
    ref.mkdir(exist_ok=True)
    walls = []
    for _ in range(opts.reference_runs):  # the shortest: a loaded machine makes some runs slower
        r = run_fit(cmd_for(ref), ref, None, opts.target, 3600.0, work)
        if r["rc"] != 0:
            print(r["stderr"][-3000:])
            print(f"the uninterrupted fit failed (status {r['rc']})")
            return 2
        walls.append(r["t_exit"])
    length = min(walls)
    known = {normalise(line) for line in r["stderr"].splitlines()}
    print(f"uninterrupted fit: {length:.1f} s (shortest of {', '.join(f'{w:.1f}' for w in walls)} s), "
          f"wrote {sorted(os.listdir(ref))}")

    rng = np.random.default_rng(opts.seed)
    t_end = opts.end_fraction * length
    edges = np.linspace(opts.t_min, t_end, opts.n + 1)
    moments = [float(rng.uniform(lo, hi)) for lo, hi in zip(edges[:-1], edges[1:])]

    header = (f"{'try':>3} {'start':>8} {'SIGINT s':>8} {'rc':>4} {'stderr':>6} {'folder':>6} {'left':>4} "
              f"{'exit s':>6}  verdict")
    print(header)
    print("-" * len(header))
    failures = 0
    counts = {"interrupted": 0, "late": 0, "ended first": 0, "FAIL": 0}
    for k, t in enumerate(moments):
        out = work / f"try{k:02d}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        pre = k % 2 == 0
        if pre:
            for name in os.listdir(ref):
                shutil.copy2(ref / name, out / name)
        before = snapshot(out)
        r = run_fit(cmd_for(out), out, t, opts.target, opts.timeout, work)
        after = snapshot(out)
        notes = []
        folder_ok = after == before
        if not folder_ok:
            added = sorted(set(after) - set(before))
            changed = sorted(n for n in before if after.get(n) != before[n])
            notes.append(f"added {added} changed {changed}")
        left = [p for p in r["left"] if p[1] != "Z"]
        zombies = [p for p in r["left"] if p[1] == "Z"]
        if left:
            notes.append(f"alive: {[(p, c[:40]) for p, _, c in left]}")
        if zombies:
            notes.append(f"{len(zombies)} zombie(s)")
        if r["hung"]:
            notes.append(f"no exit {opts.timeout:.0f} s after SIGINT: killed")
        if r["rc"] == 0:
            # no signal (the fit ended first), or one after the outputs were being committed: a complete
            # new model, nothing else
            ok_err = "Traceback" not in r["stderr"]
            leftovers = [n for n in after if n.startswith(".") or n.endswith(".lock")]
            ok = ok_err and not leftovers and not left and {"m.npz", "m.npz.log"} <= set(after)
            verdict = ("late" if r["sent_at"] is not None else "ended first") if ok else "FAIL"
            err_col, folder_col = ("ok" if ok_err else "BAD"), ("new" if not leftovers else "BAD")
            notes = [n for n in notes if not n.startswith("added")] + ([f"leftovers {leftovers}"] if leftovers else [])
            wrote = wrote_time(out / "m.npz.log")
            if r["sent_wall"] is not None and wrote is not None:
                notes.append(f"SIGINT {wrote - r['sent_wall']:.2f} s before the log's 'wrote' line, which follows "
                             "the commit")
        else:
            ok_err, why = judge_stderr(r["stderr"], known)
            if not ok_err:
                notes.insert(0, why)
            ok = r["rc"] == 130 and ok_err and folder_ok and not left and not r["hung"]
            verdict = "interrupted" if ok else "FAIL"
            err_col, folder_col = ("ok" if ok_err else "BAD"), ("same" if folder_ok else "BAD")
        counts[verdict] += 1
        failures += verdict == "FAIL"
        sent = f"{r['sent_at']:.2f}" if r["sent_at"] is not None else "-"
        exit_after = f"{r['t_exit'] - r['sent_at']:.2f}" if r["sent_at"] is not None else "-"
        print(f"{k:>3} {'model' if pre else 'empty':>8} {sent:>8} {r['rc']:>4} {err_col:>6} {folder_col:>6} "
              f"{len(left):>4} {exit_after:>6}  {verdict}" + (f"  ({'; '.join(notes)})" if notes else ""),
              flush=True)
        if verdict == "FAIL":
            (work / f"try{k:02d}.stderr.txt").write_text(r["stderr"])
    print(f"\n{counts['interrupted']} interrupted cleanly, {counts['late']} too late to interrupt (outputs being "
          f"committed: complete new model), {counts['FAIL']} failed, of {opts.n - counts['ended first']} signalled "
          f"({counts['ended first']} of {opts.n} fits ended before their moment: no signal sent)")
    if failures:
        print(f"stderr of the failed tries kept in {work}")
    elif not opts.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
