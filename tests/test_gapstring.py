"""gap_fit's descriptor strings and command lines, read into gapfit's terms and parameters."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gapfit.errors import InputError
from gapfit.gapstring import (SPARSE_METHODS, TERM_SETTINGS, format_gap_string, parse_gap_fit_command,
                              parse_gap_string)
from gapfit.params import check_params

ROOT = Path(__file__).resolve().parents[1]

ISSUE = ("distance_2b cutoff=5.0 delta=2.0 n_sparse=30 : soap cutoff=5.0 n_max=8 l_max=8 atom_sigma=0.5 zeta=4 "
         "delta=0.2 n_sparse=2000")
ISSUE_TERMS = [
    {"type": "distance_2b", "cutoff": 5.0, "delta": 2.0, "n_sparse": 30},
    {"type": "soap", "cutoff": 5.0, "n_max": 8, "l_max": 8, "atom_sigma": 0.5, "zeta": 4, "delta": 0.2,
     "n_sparse": 2000},
]


def test_issue_example():
    terms = parse_gap_string(ISSUE)
    assert terms == ISSUE_TERMS
    assert [type(v) for v in terms[1].values()] == [str, float, int, int, float, float, float, int]


def test_format_spelling():
    terms = [{"type": "distance_2b", "cutoff": 5.0, "delta": 2.0, "n_sparse": 30, "theta": 0.5},
             {"type": "soap", "cutoff": 5.0, "n_max": 8, "l_max": 8, "atom_sigma": 0.5, "zeta": 4, "delta": None,
              "n_sparse": 2000, "sparse_method": "cur"}]
    assert format_gap_string(terms) == (
        "distance_2b cutoff=5.0 delta=2.0 n_sparse=30 theta_uniform=0.5 : "
        "soap atom_sigma=0.5 cutoff=5.0 l_max=8 n_max=8 n_sparse=2000 sparse_method=cur_points zeta=4.0")


@pytest.mark.parametrize("terms", [
    ISSUE_TERMS,
    [{"type": "soap"}],
    [{"type": "angle_3b", "cutoff": 4.0, "theta": 1.0, "sparse_method": "fps", "n_sparse": 200}],
    [{"type": "soap", "n_sparse": {"Si": 1000, "O": 500}, "backend": "dscribe", "dscribe_mode": "analytic",
      "sparse_method": "random", "zeta": 2.5, "cutoff_transition_width": 0.75}],
    [{"type": "soap", "n_sparse": {14: 10}}, {"type": "distance_2b", "sparse_method": "uniform", "theta": 0.5},
     {"type": "angle_3b", "delta": 1e-3, "cutoff": 3.0}],
    [{"type": "soap", "cutoff": 5, "n_max": 8.0, "delta": 1e-08}],
])
def test_round_trip_examples(terms):
    text = format_gap_string(terms)
    assert parse_gap_string(text) == terms
    # and again: formatting is stable
    assert format_gap_string(parse_gap_string(text)) == text


def test_none_settings_are_left_out():
    full = {"type": "soap", "cutoff": 5.0, "delta": None, "n_sparse": None, "sparse_method": "cur",
            "backend": "featomic", "dscribe_mode": "smooth"}
    text = format_gap_string([full])
    assert "delta" not in text and "n_sparse" not in text
    assert parse_gap_string(text) == [{k: v for k, v in full.items() if v is not None}]


# Random valid term lists: every subset of settings, every valid value.
_positive = st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False)
_common = {"cutoff": _positive, "cutoff_transition_width": _positive, "delta": st.none() | _positive}
_species = st.sampled_from(["H", "C", "O", "Si", "Cu", 1, 8, 29, 118])
_TERM_STRATEGIES = {
    "soap": st.fixed_dictionaries({"type": st.just("soap")}, optional={
        **_common, "n_max": st.integers(1, 40), "l_max": st.integers(0, 40), "atom_sigma": _positive,
        "zeta": _positive | st.integers(1, 10),
        "n_sparse": st.none() | st.integers(1, 10**7) | st.dictionaries(_species, st.integers(1, 10**5), min_size=1),
        "sparse_method": st.sampled_from(SPARSE_METHODS["soap"]),
        "backend": st.sampled_from(["featomic", "dscribe"]), "dscribe_mode": st.sampled_from(["smooth", "analytic"])}),
    **{kind: st.fixed_dictionaries({"type": st.just(kind)}, optional={
        **_common, "theta": _positive, "n_sparse": st.integers(1, 10**6),
        "sparse_method": st.sampled_from(SPARSE_METHODS[kind])}) for kind in ("distance_2b", "angle_3b")},
}
_term_lists = st.lists(st.one_of(*_TERM_STRATEGIES.values()), min_size=1, max_size=4)


@settings(max_examples=150)
@given(_term_lists, st.sampled_from(["plain", "gap=", "braces", "each", "spaced"]))
def test_round_trip_property(terms, wrapping):
    expected = [{k: v for k, v in t.items() if v is not None} for t in terms]
    text = format_gap_string(terms)
    if wrapping == "gap=":
        text = f"gap={{{text}}}"
    elif wrapping == "braces":
        text = f"  {{ {text} }}  "
    elif wrapping == "each":
        text = ":".join("{" + part.strip() + "}" for part in text.split(" : "))
    elif wrapping == "spaced":
        text = text.replace(" : ", " ; ").replace(" ", "   ")
    assert parse_gap_string(text) == expected


def test_term_settings_match_the_term_classes():
    from gapfit.sparsify import METHODS
    from gapfit.terms import term_types
    types = term_types()
    for kind, names in TERM_SETTINGS.items():
        if kind not in types:
            continue  # a term type still being written
        assert set(names) == set(types[kind].SETTINGS), kind
        assert set(SPARSE_METHODS[kind]) == set(getattr(types[kind], "METHODS", METHODS)), kind


def test_notes_on_gap_fit_meaning():
    notes = []
    parse_gap_string("distance_2b cutoff=5 cutoff_transition_width=0.5 delta=2.0 sparse_method=uniform : "
                     "angle_3b delta=0.1 : soap cutoff_transition_width=1 sparse_method=cur_points : "
                     "distance_Nb order=2 delta=1.0 cutoff_transition_width=1 sparse_method=uniform", notes=notes)
    assert notes == [
        "--gap: term 1 (distance_2b): gap_fit's distance_2b counts each pair from both of its atoms, gapfit's "
        "counts it once, so delta=2 gives half gap_fit's prior energy scale; delta=4 reproduces gap_fit's",
        "--gap: term 2 (angle_3b): gap_fit's angle_3b counts each triplet in both neighbour orders, gapfit's "
        "counts it once, so delta=0.1 gives half gap_fit's prior energy scale; delta=0.2 reproduces gap_fit's",
        "--gap: term 2 (angle_3b): no cutoff_transition_width: gapfit's default is 1.0 Å, gap_fit's 0.5 Å",
        "--gap: term 2 (angle_3b): no sparse_method: gapfit's default is fps, gap_fit's random",
        "--gap: term 3 (soap): gapfit's SOAP radial functions are featomic's Gaussian-type orbitals, not "
        "gap_fit's basis (EQUISPACED_GAUSS unless radial_basis is given): the same n_max and l_max give "
        "comparable, not identical, descriptors",
    ]
    assert parse_gap_fit_command("at_file=x.xyz")["notes"][-3].startswith("gapfit adds ZBL core repulsion")


def test_distance_nb_order_2_is_distance_2b():
    assert parse_gap_string("distance_Nb order=2 compact_clusters=T cutoff=5.0 covariance_type=ARD_SE "
                            "theta_uniform=1.0 n_sparse=15 delta=1.0 add_species=T") == [
        {"type": "distance_2b", "cutoff": 5.0, "theta": 1.0, "n_sparse": 15, "delta": 1.0}]


def test_every_term_class_round_trips():
    from gapfit.terms import build_terms, term_types
    defaults = [cls().to_dict() for cls in term_types().values()]
    text = format_gap_string(defaults)
    assert [t.to_dict() for t in build_terms(text)] == defaults


def test_parsed_soap_builds_a_term():
    from gapfit.terms import build_terms
    (term,) = build_terms("soap cutoff=4.5 n_max=4 l_max=3 atom_sigma=0.5 zeta=2 sparse_method=cur_points")
    assert term.type == "soap" and term.n_max == 4 and term.sparse_method == "cur"


# ------------------------------------------------------------------ syntax
@pytest.mark.parametrize("text", [
    "gap={soap cutoff=5.0 n_sparse=100}",
    "GAP = {soap cutoff=5.0 n_sparse=100}".replace(" = ", "="),
    '"soap cutoff=5.0 n_sparse=100"',
    "{soap cutoff=5.0 n_sparse=100}",
    "{{soap cutoff=5.0 n_sparse=100}}",
    "soap cutoff={5.0} n_sparse={ 100 }",
    "soap cutoff='5.0' n_sparse=\"100\"",
    "soap,cutoff=5.0,n_sparse=100",
    "  soap \n cutoff=5.0\tn_sparse=100 : ",
    "SOAP Cutoff=5.0 N_SPARSE=100",
    "cutoff=5.0 soap n_sparse=100",
    "soap=T cutoff=5.0 n_sparse=100",
    "soap cutoff=5.0d0 n_sparse=100",
])
def test_syntax_variants(text):
    assert parse_gap_string(text) == [{"type": "soap", "cutoff": 5.0, "n_sparse": 100}]


def test_separators_and_braces_inside_values():
    terms = parse_gap_string("gap={{soap n_sparse={ Si:10 : O:5 } cutoff=4}; {distance_2b cutoff=3}}")
    assert terms == [{"type": "soap", "n_sparse": {"Si": 10, "O": 5}, "cutoff": 4.0},
                     {"type": "distance_2b", "cutoff": 3.0}]


def test_gap_fit_names_and_aliases():
    assert parse_gap_string("soap energy_scale=0.2 soap_exponent=2 atom_gaussian_width=0.4 sparse_method=CUR_POINTS "
                            "covariance_type=DOT_PRODUCT add_species=T f0=0.0 central_weight=1.0 normalise=T "
                            "mark_sparse_atoms=F radial_basis=GTO : distance_2b lengthscale_uniform=0.5 "
                            "covariance_type=ARD_SE add_species sparse_method=UNIFORM : angle_3b theta_uniform=1 "
                            "covariance_type=gaussian sparse_method=random") == [
        {"type": "soap", "delta": 0.2, "zeta": 2.0, "atom_sigma": 0.4, "sparse_method": "cur"},
        {"type": "distance_2b", "theta": 0.5, "sparse_method": "uniform"},
        {"type": "angle_3b", "theta": 1.0, "sparse_method": "random"}]


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("text, parts", [
    ("soap foo=1", ["term 1 (soap)", "unknown key 'foo'", "n_max"]),
    ("soap cutoff=5 : bogus cutoff=3", ["term 2", "unknown term 'bogus'", "soap, distance_2b, angle_3b"]),
    ("soap cutoff=5 : soap_turbo l_max=8", ["term 2", "soap_turbo", "not supported", "write soap"]),
    ("distance_Nb order=3 cutoff=5", ["term 1 (distance_Nb)", "order=3", "order=2 only", "angle_3b"]),
    ("distance_Nb cutoff=5", ["term 1 (distance_Nb)", "no order"]),
    ("distance_Nb order=2 resid_name=r", ["term 1 (distance_Nb)", "unknown key 'resid_name'"]),
    ("distance_Nb order=two", ["term 1 (distance_Nb)", "'order'", "whole number"]),
    ("coordination cutoff=3", ["term 1", "coordination descriptor is not supported"]),
    ("cutoff=5 n_max=3", ["term 1", "no term name"]),
    ("soap distance_2b cutoff=5", ["term 1", "two term names", "':'"]),
    ("soap covariance_type=ard_se", ["term 1 (soap)", "'covariance_type'", "ard_se", "dot_product"]),
    ("distance_2b covariance_type=dot_product", ["term 1 (distance_2b)", "'covariance_type'", "ard_se"]),
    ("angle_3b covariance_type=pp", ["(angle_3b)", "'covariance_type'", "pp"]),
    ("soap add_species=F", ["(soap)", "'add_species'", "one block per centre species"]),
    ("soap n_species=2", ["(soap)", "'n_species'", "one block per centre species", "remove"]),
    ("soap species_Z={14 8}", ["(soap)", "'species_Z'", "by itself"]),
    ("soap Z=14", ["(soap)", "'Z'"]),
    ("distance_2b Z1=14", ["(distance_2b)", "'Z1'", "species pair"]),
    ("angle_3b Z2=8", ["(angle_3b)", "'Z2'", "species triplet"]),
    ("angle_3b Z_center=8", ["(angle_3b)", "'Z_center'"]),
    ("soap n_max=8.5", ["(soap)", "'n_max'", "whole number"]),
    ("soap n_max=0", ["(soap)", "'n_max'", "at least 1"]),
    ("soap cutoff=-5", ["(soap)", "'cutoff'", "positive"]),
    ("soap cutoff=five", ["(soap)", "'cutoff'", "number"]),
    ("soap cutoff=nan", ["(soap)", "'cutoff'", "finite"]),
    ("soap cutoff", ["(soap)", "'cutoff'", "needs a value"]),
    ("soap n_sparse=0", ["(soap)", "'n_sparse'", "at least 1"]),
    ("soap n_sparse={Xx:10}", ["(soap)", "'n_sparse'", "not a chemical element"]),
    ("soap n_sparse={Si:10:O}", ["(soap)", "'n_sparse'", "{Si:1000:O:500}"]),
    ("distance_2b n_sparse={Si:10}", ["(distance_2b)", "'n_sparse'", "one number"]),
    ("soap sparse_method=pivot", ["(soap)", "'sparse_method'", "pivot", "cur_points, fps, random"]),
    ("soap sparse_method=cur_covariance", ["(soap)", "'sparse_method'", "cur_points"]),
    ("soap sparse_method=magic", ["(soap)", "unknown sparse_method 'magic'"]),
    ("distance_2b sparse_method=cur_points", ["(distance_2b)", "'sparse_method'", "uniform, fps, random"]),
    ("angle_3b sparse_method=uniform", ["(angle_3b)", "'sparse_method'", "fps, random"]),
    ("soap theta_uniform=1.0", ["(soap)", "'theta_uniform'", "no length scale"]),
    ("distance_2b zeta=4", ["(distance_2b)", "'zeta'", "soap"]),
    ("angle_3b n_max=4", ["(angle_3b)", "'n_max'", "soap key"]),
    ("angle_3b theta_fac=0.5", ["(angle_3b)", "'theta_fac'", "theta_uniform"]),
    ("soap config_type_n_sparse={a:10}", ["(soap)", "'config_type_n_sparse'", "per species"]),
    ("soap sparse_file=sp.txt", ["(soap)", "'sparse_file'"]),
    ("soap print_sparse_index=idx.dat", ["(soap)", "'print_sparse_index'", "remove it"]),
    ("soap f0=1.0", ["(soap)", "'f0'", "e0"]),
    ("soap central_weight=0.5", ["(soap)", "'central_weight'", "1"]),
    ("soap normalise=F", ["(soap)", "'normalise'"]),
    ("soap radial_basis=POLY", ["(soap)", "'radial_basis'", "GTO"]),
    ("soap radial_scaling=-0.5", ["(soap)", "'radial_scaling'", "no effect there"]),
    ("soap average=T", ["(soap)", "'average'"]),
    ("soap add_species=maybe", ["(soap)", "'add_species'", "T or F"]),
    ("soap backend=quip", ["(soap)", "'backend'", "featomic, dscribe"]),
    ("distance_2b backend=dscribe", ["(distance_2b)", "'backend'", "soap key"]),
    ("distance_2b only_inter=T", ["(distance_2b)", "'only_inter'", "residue"]),
    ("distance_2b compact_clusters=T", ["(distance_2b)", "unknown key 'compact_clusters'"]),
    ("soap cutoff=5 cutoff=6", ["(soap)", "'cutoff' is given twice"]),
    ("soap delta=1 energy_scale=2", ["(soap)", "'energy_scale' is given twice (as 'delta')"]),
    ("soap cutoff={5", ["'{' is not closed"]),
    ("soap cutoff=5}", ["'}' without its '{'"]),
    ("soap cutoff='5", ["quote is not closed"]),
    ("", ["no terms"]),
    ("gap={ }", ["no terms"]),
])
def test_errors_name_term_and_key(text, parts):
    with pytest.raises(InputError) as info:
        parse_gap_string(text, where="fit.yaml terms")
    message = str(info.value)
    assert message.startswith("fit.yaml terms: "), message
    for part in parts:
        assert part in message, (part, message)
    assert info.value.param == "gap"
    assert "\n" not in message


def test_error_default_where_and_type():
    with pytest.raises(InputError, match=r"^--gap: term 1 \(soap\): unknown key 'foo'"):
        parse_gap_string("soap foo=1")
    with pytest.raises(InputError, match="is text"):
        parse_gap_string(["soap"])


@pytest.mark.parametrize("terms, part", [
    ([], "non-empty list"),
    ("soap", "non-empty list"),
    ([{"cutoff": 5.0}], "term 1 has type None"),
    ([{"type": "soap"}, {"type": "distance_nb"}], "term 2 has type 'distance_nb'"),
    ([{"type": "soap", "theta": 1.0}], "term 1 (soap): setting 'theta' has no gap_fit spelling"),
    ([{"type": "distance_2b", "n_max": 4}], "setting 'n_max'"),
    ([{"type": "soap", "cutoff": -1.0}], "'cutoff': must be positive"),
    ([{"type": "soap", "cutoff": True}], "cutoff = True"),
    ([{"type": "soap", "n_max": 8.5}], "'n_max': must be a whole number"),
    ([{"type": "soap", "sparse_method": "uniform"}], "'sparse_method'"),
    ([{"type": "distance_2b", "n_sparse": {"Si": 3}}], "'n_sparse'"),
    ([{"type": "soap", "backend": "feat omic"}], "cannot be written"),
    ([{"type": "soap", "n_sparse": {"14": 3}}], "n_sparse cannot be written exactly"),
    (["soap"], "must be a mapping"),
])
def test_format_errors(terms, part):
    with pytest.raises(InputError) as info:
        format_gap_string(terms)
    assert part in str(info.value)
    assert info.value.param == "gap"


# ------------------------------------------------------------------ command lines
# From the GAP documentation's tutorial (libatoms.github.io/GAP, gap_fitting_tutorial).
TUTORIAL = ("gap_fit energy_parameter_name=energy force_parameter_name=forces do_copy_at_file=F "
            "sparse_separate_file=T gp_file=GAP.xml at_file=train.xyz default_sigma={0.008 0.04 0.01 0.01} "
            "gap={distance_2b cutoff=4.0 covariance_type=ard_se delta=0.5 theta_uniform=1.0 "
            "sparse_method=uniform add_species=T n_sparse=10}")

# The annotated command of the gap_fit documentation page (GAP-18 style), as printed there.
ANNOTATED = r"""
  gap_fit atoms_filename=database.xyz # input data in extended XYZ format
    gap={                              # start of descriptor and kernel spec
    distance_Nb                       # first descriptor is interatomic distance based
    order=2                           # descriptor is 2-body (i.e. a pair potential)
    cutoff=5.0                        # distance cutoff in the kernel, in Angstrom
    n_sparse=15                       # number of representative points, M in Sec. II
    covariance_type=ard_se            # form of kernel: squared exponential (Gaussian)
    delta=2.0                         # scaling of kernel, per descriptor, here it is per atom pair, in eV
    theta_uniform=2.5                 # length scale in Gaussian kernel in Angstrom
    sparse_method=uniform             # choice of representative points, here a uniform grid up to the cutoff
    compact_clusters=T                # how cutoff is applied, here a spherical manner around each atom
    :                                 # separator between descriptors
    soap                              # second descriptor is a SOAP
    l_max=6 n_max=12                  # number of angular and radial basis functions for SOAP
    atom_sigma=0.5                    # Gaussian smearing width of atom density for SOAP, in Angstrom
    cutoff=5.0                        # distance cutoff in the kernel, in Angstrom
    radial_scaling=-0.5               # exponent of atom density scaling, power of distance
    cutoff_transition_width=1.0       # distance across which kernel is smoothly taken to zero, in Angstrom
    central_weight=1.0                # relative weight of central atom in atom density for SOAP
    n_sparse=8000                     # number of representative points, M in Sec. II
    delta=0.2                         # scaling of kernel, per descriptor, here for SOAP it is per atom, in eV
    covariance_type=dot_product       # form of kernel
    zeta=4                            # power kernel is raised to - together with dot_product gives a polynomial kernel
    sparse_method=cur_points          # choice of representative points, here CUR decomposition of descriptor matrix
    }                                 # end of descriptor and kernel spec
   default_sigma={0.002 0.2 0.2 0.0}  # default regularisation corresponding to energy, force, virial, hessian
   config_type_sigma={                # start of per configuration-group regularisation spec, using groups defined in the input data file
    isolated_atom:0.0001:0.01:1.0:0.0:
    rss_rnd:0.03:0.4:0.5:0.0:
    rss_005:0.02:0.3:0.4:0.0:
    rss_200:0.01:0.2:0.2:0.0:
    rss_3c:0.005:0.1:0.1:0.00:
    cryst_dist:0.0003:0.03:0.05:0.00:
    cryst_dist_hp:0.005:0.1:0.1:0.0:
    liq_P4:0.003:0.3:0.5:0.0:
    liq_network:0.003:0.3:0.5:0.0:
    2D:0.001:0.03:0.05:0.0:
    ribbons:0.01:0.5:0.2:0.0
    }                                 # end of per configuration-group regularisation spec
   energy_parameter_name=energy       # name of the key in the input data file corresponding to the total energy
   force_parameter_name=forces        # name of the key in the input data file corresponding to the forces
   virial_parameter_name=virial       # name of the key in the input data file corresponding to the virial stress
   sparse_jitter=1.0e-8               # extra diagonal regulariser
   do_copy_at_file=F                  # copy input data into potential XML file?
   sparse_separate_file=T             # write representative point data into a separate file not in the main potential XML
   gp_file=gap.xml                    # name of output potential XML file
   core_param_file=P_r6_innercut.xml  # name of XML file containing the baseline potential (QUIP format)
   core_ip_args={IP Glue}             # initialisation string to call baseline potential
