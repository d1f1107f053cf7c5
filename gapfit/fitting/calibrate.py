"""The fit's calibration step: scales of the predicted standard deviations from held-out frames."""
from __future__ import annotations

import logging
from typing import Sequence

from ase import Atoms

from ..calibration import describe_scales, fit_scales
from ..data import Labels
from ..predictor import predict
from ..state import FittedState

log = logging.getLogger("gapfit")


def fit_calibration(state: FittedState, cal_frames: Sequence[Atoms], true_labels: Sequence[Labels], *,
                    progress: bool) -> dict:
    """Fit the scales on the held-out frames with the interim weights of ``state``; returns the calibration record.

    ``true_labels``: the held-out frames' labels (with the baseline in; the
    predictions include it).
    """
    preds = predict(state, cal_frames, uncertainty=True, calibrated=False, progress=progress)
    scales = fit_scales(preds, true_labels)
    log.info("uncertainty calibration on %d held-out frames: %s", len(cal_frames),
             describe_scales(scales, preds, true_labels))
    return {"method": "held-out frames, 95.45 % of |error|/std within 2", "n_frames": len(cal_frames), **scales}

