"""Measured quality floor of the lite CPU pipeline on composited clips with exact ground truth.

Measured (benchmarks/quality_lite.py, this machine): J&F 0.929 on "occluded" (the dog passes behind a pillar,
key frame 27, backward pass through the occlusion) and 0.950 on "exit" (the dog leaves the view; drift detection
empties the masks after it left). The floors below leave room for run-to-run differences of OpenCV's trackers.
"""

import sys
from pathlib import Path

import pytest

from reasonvos_ros.data.media import media_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytestmark = pytest.mark.skipif(
    not media_available("vtest.avi", "dog.jpg", "building.jpg"), reason="needs Debian opencv-doc and darknet media"
)


@pytest.mark.parametrize("clip, floor", [("occluded", 0.85), ("exit", 0.85)])
def test_lite_pipeline_j_and_f_floor(clip, floor):
    from quality_lite import clip_scores

    scores = clip_scores(clip)
    assert scores["J&F"] >= floor, scores
