"""One cap on the CPU threads cdfv uses: `--threads N` on every command, or $CDFV_THREADS.

torch, OpenMP, MKL, OpenBLAS and OpenCV each start a thread per core by default; on a machine shared
with others they then spin against each other (a 10 s training took 226 s on a loaded 2-core
machine). The cap is written to the environment variables those libraries read when they load, so
it holds for libraries not yet imported and for every worker process started later (DataLoader
workers, range-coder and dlib pools), and applied directly to torch and OpenCV where they are
already loaded. Worker processes that cdfv sizes by the core count (dlib's pool, range coders) take
the cap as their core count too.
"""
from __future__ import annotations

import os
import sys
from typing import Any

ENV = "CDFV_THREADS"
LIBRARY_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")


def limit() -> int | None:
    """The cap in force, or None."""
    value = os.environ.get(ENV)
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"${ENV}={value!r}: expected a number of threads such as 2") from None
    if n < 1:
        raise ValueError(f"${ENV}={value!r}: need at least 1 thread")
    return n


def cores() -> int:
    """The cores cdfv may use: the cap, else every core."""
    return limit() or os.cpu_count() or 1


def cap(n: int) -> None:
    """Caps every library's CPU threads at n, now and in processes started later."""
    if n < 1:
        raise ValueError(f"--threads {n}: need at least 1 thread")
    for name in (ENV, *LIBRARY_ENV):
        os.environ[name] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(n)


def onnx_session_options() -> Any:
    """onnxruntime's session options under the cap (onnxruntime reads none of the variables above)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = limit() or 0  # 0: onnxruntime's default, a thread per core
    return options
