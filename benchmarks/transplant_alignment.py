"""How far each face's own face -> chip transform strays from the fixed (median) one a transplanted
student resamples by (trainer/transplant.py): the mean displacement, in the 224 face, of the level1
junction grid's cell centres, in face pixels and latent cells (16 px), over the views of a taught
set (unaugmented and augmented) and over a set of aligned faces (dlib's 5-point fit done here).
Prints JSON; results/transplant-curves/README.md gives a run.

    python benchmarks/transplant_alignment.py TAUGHT_ROOT TAUGHT_SET FACES_ROOT [FACES_SET]
"""
import json
import sys

import numpy as np
from cdfv.shards import open_shard_set
from cdfv.eval.facemodels import load_face_model, face_landmarks, chip_transform, DLIB_PADDING
from cdfv.trainer.transplant import median_transform
from cdfv.eval.dlib_arch import CHIP

def centres_in_face(T, side=17):
    M = np.vstack([np.asarray(T), [0, 0, 1]]); inv = np.linalg.inv(M)[:2]
    c = (np.arange(side) + 0.5) * CHIP / side - 0.5
    u, v = np.meshgrid(c, c)
    return np.stack([u, v, np.ones_like(u)], -1) @ inv.T

views = [s["json"] for s in open_shard_set(sys.argv[2], sys.argv[1]).samples(("json",))]
plain = [v["teacher"]["chip"] for v in views if not v["view"]["augmented"]]
aug = [v["teacher"]["chip"] for v in views if v["view"]["augmented"]]
fixed = centres_in_face(median_transform(plain))
m = load_face_model("dlib")
lfw = []
for s in open_shard_set(sys.argv[4] if len(sys.argv) > 4 else "faces", sys.argv[3]).samples(("png", "json")):
    face = np.ascontiguousarray(s["png"])
    [shape] = m.shapes([face], [face_landmarks(s["json"])])
    lfw.append(chip_transform(m._dlib.get_face_chip_details(shape, CHIP, DLIB_PADDING)))
out = {"fixed_face_to_chip": median_transform(plain)}
for name, ts in (("celeba_unaugmented", plain), ("celeba_augmented", aug), ("faces", lfw)):
    d = np.array([np.linalg.norm(centres_in_face(t) - fixed, axis=-1).mean() for t in ts])
    out[name] = {"faces": len(ts), "mean_px": round(float(d.mean()), 2), "median_px": round(float(np.median(d)), 2),
                 "p90_px": round(float(np.percentile(d, 90)), 2), "mean_cells": round(float(d.mean() / 16), 3),
                 "p90_cells": round(float(np.percentile(d, 90) / 16), 3)}
print(json.dumps(out, indent=1))
