"""The defect region of an anomaly map: which part of the frame made the good-part model object.

The map is the z-score grid the model outputs (on the pooled, registered image). The region is the
connected patch of cells around the largest one that stays above half of it (and above
``min_z``), turned into a box in frame pixels through the registration's placement. Pure numpy and
OpenCV; the map itself stays on the device (local sinks and the local API get the box and score).
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_agent.registration import Placement
from edge_agent.verdict import Region


def region_of(
    amap: np.ndarray, placement: Placement, prepared_size: tuple[int, int], min_z: float = 2.0
) -> Region | None:
    """Box (frame pixels) and peak score of the hottest patch of ``amap`` (h, w); None when the map
    has nothing above ``min_z`` or is not finite."""
    if amap.ndim != 2 or not np.all(np.isfinite(amap)):
        return None
    peak_idx = int(np.argmax(amap))
    py, px = divmod(peak_idx, amap.shape[1])
    peak = float(amap[py, px])
    if peak < min_z:
        return None
    hot = (amap >= max(min_z, 0.5 * peak)).astype(np.uint8)
    _, comp = cv2.connectedComponents(hot, connectivity=8)
    ys, xs = np.nonzero(comp == comp[py, px])
    cell_w = prepared_size[0] / amap.shape[1]
    cell_h = prepared_size[1] / amap.shape[0]
    x0, y0 = xs.min() * cell_w, ys.min() * cell_h
    w, h = (xs.max() + 1) * cell_w - x0, (ys.max() + 1) * cell_h - y0
    fx, fy, fw, fh = placement.box_to_frame(float(x0), float(y0), float(w), float(h))
    return Region(fx, fy, fw, fh, peak)
