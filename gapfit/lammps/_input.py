"""Reading LAMMPS inputs: logical lines, their words, and gapfit's own ``pair_style gapfit`` line.

Everything but the lines that name gapfit is left to LAMMPS's own reader;
these functions only find the lines gapfit must handle itself.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..errors import InputError

#: What ``pair_style gapfit MODEL uncertainty WHAT`` accepts for WHAT, and the stds each computes.
UNCERTAINTY_CHOICES = {"local_energy": ("local_energy",), "forces": ("local_energy", "forces")}


@dataclass(frozen=True)
class Line:
    """One logical input line (continuations joined) and where it starts."""

    text: str
    path: str
    number: int  # 1-based line number of its first physical line

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"

    @property
    def words(self) -> List[str]:
        return split_words(self.text)


def read_lines(path: str) -> List[Line]:
    """The logical lines of a LAMMPS input file.

    A line ending in ``&`` continues on the next, and so does an open
    triple quote (``\"\"\"``), as LAMMPS reads them.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            physical = fh.read().splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such LAMMPS input file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a LAMMPS input file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file; a LAMMPS input is text") from None
    out, k = [], 0
    while k < len(physical):
        start, text = k, physical[k]
        k += 1
        while k < len(physical) and (text.rstrip().endswith("&") or text.count('"""') % 2):
            text = text.rstrip()[:-1] if text.rstrip().endswith("&") else text + "\n"
            text += physical[k]
            k += 1
        out.append(Line(text, path, start + 1))
    return out


def split_words(text: str) -> List[str]:
    """The words of a line: comments (``#`` outside quotes) removed, quoted words kept whole, quotes dropped."""
    words, word, quote, k = [], None, None, 0
    while k < len(text):
        c = text[k]
        if quote:
            if text.startswith(quote, k):
                k += len(quote)
                quote = None
                continue
            word += c
        elif c == "#":
            break
        elif c.isspace():
            if word is not None:
                words.append(word)
                word = None
        elif c in "'\"":
            quote = '"""' if text.startswith('"""', k) else c
            word = word or ""
            k += len(quote)
            continue
        else:
            word = (word or "") + c
        k += 1
    if word is not None:
        words.append(word)
    return words


def names_gapfit(words: List[str]) -> bool:
    """Whether a line is a ``pair_style`` naming gapfit (alone or inside a hybrid style)."""
    return len(words) > 1 and words[0] == "pair_style" and "gapfit" in words[1:]


@dataclass(frozen=True)
class PairStyle:
    """The settings of a ``pair_style gapfit MODEL [uncertainty local_energy|forces] [every N]
    [committee K [seed S] [file PATH]]`` line."""

    model: str
    uncertainty: Tuple[str, ...] = ()  # the stds computed on check steps
    every: int = 1  # steps between checks (and committee frames)
    committee: int = 0  # members whose energies are written on check steps (0: none)
    committee_seed: int = 0
    committee_file: Optional[str] = None  # extended XYZ of the check steps' frames, with the members' energies

    @classmethod
    def parse(cls, words: List[str], where: str) -> "PairStyle":
        """The settings of the (variable-expanded) words of the line; InputError naming the line at fault."""
        form = ("pair_style gapfit MODEL.npz [uncertainty local_energy|forces] [every N] "
                "[committee K [seed S] [file PATH]]")
        if words[1] != "gapfit":
            raise InputError(f"{where}: {' '.join(words)}: gapfit cannot be part of a hybrid pair style; "
                             f"use {form} alone")
        if len(words) < 3:
            raise InputError(f"{where}: pair_style gapfit needs the model file: {form}")
        model, rest = words[2], words[3:]
        uncertainty, every, committee, seed, path = (), None, 0, None, None
        whole = {"every": 1, "committee": 2, "seed": 0}  # the least value of each whole-number keyword
        while rest:
            key = rest.pop(0)
            if key == "uncertainty" and rest and rest[0] in UNCERTAINTY_CHOICES:
                uncertainty = UNCERTAINTY_CHOICES[rest.pop(0)]
            elif key in whole and rest and rest[0].isdigit() and int(rest[0]) >= whole[key]:
                value = int(rest.pop(0))
                if key == "every":
                    every = value
                elif key == "committee":
                    committee = value
                else:
                    seed = value
            elif key == "file" and rest:
                path = rest.pop(0)
            else:
                what = (f"'{key} {rest[0]}'" if rest else f"'{key}' without its value") \
                    if key in ("uncertainty", "file", *whole) else f"unknown keyword '{key}'"
                raise InputError(f"{where}: pair_style gapfit: {what}; the form is {form} "
                                 "(every: a whole number of steps, at least 1; committee: at least 2 members)")
        if every is not None and not uncertainty and not committee:
            raise InputError(f"{where}: pair_style gapfit: 'every {every}' sets how often the stds or the committee "
                             "are computed: give 'uncertainty local_energy', 'uncertainty forces' or "
                             "'committee K' with it")
        if (seed is not None or path is not None) and not committee:
            raise InputError(f"{where}: pair_style gapfit: 'seed' and 'file' belong to 'committee K': {form}")
        return cls(model, uncertainty, every or 1, committee, seed or 0, path)


def parse_pair_coeff(words: List[str], ntypes: int, where: str) -> List[str]:
    """The element of each LAMMPS type from ``pair_coeff * * El1 El2 ...`` (one element per type)."""
    from ase.data import atomic_numbers
    form = f"pair_coeff * * followed by one element per atom type ({ntypes} here), e.g. pair_coeff * * " + \
        " ".join(["Si"] * ntypes)
    if words[1:3] != ["*", "*"]:
        raise InputError(f"{where}: {' '.join(words)}: gapfit takes {form}")
    elements = words[3:]
    if len(elements) != ntypes:
        raise InputError(f"{where}: {' '.join(words)}: {len(elements)} elements for {ntypes} atom types; "
                         f"gapfit takes {form}")
    bad = [e for e in elements if e not in atomic_numbers]
    if bad:
        raise InputError(f"{where}: {' '.join(words)}: {bad[0]!r} is not a chemical element (NULL and hybrid "
                         f"styles are not supported); gapfit takes {form}")
    return elements


def include_target(words: List[str]) -> Optional[str]:
    """The existing file an ``include`` line names (relative to the working folder, as LAMMPS reads it), or None."""
    if len(words) != 2 or words[0] != "include" or not os.path.isfile(words[1]):
        return None
    return words[1]


def touches_pair_style(path: str) -> bool:
    """Whether a file (read without following its own includes) has ``pair_style`` or ``pair_coeff`` lines.

    An included file with neither is left to LAMMPS's own ``include``.
    """
    try:
        lines = read_lines(path)
    except InputError:
        return False
    return any(ln.words[:1] in (["pair_style"], ["pair_coeff"], ["include"]) for ln in lines)
