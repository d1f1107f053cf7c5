"""GAP as a scikit-learn estimator: parameters declared once, clone, set_params, and a fit that publishes its
state only when complete."""
import inspect

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

import gapfit
from gapfit.errors import InputError
from gapfit.fitting import pipeline

SMALL_TERMS = [{"type": "distance_2b", "cutoff": 4.5, "n_sparse": 12},
               {"type": "soap", "cutoff": 4.5, "n_max": 3, "l_max": 3, "n_sparse": 25}]


def test_parameters_come_from_the_signature():
    names = [p for p in inspect.signature(gapfit.GAP.__init__).parameters if p != "self"]
    assert sorted(gapfit.GAP().get_params(deep=True)) == sorted(names)
    assert gapfit.GAP().get_params(deep=False) == gapfit.GAP().get_params(deep=True)


def test_clone_keeps_the_parameters_and_drops_the_fit(cu_train):
    model = gapfit.GAP(n_max=6, sigma_forces=0.1, config_type_sigma={"rattled": {"forces": 0.2}})
    copy = clone(model)
    assert copy is not model
    assert copy.get_params() == model.get_params()
    assert copy.n_max == 6 and copy.config_type_sigma == {"rattled": {"forces": 0.2}}
    assert copy.config_type_sigma is not model.config_type_sigma  # parameters are copied, not shared
    fitted = gapfit.GAP(terms=SMALL_TERMS, calibration_fraction=0.0, hygiene=False).fit(cu_train[:8])
    assert not hasattr(clone(fitted), "state_")
    check_is_fitted(fitted)
    with pytest.raises(NotFittedError):
        check_is_fitted(clone(fitted))


def test_clone_shares_the_delta_learning_calculator():
    """A calculator may hold what cannot be copied (here a lock): clone shares it, as the fit never changes it."""
    import threading

    from ase.calculators.emt import EMT
    calc = EMT()
    calc.lock = threading.Lock()
    model = gapfit.GAP(baseline=calc, terms=SMALL_TERMS)
    copy = clone(model)
    assert copy.baseline is calc
    assert copy.terms == model.terms and copy.terms is not model.terms


def test_parameters_in_signature_order():
    names = [p for p in inspect.signature(gapfit.GAP.__init__).parameters if p != "self"]
    assert list(gapfit.GAP().get_params()) == names


def test_set_params_sets_and_refuses_unknown_names():
    model = gapfit.GAP()
    assert model.set_params(n_max=5, seed=3) is model
    assert (model.n_max, model.seed) == (5, 3)
    with pytest.raises(ValueError, match="n_maks"):
        model.set_params(n_maks=5)


def _bad_frames(frames):
    """A copy of ``frames`` whose third frame's energy is NaN."""
    out = [a.copy() for a in frames]
    for a, b in zip(out, frames):
        a.calc = b.calc
    bad = out[2]
    bad.calc = None
    bad.info["energy"] = float("nan")
    return out


def test_a_failed_refit_leaves_the_previous_model(cu_train, monkeypatch):
    frames = cu_train[:12]
    model = gapfit.GAP(terms=SMALL_TERMS, calibration_fraction=0.0).fit(frames)
    state, hygiene = model.state_, model.hygiene_
    before = model.predict(cu_train[20:23], uncertainty=True)

    # bad data: refused by the survey, before any descriptor
    with pytest.raises(InputError, match="energy"):
        model.fit(_bad_frames(frames))
    # a failure at the fit's last step (after the solve), once everything else was computed
    def broken_hygiene(self, *args, **kwargs):
        raise RuntimeError("hygiene failed")
    monkeypatch.setattr(pipeline.FitRun, "hygiene", broken_hygiene)
    with pytest.raises(RuntimeError, match="hygiene failed"):
        model.set_params(sigma_forces=0.2).fit(frames)

    assert model.state_ is state and model.hygiene_ is hygiene
    after = model.predict(cu_train[20:23], uncertainty=True)
    for p, q in zip(before, after):
        assert p.energy == q.energy and p.energy_std == q.energy_std
        np.testing.assert_array_equal(p.forces, q.forces)
        np.testing.assert_array_equal(p.forces_std, q.forces_std)


def test_old_import_paths_still_work(cu_train, tmp_path):
    from gapfit.model import FittedState
    from gapfit.model_io import load_model, model_writer, save_model
    from gapfit.state import FittedState as StateHome
    assert FittedState is StateHome
    model = gapfit.GAP(terms=SMALL_TERMS, calibration_fraction=0.0, hygiene=False).fit(cu_train[:8])
    save_model(model, str(tmp_path / "a.npz"))
    with open(tmp_path / "b.npz", "wb") as fh:
        model_writer(model)(fh)
    for name in ("a.npz", "b.npz"):
        loaded = load_model(str(tmp_path / name))
        assert isinstance(loaded, gapfit.GAP) and isinstance(loaded.state_, FittedState)
        np.testing.assert_array_equal(loaded.alpha_, model.alpha_)
        assert loaded.predict(cu_train[9])[0].energy == model.predict(cu_train[9])[0].energy
