"""Class activation maps.

Grad-CAM (the paper's, with a fast path at the last layer: :mod:`citylens.cam.gradcam`)
and the other CAM methods at any named layer (:mod:`citylens.cam.methods`).
"""

from citylens.cam.gradcam import (
    PRECISIONS,
    CamResult,
    eval_mode,
    grad_cam,
    normalize_masks,
    pooled_weight,
)
from citylens.cam.methods import (
    GRADIENT_METHODS,
    METHODS,
    cam_map,
    explain_batch,
    mask_difference,
)

__all__ = [
    "GRADIENT_METHODS",
    "METHODS",
    "PRECISIONS",
    "CamResult",
    "cam_map",
    "eval_mode",
    "explain_batch",
    "grad_cam",
    "mask_difference",
    "normalize_masks",
    "pooled_weight",
]
