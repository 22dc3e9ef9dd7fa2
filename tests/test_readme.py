"""The README's library example runs as printed (it is the documentation of the public API)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def library_example() -> str:
    section = README.read_text().split("## Using cdfv as a library", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the library section holds one Python example"
    return blocks[0]


def test_the_readme_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(library_example(), str(README), "exec"), scope)
    assert scope["y_hat"].shape == (2, 192, 16, 16)
    assert scope["latents"].shape == (2, 192, 14, 14)
    assert scope["embeddings"].shape[0] == 2
    np.testing.assert_allclose(np.linalg.norm(scope["embeddings"], axis=1), 1.0, rtol=1e-5)
    assert (tmp_path / "cresnet39.pt").is_file()
    assert scope["codec_id"] == "untrained:seed0"
