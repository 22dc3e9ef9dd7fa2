"""dlib on the decoded pairsDevTrain probes (first 500+500 pairs) of one codec file, as codec_curve scores a point (step300.json of Gc).

    python results/identity-curves/point.py CODEC.pt   # run in the folder holding the lfw/ faces set (here /tmp/id)
"""
import json, sys
from pathlib import Path
import torch
from cdfv.eval.development import DecodedPairs, development_pairs
from cdfv.eval.facemodels import load_face_model
from cdfv.pipeline.codecs import CodecSpec, load_codec
from cdfv.shards import open_shard_set
from cdfv.trainer.codec_curve import code_faces

torch.set_num_threads(1)
weights = Path(sys.argv[1])
spec = CodecSpec("bmshj2018-hyperprior", 1)
model, wid = load_codec(spec, weights=weights)
pairs, record = development_pairs(Path("/work/shared/data/lfw/meta/pairsDevTrain.txt"), limit=500)
scorer = DecodedPairs(pairs, open_shard_set("faces", "/tmp/id/lfw"), load_face_model("dlib"))
means, decoded = code_faces(model, spec, scorer.probe_faces())
row = {**means, **{f"dlib_{k}": v for k, v in scorer.score(decoded).items()}}
print(json.dumps({"weights": wid, "eval": record, "point": row}, indent=1))
