"""Face selection (thesis 5.4 heuristics, on hand-made candidates and on RetinaFace) and
alignment to 224x224."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from cdfv.pipeline.align import ARCFACE_TEMPLATE_112, METHODS, align, align_crop, align_similarity, aspect_size, prealigned, thesis_size
from cdfv.pipeline.detect import (FLOOR, SECOND_SIDE, WORKING_SIDE, Candidate, centred_square_area, detect, nms, select_face,
                                  thresholds)
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


def test_a_picture_far_larger_than_the_detector_input_is_detected(lfw_face):
    """The 250x250 LFW face enlarged 16x: detected on the picture downscaled to WORKING_SIDE, box
    and landmarks mapped back to the 4000x4000 pixels, where they match the original's scaled by 16
    (the detector sees the face at 640 instead of 250 px, hence a few percent)."""
    rgb, det = lfw_face
    big = detect(detector(), cv2.resize(rgb, (4000, 4000), interpolation=cv2.INTER_LINEAR))
    assert big.status == "ok" and big.score > 0.985
    np.testing.assert_allclose(np.array(big.box) / 16, det.box, atol=0.04 * 250)
    np.testing.assert_allclose(np.array(big.landmarks) / 16, det.landmarks, atol=0.02 * 250)


@pytest.mark.parametrize("side", [200, 240])
def test_a_small_face_in_a_large_picture_is_found_at_the_second_scale(lfw_face, side):
    """An LFW picture shrunk to 200-240 px in the middle of a 4000x3000 one: its face (about 80 px)
    is 12-15 px at 640, which RetinaFace misses; the second pass at 1280 finds it at the start
    threshold, box and landmarks on the face in the large picture's pixels."""
    rgb, det = lfw_face
    canvas = np.random.default_rng(0).integers(90, 170, (3000, 4000, 3), dtype=np.uint8)
    top, left = 1500 - side // 2, 2000 - side // 2
    canvas[top : top + side, left : left + side] = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    assert select_face(detector().candidates(canvas, WORKING_SIDE), 4000, 3000).status == "no_face"
    found = detect(detector(), canvas)
    assert found.status == "ok" and found.threshold == 0.985 and found.side == SECOND_SIDE
    scale = side / rgb.shape[0]
    expected = np.array(det.box) * scale + [left, top, left, top]
    np.testing.assert_allclose(found.box, expected, atol=0.08 * side)
    np.testing.assert_allclose(found.landmarks, np.array(det.landmarks) * scale + [left, top], atol=0.05 * side)


def _random_tied_candidates(n=400, seed=0):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 60, size=(n, 2))
    boxes = np.hstack([corner, corner + rng.uniform(20, 40, size=(n, 2))])
    scores = rng.choice(np.float32([0.71, 0.8, 0.9, 0.95, 0.99]), size=n).astype(np.float64)  # many ties
    return boxes, scores


def test_nms_once_at_the_floor_equals_nms_at_each_threshold_with_tied_scores():
    """The property detect relies on: the faces kept at FLOOR and then filtered by a threshold are
    exactly those kept when NMS runs on only the candidates above that threshold, ties included."""
    boxes, scores = _random_tied_candidates()
    at_floor = np.nonzero(scores > FLOOR)[0]
    kept_at_floor = at_floor[nms(boxes[at_floor], scores[at_floor], 0.4)]
    assert 0 < len(kept_at_floor) < len(at_floor)  # some boxes are suppressed
    for t in thresholds():
        above = np.nonzero(scores > t)[0]
        rerun = above[nms(boxes[above], scores[above], 0.4)]
        assert sorted(kept_at_floor[scores[kept_at_floor] > t]) == sorted(rerun), t


def test_nms_breaks_ties_by_index_whatever_else_is_present():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40], [0, 1, 10, 11]], dtype=float)
    scores = np.array([0.9, 0.9, 0.95, 0.9])
    assert nms(boxes, scores, 0.4).tolist() == [2, 0]  # 0 and 1, 3 overlap; equal scores: the first index wins
    assert nms(boxes[[1, 3]], scores[[1, 3]], 0.4).tolist() == [0]  # without box 0, box 1 (now index 0) wins
    assert nms(boxes[:0], scores[:0], 0.4).tolist() == []


