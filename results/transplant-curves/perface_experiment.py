"""What per-face alignment would buy a transplanted student (issue 16), measured outside the
trainer: the same adapter and frozen dlib tail, AdamW (lr 1e-3, one-cycle) for a few epochs on the
q1 CelebA views in memory, its resampling grid either the fixed one (the trainer's) or each face's
own dlib chip transform (training views: teacher.chip; LFW faces: dlib's 5-point fit on the
original face, an oracle a deployed system would replace by landmarks sent with the bitstream).
The exact script run (paths as on the machine it ran on); results in README.md.

    python perface_experiment.py level2 1e-3 4 perface|fixed
"""
import sys, time, numpy as np, torch
from cdfv.shards import open_shard_set, Damage, spec
from cdfv.trainer.data import probe_input
from cdfv.trainer.train import TrainConfig, transplant_model
from cdfv.trainer.transplant import TransplantTask, teacher_mean, sampling_grid
from cdfv.eval.metrics import point_metrics
from cdfv.eval.protocol import read_pairs
from cdfv.eval.facemodels import load_face_model, face_landmarks, chip_transform, DLIB_PADDING
from cdfv.eval.dlib_arch import JUNCTIONS
junction, lr, epochs, perface = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "perface"
torch.manual_seed(0)
ss = open_shard_set("latents-q1", "/tmp/tp/shards/celeba"); probe = probe_input(ss)
cfg = TrainConfig(shards="x", out="x", junction=junction)
model = transplant_model(ss, probe, cfg)
task = TransplantTask(model, None, 0.0, 1.0, True, teacher_mean(ss, Damage("error")))
C, S = JUNCTIONS[junction]
L, TT, MP, G = [], [], [], []
for s in ss.samples(("latent.npy", "teacher.npy", spec.teacher_map(junction), "json")):
    L.append(s["latent.npy"]); TT.append(s["teacher.npy"]); MP.append(s[spec.teacher_map(junction)])
    G.append(sampling_grid(s["json"]["teacher"]["chip"], S)[0] if perface else model.adapter.grid[0])
L = torch.from_numpy(np.stack(L).astype(np.float32)); TT = torch.from_numpy(np.stack(TT)); MP = torch.from_numpy(np.stack(MP).astype(np.float32)).flatten(1); G = torch.stack(G)
pairs = read_pairs("/work/shared/data/lfw/meta/pairsDevTest.txt")
lat = {}; grids = {}
dl = load_face_model("dlib")
faces = {s["__key__"]: s for s in open_shard_set("faces", "/tmp/tp/shards/lfw").samples(("png", "json"))}
for s in open_shard_set("latents-q1", "/tmp/tp/shards/lfw").samples(("latent.npy",)):
    k = s["__key__"]; lat[k] = s["latent.npy"]
    if perface:
        f = faces[k]; face = np.ascontiguousarray(f["png"]); [shape] = dl.shapes([face], [face_landmarks(f["json"])])
        grids[k] = sampling_grid(chip_transform(dl._dlib.get_face_chip_details(shape, 150, DLIB_PADDING)), S)[0]
    else:
        grids[k] = model.adapter.grid[0]
keys = sorted(lat); X = torch.from_numpy(np.stack([lat[k] for k in keys]).astype(np.float32)); XG = torch.stack([grids[k] for k in keys]); idx = {k: i for i, k in enumerate(keys)}
labels = np.array([p.label for p in pairs], int)
params = [p for p in task.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
steps = len(L) // 64
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.1)
g = torch.Generator().manual_seed(0); t0 = time.time()
for ep in range(epochs):
    perm = torch.randperm(len(L), generator=g); task.train(); cs = []
    for b in range(steps):
        i = perm[b*64:(b+1)*64]
        model.adapter.grid = G[i]
        loss, sums = task(L[i], torch.zeros(64, dtype=torch.long), torch.cat([TT[i], MP[i]], 1))
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        cs.append((sums["cos"].item()/64, sums["centred_cos"].item()/64, sums["map"].item()/64))
    task.eval(); es = []
    with torch.no_grad():
        for j in range(0, len(X), 128):
            model.adapter.grid = XG[j:j+128]; es.append(model(X[j:j+128]))
    e = torch.nn.functional.normalize(torch.cat(es), dim=1).numpy()
    sc = np.array([float(e[idx[p.probe]] @ e[idx[p.reference]]) for p in pairs]); m = point_metrics(labels, sc)
    print(f"{'perface' if perface else 'fixed'} ep {ep} train cos/ccos/map {np.mean(cs, 0).round(3)} tar1e-2 {m['tar_at_far_1e-2']:.3f} auc {m['auc']:.3f} {time.time()-t0:.0f}s", flush=True)