"""


def test_tutorial_command():
    got = parse_gap_fit_command(TUTORIAL)
    assert got["train"] == "train.xyz"
    assert got["output"] == "GAP.npz"
    assert got["terms"] == [{"type": "distance_2b", "cutoff": 4.0, "delta": 0.5, "theta": 1.0,
                             "sparse_method": "uniform", "n_sparse": 10}]
    assert got["params"] == {"energy_key": "energy", "forces_key": "forces", "sigma_energy": 0.008,
                             "sigma_forces": 0.04, "sigma_virial": 0.01}
    check_params(got["params"])
    assert "core_file" not in got
    assert any("Hessian sigma" in n for n in got["notes"])
    assert any(".npz" in n for n in got["notes"])


def test_argv_form_is_the_same():
    import shlex
    assert parse_gap_fit_command(shlex.split(TUTORIAL)) == parse_gap_fit_command(TUTORIAL)
    assert parse_gap_fit_command(["/opt/quip/bin/gap_fit"] + shlex.split(TUTORIAL)[1:]) == \
        parse_gap_fit_command(TUTORIAL)


def test_annotated_docs_command():
    # As printed, it has two keys gapfit cannot honour; each message says what to do.
    with pytest.raises(InputError, match=r"^gap_fit option gap: term 2 \(soap\): key 'radial_scaling'.*"
                                         r"no effect there\): remove it$"):
        parse_gap_fit_command(ANNOTATED)
    fixed = re.sub(r"\n\s*radial_scaling=-0.5[^\n]*", "", ANNOTATED)
    with pytest.raises(InputError, match="virial_parameter_name: not supported: gapfit reads stresses") as info:
        parse_gap_fit_command(fixed)
    assert info.value.param == "virial_parameter_name"
    fixed = re.sub(r"\n\s*virial_parameter_name=virial[^\n]*", "", fixed)
    got = parse_gap_fit_command(fixed)
    assert got["train"] == "database.xyz" and got["output"] == "gap.npz"
    assert got["core_file"] == "P_r6_innercut.xml"
    assert got["terms"] == [
        {"type": "distance_2b", "cutoff": 5.0, "n_sparse": 15, "delta": 2.0, "theta": 2.5,
         "sparse_method": "uniform"},
        {"type": "soap", "l_max": 6, "n_max": 12, "atom_sigma": 0.5, "cutoff": 5.0, "cutoff_transition_width": 1.0,
         "n_sparse": 8000, "delta": 0.2, "zeta": 4, "sparse_method": "cur"}]
    params = got["params"]
    check_params(params)
    assert (params["sigma_energy"], params["sigma_forces"], params["sigma_virial"]) == (0.002, 0.2, 0.2)
    assert params["jitter"] == 1e-8
    assert params["energy_key"] == "energy" and params["forces_key"] == "forces"
    cts = params["config_type_sigma"]
    assert len(cts) == 11
    assert cts["isolated_atom"] == {"energy": 0.0001, "forces": 0.01, "virial": 1.0}
    assert cts["2D"] == {"energy": 0.001, "forces": 0.03, "virial": 0.05}
    assert any("IP Glue" in n for n in got["notes"])
    assert any("sparse_jitter" in n for n in got["notes"])
    # distance_Nb order=2 is gapfit's distance_2b with the same delta: no note on delta
    assert not any("reproduces gap_fit's" in n for n in got["notes"])
    assert any("term 1 (distance_Nb): no cutoff_transition_width" in n for n in got["notes"])


def test_quip_regression_test_command():
    # QUIP's own gap_fit test (tests/test_gap_fit.py), with its CUR variant.
    cmd = ("at_file=train_sub4.xyz gap={soap l_max=8 n_max=8 atom_sigma=0.5 zeta=4 cutoff=4.0 "
           "cutoff_transition_width=1.0 central_weight=1.0 n_sparse=500 delta=3.0 f0=0.0 covariance_type=dot_product "
           "sparse_method=cur_points} default_sigma={0.01 1.0 0.5 0.0} energy_parameter_name=dft_energy "
           "force_parameter_name=dft_force config_type_parameter_name=config_type sparse_jitter=1.0e-3 "
           "e0_offset=0.0 gp_file=gp.xml rnd_seed=1 condition_number_norm=I")
    got = parse_gap_fit_command(cmd)
    assert got["terms"] == [{"type": "soap", "l_max": 8, "n_max": 8, "atom_sigma": 0.5, "zeta": 4, "cutoff": 4.0,
                             "cutoff_transition_width": 1.0, "n_sparse": 500, "delta": 3.0, "sparse_method": "cur"}]
    assert got["params"] == {"sigma_energy": 0.01, "sigma_forces": 1.0, "sigma_virial": 0.5,
                             "energy_key": "dft_energy", "forces_key": "dft_force", "jitter": 1e-3, "seed": 1}
    with pytest.raises(InputError, match="e0_offset=2.0 is not supported: add the offset to each e0"):
        parse_gap_fit_command(cmd.replace("e0_offset=0.0", "e0_offset=2.0"))


def test_e0_forms():
    assert parse_gap_fit_command("e0={Si:-158.5:O:-432.0}")["params"]["e0"] == {"Si": -158.5, "O": -432.0}
    assert parse_gap_fit_command("e0={14:-158.5}")["params"]["e0"] == {14: -158.5}
    single = parse_gap_fit_command("e0=-158.54496821")
    assert single["e0_all_species"] == -158.54496821 and "e0" not in single["params"]
    for bad, part in [("e0={Si:-1:O}", "pairs"), ("e0={Qq:-1}", "not a chemical element"),
                      ("e0={Si:x}", "number"), ("e0={Si:-1:Si:-2}", "twice")]:
        with pytest.raises(InputError, match=re.escape(part)) as info:
            parse_gap_fit_command(bad)
        assert "gap_fit option e0" in str(info.value) and info.value.param == "e0"


def test_sigmas():
    got = parse_gap_fit_command("default_sigma={0.01 0.5 0.0 0.0}")
    assert got["params"] == {"sigma_energy": 0.01, "sigma_forces": 0.5}
    assert any("zero virial sigma" in n for n in got["notes"])
    assert not any("Hessian" in n for n in got["notes"])
    # gap_fit's 'default' entry replaces default_sigma, wherever it is written
    got = parse_gap_fit_command("config_type_sigma={default:0.004:0.08:0.1:0 bulk:0.001:0.02:0.03:0} "
                                "default_sigma={0.01 0.5 0.2 0}")
    assert got["params"] == {"sigma_energy": 0.004, "sigma_forces": 0.08, "sigma_virial": 0.1,
                             "config_type_sigma": {"bulk": {"energy": 0.001, "forces": 0.02, "virial": 0.03}}}
    got = parse_gap_fit_command("config_type_sigma='surf 0.01 0.1 0 0.5 ; liq:0.02:0.2:0.3:0'")
    assert got["params"]["config_type_sigma"] == {"surf": {"energy": 0.01, "forces": 0.1},
                                                  "liq": {"energy": 0.02, "forces": 0.2, "virial": 0.3}}
    assert any("Hessian sigmas are ignored" in n for n in got["notes"])
    for bad, part in [("default_sigma={0.01 0.5}", "4 numbers"), ("default_sigma={0.01 -0.5 0 0}", "negative"),
                      ("config_type_sigma={a:1:2:3}", "groups of 5"), ("config_type_sigma={a:1:2:3:0:a:1:2:3:0}",
                                                                      "twice"),
                      ("config_type_sigma={a:1:-2:3:0}", "negative"), ("default_sigma={a b c d}", "number")]:
        with pytest.raises(InputError, match=re.escape(part)):
            parse_gap_fit_command(bad)


def test_core_baseline():
    assert "core_file" not in parse_gap_fit_command("core_param_file=pair.xml")
    got = parse_gap_fit_command("core_param_file=pair.xml core_ip_args={IP Glue}")
    assert got["core_file"] == "pair.xml"
    got = parse_gap_fit_command("baseline_ip_args={IP Tabulated}")
    assert got["core_file"] == "quip_params.xml"


@pytest.mark.parametrize("cmd, param, part", [
    ("at_file=a.xyz foo=1", "foo", "unknown gap_fit option"),
    ("at_file=a.xyz at_file=b.xyz", "atoms_filename", "given twice"),
    ("at_file=a.xyz atoms_filename=b.xyz", "atoms_filename", "given twice"),
    ("virial_parameter_name=dft_virial", "virial_parameter_name", "stress = -virial / volume"),
    ("local_property0={H:1}", "local_property0", "local properties"),
    ("e0_method=average", "e0_method", "give e0 explicitly"),
    ("e0_method=median", "e0_method", "unknown e0_method"),
    ("sigma_per_atom=F", "kernel_regularisation_is_per_atom", "per atom"),
    ("sparsify_only_no_fit=T", "sparsify_only_no_fit", "--dry-run"),
    ("config_type_parameter_name=kind", "config_type_parameter_name", "info['config_type']"),
    ("sigma_parameter_name=err", "kernel_regularisation_parameter_name", "energy_sigma"),
    ("parameter_name_prefix=dft_", "parameter_name_prefix", "full key names"),
    ("force_mask_parameter_name=mask", "force_mask_parameter_name", "mask"),
    ("linear_system_dump_file=ls", "linear_system_dump_file", "not supported"),
    ("sparse_jitter=0", "sparse_jitter", "positive"),
    ("rnd_seed=x", "rnd_seed", "whole number"),
    ("gap={soap foo=1}", "gap", "gap_fit option gap: term 1 (soap): unknown key 'foo'"),
    ("--help", "--help", "gapfit fit --help"),
])
def test_command_errors(cmd, param, part):
    with pytest.raises(InputError) as info:
        parse_gap_fit_command(cmd)
    assert part in str(info.value), str(info.value)
    assert info.value.param == param


def test_command_neutral_and_ignored_options():
    got = parse_gap_fit_command("at_file=a.xyz verbosity=NERD openmp_chunk_size=100 mpi_blocksize_cols=50 "
                                "sparse_separate_file=F do_copy_at_file=T export_covariance=T dryrun=T "
                                "config_type_parameter_name=config_type sigma_per_atom=T rnd_seed=-1 "
                                "hessian_delta=0.01 stress_parameter_name=REF_stress")
    assert got["params"] == {"stress_key": "REF_stress"}
    assert got["dry_run"] is True
    assert any("never copies" in n for n in got["notes"])
    assert not any("virials" in n for n in got["notes"])


def test_config_file(tmp_path):
    cfg = tmp_path / "gap.cfg"
    cfg.write_text("at_file=train.xyz\ngap={soap cutoff=4.0\n  n_max=6}\ndefault_sigma={0.002 0.1 0.05 0}\n")
    got = parse_gap_fit_command(f"gap_fit config_file={cfg}")
    assert got["train"] == "train.xyz"
    assert got["terms"] == [{"type": "soap", "cutoff": 4.0, "n_max": 6}]
    with pytest.raises(InputError, match="either config_file or the options"):
        parse_gap_fit_command(f"config_file={cfg} at_file=x.xyz")
    with pytest.raises(InputError, match="cannot read it"):
        parse_gap_fit_command(f"config_file={tmp_path / 'missing.cfg'}")
    loop = tmp_path / "loop.cfg"
    loop.write_text(f"config_file={loop}")
    with pytest.raises(InputError, match="cannot name another one"):
        parse_gap_fit_command(f"config_file={loop}")


# ------------------------------------------------------------------ the documentation
def _blocks(text: str, lang: str):
    return [b.strip() for b in re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)]


def test_docs_worked_example_is_consistent():
    doc = (ROOT / "docs" / "gap_fit.md").read_text(encoding="utf-8")
    bash = _blocks(doc, "bash")
    gap_fit_cmd = next(b for b in bash if b.startswith("gap_fit "))
    cli = next(b for b in bash if b.startswith("gapfit fit ") and "--gap" in b)
    config = yaml.safe_load(next(b for b in _blocks(doc, "yaml") if "terms:" in b))
    sigmas = yaml.safe_load(next(b for b in _blocks(doc, "yaml") if "terms:" not in b))

    got = parse_gap_fit_command(gap_fit_cmd)
    terms = config.pop("terms")
    assert got["terms"] == terms
    assert got["params"] == config
    check_params(config)
    assert got["train"] == "si_train.xyz" and got["output"] == "si.npz"

    # the command-line form: the same terms and parameters
    gap = re.search(r'--gap "([^"]*)"', cli).group(1)
    assert parse_gap_string(gap) == terms
    assert gap == format_gap_string(terms)
    flags = dict(re.findall(r"--([a-z-]+) (\S+)", cli.replace("\\\n", " ")))
    flags.pop("gap", None)
    names = {"sigma-energy": "sigma_energy", "sigma-forces": "sigma_forces", "sigma-virial": "sigma_virial",
             "jitter": "jitter", "seed": "seed", "energy-key": "energy_key", "forces-key": "forces_key"}
    names["stress-key"] = "stress_key"

    def value(text):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text
    cli_params = {names[k]: value(v) for k, v in flags.items() if k in names}
    assert len(cli_params) == len(names)
    assert {**cli_params, **sigmas} == config
