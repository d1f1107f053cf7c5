"""GAP's parameters are declared once (``GAP.__init__`` and its docstring): the command line and the checks follow.

Every parameter has a check (``params.CHECKS``), a docstring entry, and one
way to be set from the command line: a flag derived from the declaration, a
dedicated flag, or the --config file alone.
"""
import inspect

import pytest
from conftest import DATA

from gapfit.cli import COMMANDS, CONFIG_ONLY, DEDICATED_FIT_FLAGS, _command_in, _model_params, build_parser, \
    fit_options, main
from gapfit.model import GAP
from gapfit.params import CHECKS, docstring_parameters, first_sentence, scalar_type

TRAIN = str(DATA / "Cu_emt_train.xyz")
#: The fit flags written out by hand before they were derived: (flag, GAP parameter, type).
FLAGS_BEFORE_DERIVATION = [
    ("--cutoff", "cutoff", float), ("--cutoff-transition-width", "cutoff_transition_width", float),
    ("--n-max", "n_max", int), ("--l-max", "l_max", int), ("--atom-sigma", "atom_sigma", float),
    ("--backend", "backend", str), ("--dscribe-mode", "dscribe_mode", str), ("--zeta", "zeta", float),
    ("--delta", "delta", float), ("--n-sparse", "n_sparse", int), ("--sparse-method", "sparse_method", str),
    ("--sigma-energy", "sigma_energy", float), ("--sigma-forces", "sigma_forces", float),
    ("--sigma-virial", "sigma_virial", float), ("--jitter", "jitter", float), ("--seed", "seed", int),
    ("--energy-key", "energy_key", str), ("--forces-key", "forces_key", str), ("--stress-key", "stress_key", str),
    ("--sparse-candidates", "sparse_candidates", int), ("--atoms-per-block", "atoms_per_block", int),
]
#: A value of each flag type, as typed and as parsed.
SAMPLE_VALUES = {int: ("3", 3), float: ("4.5", 4.5), str: ("some_key", "some_key")}


def _signature_names():
    return [name for name in inspect.signature(GAP.__init__).parameters if name != "self"]


def _fit_args(*flags):
    return build_parser().parse_args(["fit", "train.xyz", "-o", "m.npz", *flags])


def test_checks_cover_exactly_the_signature():
    assert set(CHECKS) == set(_signature_names())


def test_docstring_entries_are_the_signature_in_order():
    assert list(docstring_parameters(GAP)) == _signature_names()


def test_every_parameter_is_set_one_way():
    derived = {option.dest for option in fit_options()}
    for name in _signature_names():
        ways = [name in derived, name in CONFIG_ONLY, name in DEDICATED_FIT_FLAGS]
        assert sum(ways) == 1, f"{name}: derived flag, config-only, dedicated flag = {ways}"


def test_dedicated_flags_exist():
    fit = build_parser()._subparsers._group_actions[0].choices["fit"]
    known = {flag for action in fit._actions for flag in action.option_strings}
    assert set(DEDICATED_FIT_FLAGS.values()) <= known


def test_flags_written_by_hand_before_are_all_derived():
    derived = {(option.flag, option.dest, option.type) for option in fit_options()}
    assert set(FLAGS_BEFORE_DERIVATION) <= derived


def test_derived_flags_parse_into_the_parameter_of_the_same_name():
    for option in fit_options():
        typed, parsed = SAMPLE_VALUES[option.type]
        args = _fit_args(option.flag, typed)
        assert getattr(args, option.dest) == parsed
        assert _model_params(args, set()) == {option.dest: parsed}, option.flag


def test_flags_not_given_leave_the_parameters_to_the_config():
    assert _model_params(_fit_args(), set()) == {}


def test_dedicated_flags_set_their_parameter():
    args = _fit_args("--gap", "distance_2b cutoff=4.0", "--no-core-repulsion", "--optimize",
                     "--no-optimize-delta", "--no-hygiene")
    assert _model_params(args, set()) == {"terms": "distance_2b cutoff=4.0", "core_repulsion": False,
                                          "optimize": "global", "optimize_delta": False, "hygiene": False}


def test_fit_help_shows_each_derived_flag_with_its_help(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in fit_options():
        assert option.flag in text and " ".join(option.help.replace("%%", "%").split()) in text
    assert "SOAP cutoff radius in Å (default 5.0)" in text


def test_a_derived_flag_reaches_the_fit(tmp_path, capsys):
    out = str(tmp_path / "m.npz")
    assert main(["fit", TRAIN, "-o", out, "--dry-run", "--cutoff", "4.5", "--core-radii", "covalent",
                 "--calibration-fraction", "0.2"]) == 0
    capsys.readouterr()
    assert main(["fit", TRAIN, "-o", out, "--dry-run", "--core-radii", "nearest"]) == 2
    assert "core_radii" in capsys.readouterr().err


def test_subcommand_names_come_from_one_table():
    parser = build_parser()
    assert list(parser._subparsers._group_actions[0].choices) == list(COMMANDS)
    assert _command_in(["-T", "md", "model.npz", "fit"]) == "md"
    assert _command_in(["--version"]) == ""


@pytest.mark.parametrize("annotation, expected", [
    ("float", float), ("Optional[int]", int), ("Union[int, Mapping, None]", int), ("Optional[str]", str),
    ("int | None", int), ("bool", None), ("Union[bool, str]", None), ("Optional[Mapping]", None), ("Any", None),
    (float, float),
])
def test_scalar_type_of_an_annotation(annotation, expected):
    assert scalar_type(annotation) is expected


def test_first_sentence_is_plain_text():
    assert first_sentence("Key in ``info`` of the\n energy, see :mod:`gapfit.data`. More text.") == \
        "Key in info of the energy, see gapfit.data"
    assert first_sentence("Scale 0.75 × the sum") == "Scale 0.75 × the sum"