def test_retinaface_finds_no_face_in_a_flat_picture():
    flat = np.full((160, 160, 3), 128, np.uint8)
    assert detect(detector(), flat).status == "no_face"


def test_thesis_alignment_levels_the_eyes_on_the_real_face(lfw_face):
    rgb, det = lfw_face
    out, meta = align(rgb, det.as_dict(), "thesis")
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    (rx, ry), (lx, ly) = meta["landmarks"][0], meta["landmarks"][1]
    assert abs(ry - ly) <= 1.0 and rx < lx


def dotted_picture(points, side=200, radius=4):
    """A grey picture with a square dot of a distinct colour centred on each point (continuous
    coordinates, so the dot on pixel index i is centred at i + 0.5)."""
    rgb = np.full((side, side, 3), 120, np.uint8)
    for (x, y), colour in zip(points, COLOURS):
        i, j = int(x), int(y)
        rgb[j - radius : j + radius + 1, i - radius : i + radius + 1] = colour
    return rgb


COLOURS = ((255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 0), (255, 0, 255))


def centroid(rgb, colour):
    """Centre of the pixels of one colour, in continuous coordinates."""
    mask = (np.abs(rgb.astype(int) - colour).sum(axis=2) < 120)
    ys, xs = np.nonzero(mask)
    return xs.mean() + 0.5, ys.mean() + 0.5


def test_thesis_size_adds_the_same_margin_to_both_sides():
    assert thesis_size(120, 180) == (164, 224)  # thesis 5.4: (180, 120) -> margin 44 -> (224, 164)
    assert thesis_size(180, 120) == (224, 164)
    assert thesis_size(300, 200) == (224, 124)  # larger than 224: margin -76 on both sides
    assert thesis_size(224, 224) == (224, 224) and thesis_size(10, 10) == (224, 224)
    assert thesis_size(1, 224) == (1, 224) and thesis_size(500, 278) == (224, 2)
    assert aspect_size(300, 200) == (224, 149) and aspect_size(120, 180) == (149, 224)


@pytest.mark.parametrize("width,height", [(400, 100), (100, 324), (225, 1)])
def test_thesis_size_refuses_a_crop_whose_smaller_side_would_vanish(width, height):
    with pytest.raises(ValueError, match=f"a {width}x{height} face crop has no thesis resize to 224: .*--method aspect"):
        thesis_size(width, height)


def test_thesis_alignment_of_a_known_box_gives_the_thesis_size():
    rgb = np.full((300, 300, 3), 200, np.uint8)
    level = [[110, 120], [150, 120], [130, 150], [115, 180], [145, 180]]
    out, meta = align_crop(rgb, [80, 50, 200, 230], level, "thesis")  # a 120x180 box
    assert out.shape == (224, 224, 3) and meta["angle"] == 0.0 and meta["method"] == "thesis"
    assert meta["pad"] == [30, 0] and meta["scale"] == pytest.approx([164 / 120, 224 / 180])
    assert (out[:, :30] == 0).all() and (out[:, 30:194] == 200).all() and (out[:, 194:] == 0).all()
    big, meta = align_crop(np.full((600, 600, 3), 200, np.uint8), [50, 50, 350, 250], level, "thesis")  # 300x200
    assert meta["pad"] == [0, 50] and meta["scale"] == pytest.approx([224 / 300, 124 / 200])
    assert (big[:50] == 0).all() and (big[50:174] == 200).all() and (big[174:] == 0).all()
    with pytest.raises(ValueError, match="a 400x100 face crop has no thesis resize"):
        align_crop(np.zeros((500, 500, 3), np.uint8), [0, 0, 400, 100], level, "thesis")


