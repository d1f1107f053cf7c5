"""The fit: from an estimator's parameters and a frame source to a complete :class:`gapfit.state.FittedState`.

- :mod:`.survey`: the first pass, every frame checked;
- :mod:`.recipe`: the terms (given, or the default recipe);
- :mod:`.plan`: what the passes need (:class:`.plan.FitPlan`, sent to workers), the blocks, the calibration split;
- :mod:`.baseline`: the baseline's parts, e0 and δ;
- :mod:`.rows`: the σ-weighted rows of the training system and the residual labels;
- :mod:`.passes`: the passes over blocks of frames (in this process or on Dask workers);
- :mod:`.optimise`, :mod:`.calibrate`, :mod:`.hygiene_pass`: the steps after the rows;
- :mod:`.pipeline`: :func:`fit_state`, the steps in order.
"""
from .pipeline import fit_state

__all__ = ["fit_state"]
