"""The start codec's point of the identity curves (step 0), and its training rate on whole faces:
dlib on its decoded pairsDevTrain probes, and its rate of CelebA training faces per face pixel as
--rate-target steers it. The curves A-I (commit 84f6c99 and before) steered the training loss's
noisy estimate, which this script then gave (0.3065, base-point.json); it now gives the coder's
rate (trainer.codec_train.faces_rate), which the Gc curve holds.
The exact script that was run, with its paths (/tmp/id/lfw, /tmp/id/celeba: README's sets):

    python base_point.py base/codec.pt base-point.json 500
"""
import json, sys
from pathlib import Path
import numpy as np, torch
from cdfv.eval.development import DecodedPairs, development_pairs
from cdfv.eval.facemodels import load_face_model
from cdfv.pipeline.codecs import CodecSpec, load_codec
from cdfv.shards import open_shard_set, spec as S
from cdfv.trainer.codec_curve import code_faces, jpeg_at
from cdfv.trainer.codec_train import faces_rate

torch.set_num_threads(1)
weights, out = Path(sys.argv[1]), Path(sys.argv[2])
codec_spec = CodecSpec("bmshj2018-hyperprior", 1)
model, wid = load_codec(codec_spec, weights=weights)
faces = [s[S.IMAGE] for _, s in zip(range(256), open_shard_set("faces", "/tmp/id/celeba").samples((S.IMAGE,)))]
train_rate = faces_rate(model, faces)  # what --rate-target steers now (the curves A-I steered the noisy estimate)
print('training rate', train_rate, flush=True)
pairs, record = development_pairs(Path("/work/shared/data/lfw/meta/pairsDevTrain.txt"), limit=int(sys.argv[3]))
scorer = DecodedPairs(pairs, open_shard_set("faces", "/tmp/id/lfw"), load_face_model("dlib"))
means, decoded = code_faces(model, codec_spec, scorer.probe_faces())
row = {"step": 0, **means, **{f"dlib_{k}": v for k, v in scorer.score(decoded).items()}, **jpeg_at(scorer.probe_faces(), means["bpp"])}
result = {"weights": wid, "eval": record, "original": scorer.original(), "point": row, "training_rate_face_bpp": train_rate}
out.write_text(json.dumps(result, indent=1))
print(json.dumps({k: v for k, v in result.items() if k != "eval"}, indent=1))
