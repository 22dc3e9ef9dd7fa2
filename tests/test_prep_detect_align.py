"""Face selection (thesis 5.4 heuristics, on hand-made candidates and on RetinaFace) and
alignment to 224x224."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cdfv.pipeline.align import _TEMPLATE_112, align, align_similarity, align_thesis, prealigned
from cdfv.pipeline.detect import Candidate, centred_square_area, detect, select_face, thresholds
from cdfv.pipeline.images import read_image

from prep_helpers import detector

LANDMARKS = ((40.0, 40.0), (60.0, 40.0), (50.0, 50.0), (42.0, 60.0), (58.0, 60.0))


def face(box, score):
    return Candidate(tuple(float(v) for v in box), LANDMARKS, score)


def test_threshold_schedule():
    t = thresholds()
    assert len(t) == 58
    assert t[0] == 0.985 and t[-1] == 0.7
    assert all(math.isclose(a - b, 0.005, abs_tol=1e-9) for a, b in zip(t, t[1:]))


def test_centred_square_area_uses_smallest_edge_distance():
    assert centred_square_area((40, 30, 80, 90), 50, 50) == (2 * 10) ** 2
    assert centred_square_area((60, 0, 90, 100), 50, 50) == -1.0


def test_confident_centred_face_is_found_at_the_first_threshold():
    det = select_face([face((20, 20, 80, 80), 0.999)], 100, 100)
    assert det.status == "ok" and det.threshold == 0.985
    assert det.box == [20.0, 20.0, 80.0, 80.0] and len(det.landmarks) == 5
    assert (det.candidates, det.centred) == (1, 1)


def test_threshold_is_lowered_until_a_face_contains_the_centre():
    off_centre = face((0, 0, 30, 30), 0.99)
    centred = face((30, 30, 70, 70), 0.91)
    det = select_face([off_centre, centred], 100, 100)
    assert det.status == "ok" and det.box == list(centred.box)
    assert det.threshold == 0.905  # the first schedule value below 0.91
    assert det.score == 0.91 and (det.candidates, det.centred) == (2, 1)


def test_largest_centred_square_wins_over_a_higher_score():
    small = face((45, 45, 60, 60), 0.999)  # contains the centre, d = 5
    large_offset_box = face((10, 40, 90, 95), 0.995)  # contains the centre, d = 10
    det = select_face([small, large_offset_box], 100, 100)
    assert det.box == list(large_offset_box.box) and det.centred == 2


def test_higher_scoring_off_centre_face_loses():
    det = select_face([face((0, 0, 45, 45), 0.9999), face((35, 35, 65, 65), 0.99)], 100, 100)
    assert det.box == [35.0, 35.0, 65.0, 65.0]


def test_no_centred_face_above_floor_is_no_face():
    det = select_face([face((0, 0, 30, 30), 0.99), face((40, 40, 60, 60), 0.69)], 100, 100)
    assert det.status == "no_face" and det.box is None and det.landmarks is None
    assert det.candidates == 2 and det.centred == 0
    assert select_face([], 100, 100).status == "no_face"


@pytest.fixture(scope="module")
def lfw_face(lfw_root):
    rgb = read_image(lfw_root / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")
    return rgb, detect(detector(), rgb)


def test_retinaface_finds_the_lfw_face_with_five_landmarks(lfw_face):
    rgb, det = lfw_face
    assert det.status == "ok" and det.score > 0.985
    x1, y1, x2, y2 = det.box
    assert x1 < 125 < x2 and y1 < 125 < y2  # LFW deep-funneled faces sit at the centre of 250x250
    assert len(det.landmarks) == 5
    (rx, ry), (lx, ly) = det.landmarks[0], det.landmarks[1]
    assert rx < lx and abs(ry - ly) < 20  # right eye on the image's left, eyes near level
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in det.landmarks)


def test_retinaface_finds_no_face_in_a_flat_picture():
    flat = np.full((160, 160, 3), 128, np.uint8)
    assert detect(detector(), flat).status == "no_face"


def test_thesis_alignment_levels_the_eyes_on_the_real_face(lfw_face):
    rgb, det = lfw_face
    out, meta = align(rgb, det.as_dict(), "thesis")
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    (rx, ry), (lx, ly) = meta["landmarks"][0], meta["landmarks"][1]
    assert abs(ry - ly) <= 1.0 and rx < lx


def dotted_picture(right_eye, left_eye):
    """A grey picture with a red dot at the right eye and a blue one at the left eye."""
    rgb = np.full((200, 200, 3), 120, np.uint8)
    for (x, y), colour in ((right_eye, (255, 0, 0)), (left_eye, (0, 0, 255))):
        rgb[y - 3 : y + 4, x - 3 : x + 4] = colour
    return rgb


def centroid(rgb, colour):
    mask = (np.abs(rgb.astype(int) - colour).sum(axis=2) < 120)
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


def test_thesis_alignment_rotates_pixels_and_landmarks_together():
    right_eye, left_eye = (70, 80), (130, 110)  # tilted by about 27 degrees
    rgb = dotted_picture(right_eye, left_eye)
    landmarks = [list(right_eye), list(left_eye), [100, 120], [80, 150], [120, 150]]
    out, meta = align_thesis(rgb, [30, 30, 170, 190], landmarks)
    red, blue = centroid(out, (255, 0, 0)), centroid(out, (0, 0, 255))
    assert abs(red[1] - blue[1]) <= 1.0  # the eyes' pixels are level
    assert abs(meta["landmarks"][0][1] - meta["landmarks"][1][1]) <= 1.0
    assert np.hypot(*np.subtract(red, meta["landmarks"][0])) <= 1.5
    assert np.hypot(*np.subtract(blue, meta["landmarks"][1])) <= 1.5


def test_thesis_alignment_resizes_the_larger_side_and_zero_pads_the_other():
    rgb = np.full((300, 300, 3), 200, np.uint8)
    level = [[110, 120], [150, 120], [130, 150], [115, 180], [145, 180]]
    out, meta = align_thesis(rgb, [80, 50, 180, 250], level)  # a 100x200 box
    assert out.shape == (224, 224, 3) and meta["angle"] == 0.0
    assert meta["scale"] == pytest.approx(224 / 200) and meta["pad"] == [56, 0]
    assert (out[:, :56] == 0).all() and (out[:, 168:] == 0).all()
    assert (out[:, 56:168] == 200).all()


def test_thesis_alignment_refuses_an_empty_box():
    with pytest.raises(ValueError, match="empty inside the 100x100 image"):
        align_thesis(np.zeros((100, 100, 3), np.uint8), [150, 150, 190, 190], [list(p) for p in LANDMARKS])


def test_similarity_alignment_maps_landmarks_onto_the_template():
    template = _TEMPLATE_112 * 2.0
    angle, scale, shift = math.radians(15), 1.3, np.array([40.0, 25.0])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    landmarks = (template @ rot.T + shift).tolist()
    out, meta = align_similarity(np.full((400, 400, 3), 90, np.uint8), landmarks)
    assert out.shape == (224, 224, 3)
    np.testing.assert_allclose(meta["landmarks"], template, atol=0.05)


def test_similarity_alignment_of_the_real_face_lands_near_the_template(lfw_face):
    rgb, det = lfw_face
    out, meta = align(rgb, det.as_dict(), "similarity")
    assert out.shape == (224, 224, 3)
    assert np.abs(np.asarray(meta["landmarks"]) - _TEMPLATE_112 * 2).max() < 12


def test_prealigned_pictures_are_resized_and_padded():
    out, meta = prealigned(np.full((250, 200, 3), 77, np.uint8))
    assert out.shape == (224, 224, 3) and meta["method"] == "none"
    assert meta["pad"] == [22, 0]  # 200 * 224/250 = 179 wide, (224 - 179) // 2 on the left
    assert (out[:, :22] == 0).all() and (out[:, 22 : 22 + 179] == 77).all() and (out[:, 22 + 179 :] == 0).all()
    with pytest.raises(ValueError, match="unknown alignment 'affine'"):
        align(np.zeros((50, 50, 3), np.uint8), {"box": [0, 0, 40, 40], "landmarks": LANDMARKS}, "affine")