def test_aspect_alignment_resizes_the_larger_side_and_zero_pads_the_other():
    rgb = np.full((300, 300, 3), 200, np.uint8)
    level = [[110, 120], [150, 120], [130, 150], [115, 180], [145, 180]]
    out, meta = align(rgb, {"box": [80, 50, 180, 250], "landmarks": level}, "aspect")  # a 100x200 box
    assert out.shape == (224, 224, 3) and meta["angle"] == 0.0 and meta["method"] == "aspect"
    assert meta["scale"] == pytest.approx([112 / 100, 224 / 200]) and meta["pad"] == [56, 0]
    assert (out[:, :56] == 0).all() and (out[:, 168:] == 0).all()
    assert (out[:, 56:168] == 200).all()


@pytest.mark.parametrize("method", ["thesis", "aspect"])
@pytest.mark.parametrize("side,box", [(200, [30, 30, 170, 190]), (600, [100, 180, 550, 540])])
def test_alignment_maps_pixels_and_landmarks_together(method, side, box):
    """Five coloured dots through crop, rotation, resize (up for a 140x160 box, down for 450x360,
    to 224x134 by the thesis) and padding: each mapped landmark lands on its dot's pixels."""
    k = side // 200
    points = [(70.5 * k, 80.5 * k), (130.5 * k, 110.5 * k), (100.5 * k, 140.5 * k), (80.5 * k, 160.5 * k), (125.5 * k, 150.5 * k)]
    rgb = dotted_picture(points, side, radius=4 * k)
    out, meta = align_crop(rgb, box, points, method)
    assert meta["angle"] == pytest.approx(math.degrees(math.atan2(30, 60)))  # eyes tilted by 26.6 degrees
    assert abs(meta["landmarks"][0][1] - meta["landmarks"][1][1]) <= 0.01  # eyes level
    for colour, mapped in zip(COLOURS, meta["landmarks"]):
        assert np.hypot(*np.subtract(centroid(out, colour), mapped)) <= 0.3, (colour, mapped)


@pytest.mark.parametrize("method", ["thesis", "aspect"])
def test_level_landmarks_map_by_crop_scale_and_pad(method):
    """Without rotation the mapping is p -> (p - crop origin) * (new size / crop size) + pad,
    with the new size and pad worked out here by hand."""
    level = [[110.0, 120.0], [150.0, 120.0], [130.0, 150.0], [115.0, 180.0], [145.0, 180.0]]
    _, meta = align_crop(np.zeros((300, 300, 3), np.uint8), [80, 50, 200, 230], level, method)  # 120x180
    new_w = 164 if method == "thesis" else 149  # 120 + 44, or round(120 * 224 / 180)
    pad = (224 - new_w) // 2
    expected = (np.array(level) - [80, 50]) * [new_w / 120, 224 / 180] + [pad, 0]
    np.testing.assert_allclose(meta["landmarks"], expected, atol=0.006)


def test_alignment_refuses_an_empty_box():
    with pytest.raises(ValueError, match="empty inside the 100x100 image"):
        align_crop(np.zeros((100, 100, 3), np.uint8), [150, 150, 190, 190], [list(p) for p in LANDMARKS])


def test_cli_method_choices_are_the_alignment_methods():
    from cdfv.pipeline.cli import main

    for command in ("align", "run"):
        option = next(p for p in main.commands[command].params if p.name == "method")
        assert tuple(option.type.choices) == METHODS


def test_similarity_alignment_maps_landmarks_onto_the_template():
    template = ARCFACE_TEMPLATE_112 * 2.0
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
    assert np.abs(np.asarray(meta["landmarks"]) - ARCFACE_TEMPLATE_112 * 2).max() < 12


def test_prealigned_pictures_are_resized_and_padded():
    out, meta = prealigned(np.full((250, 200, 3), 77, np.uint8))
    assert out.shape == (224, 224, 3) and meta["method"] == "none"
    assert meta["pad"] == [22, 0]  # 200 * 224/250 = 179 wide, (224 - 179) // 2 on the left
    assert (out[:, :22] == 0).all() and (out[:, 22 : 22 + 179] == 77).all() and (out[:, 22 + 179 :] == 0).all()
    with pytest.raises(ValueError, match="unknown alignment 'affine'"):
        align(np.zeros((50, 50, 3), np.uint8), {"box": [0, 0, 40, 40], "landmarks": LANDMARKS}, "affine")
