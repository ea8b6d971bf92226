"""The demo's success line needs meaningful success, not one TRACKING frame."""

from reasonvos_ros.demo import check_success


def test_success_needs_tracking_on_most_frames_and_detector_agreement():
    good = {"result_frames_out": 70, "tracking_after_acquisition": 0.9, "detector_agrees": 0.93}
    assert check_success(good)[0]
    ok, why = check_success({**good, "tracking_after_acquisition": 0.1})  # e.g. one TRACKING frame, then LOST
    assert not ok and "TRACKING on only 10%" in why
    ok, why = check_success({**good, "detector_agrees": 0.5})  # masks on pavement
    assert not ok and "detector sees a person at only 50%" in why
    assert not check_success({"result_frames_out": 0})[0]
