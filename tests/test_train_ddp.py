"""torchrun with two CPU processes (gloo): uneven shards per rank, no rank starves or hangs."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from test_train_data import latent_set


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_finish_both_phases_with_equal_steps(tmp_path: Path) -> None:
    # 5 shards of unequal sizes for 2 ranks: 37 samples -> 37 // (2 ranks * 4) = 4 steps an epoch
    latent_set(tmp_path, "lat", [9, 7, 8, 6, 7], m=8)
    latent_set(tmp_path, "val", [5, 4], m=8)  # 9 held-out samples: a batch of 4 on each rank
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "cdfv.trainer", "--shards", "lat", "--val-shards", "val", "--root", str(tmp_path), "--arch", "cresnet39", "--width", "4",
           "--embedding-dim", "16", "--batch-size", "4", "--workers", "0", "--classify-epochs", "2",
           "--arcface-epochs", "1", "--device", "cpu", "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["phase"] == "classify" and r["split"] == "train"]
    assert [r["epoch"] for r in train_rows][-1] == 1 and train_rows[-1]["step"] == 8
    assert (out / "model.pt").is_file()
    assert json.loads(done.stdout) == json.loads((out / "summary.json").read_text())  # rank 0's summary, once
    val = [r for r in rows if r["phase"] == "classify" and r["split"] == "val"]
    assert [(r["faces"], r["identities"]) for r in val] == [(8, 4), (8, 4)]  # both ranks' faces, counted together
