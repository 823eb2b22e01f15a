"""OpenVINO on the CPU: fp32 from the parity-checked ONNX file, int8 from NNCF (compress/int8), timed like the others.

Two settings decide whether an OpenVINO figure means what its column says. OpenVINO's CPU
plugin runs fp32 models in bf16 by default on CPUs that have bf16 (AVX512_BF16, AMX): an "fp32"
row timed that way would be a bf16 row, so fp32 is pinned with INFERENCE_PRECISION_HINT=f32
and parity-checked against PyTorch. And the thread count is the one every runtime uses
(INFERENCE_NUM_THREADS), one stream, latency hint. Each batch size is compiled with a static
shape, as OpenVINO's own benchmark_app does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch

from compress.errors import CompressError
from compress.log import log
from compress.measuring.openvino_compile import compile_file, missing, runner, settings, version
from compress.measuring.runtimes._registry import register
from compress.measuring.runtimes.onnx_runtime import labels

if TYPE_CHECKING:
    from compress.measuring.subject import Measurement

OPENVINO_CPU = "openvino"
PARITY_ATOL = 1e-3  # OpenVINO fp32 may fuse and reorder more than ONNX Runtime; still far below a class flip


def logits(compiled: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(compiled(np.ascontiguousarray(x, dtype=np.float32))[compiled.output(0)])


def checked(model: torch.nn.Module | None, path: Path, threads: int | None, batch: int,
            inputs: torch.Tensor) -> Any:
    """The static-batch compile that is timed, refused unless it reproduces PyTorch on real images of that batch
    and runs at the precision asked for (read back from the compiled model, not the hint passed in)."""
    from compress.measuring.runtimes.torch_compile import batch_of

    compiled = compile_file(path, threads, batch)
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)  # an openvino.Type: "f32"
    if model is not None and precision != "f32":
        raise CompressError(f"OpenVINO compiled the fp32 model at {precision}, not f32: its figure would not be fp32")
    if model is not None:
        x = batch_of(inputs.float(), batch)
        with torch.inference_mode():
            want = model.cpu().eval()(x).numpy()
        diff = float(np.abs(logits(compiled, x.numpy()) - want).max())
        if not diff <= PARITY_ATOL:
            raise CompressError(f"OpenVINO's batch-{batch} model does not reproduce PyTorch: max |OpenVINO - "
                                f"PyTorch| = {diff:.3g}, above {PARITY_ATOL:g}")
    return compiled


def predict(path: Path, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
            threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels from the OpenVINO model itself (so an NNCF int8 row's accuracy is int8's)."""
    compiled = compile_file(path, threads)
    return labels(lambda x: logits(compiled, x), batches)


def _file(m: Measurement) -> tuple[Path | None, str | None]:
    """What OpenVINO times: an NNCF int8 IR, or the fp32 ONNX export; else None and why not."""
    art = m.subject.artifact
    if art.ir is not None:
        return art.ir, None
    onnx = m.onnx()
    if onnx is not None and art.dtype == "float32":
        return onnx, None
    return None, f"the model is {art.backend}; OpenVINO times fp32 exports and --backend openvino int8"


def _score(m: Measurement) -> tuple[np.ndarray, np.ndarray]:
    assert m.subject.artifact.ir is not None
    return predict(m.subject.artifact.ir, m.test_loader, m.cfg.threads)


def _memory(m: Measurement) -> Any:
    from compress.measuring import memory
    from compress.measuring.cpuload import affinity_cores

    path, _ = _file(m)
    return None if path is None else memory.Job(memory.openvino_file, (path, m.cfg.threads or affinity_cores(),
                                                                       m.subject.shape), m.cfg.batches, ("openvino",))


@register(OPENVINO_CPU, "OpenVINO (CPU)", order=40, help="OpenVINO, CPU", reads_onnx=True,
          score=_score, scores=lambda artifact: artifact.ir is not None, memory=_memory)
def time_openvino(m: Measurement) -> None:
    """OpenVINO on the CPU, fp32 pinned (not its bf16 default), parity-checked; n/a with the reason if it cannot."""
    path, why = _file(m)
    why = missing() or why
    if why or path is None:
        m.timings.notes[OPENVINO_CPU] = f"n/a ({why})"
        return
    ref, shape, threads = m.reference_onnx(), m.subject.shape, m.cfg.threads
    log(f"timing {m.subject.label} with OpenVINO on CPU" + m.against(ref))
    try:
        inputs = m.check_inputs()  # fp32: each static-batch model that is timed must reproduce PyTorch first
        m.time(OPENVINO_CPU, lambda b: runner(checked(m.module, path, threads, b, inputs), shape, b),
               (lambda b: runner(compile_file(ref, threads, b), shape, b)) if ref is not None else None)
        m.timings.notes[OPENVINO_CPU] = f"OpenVINO {version()} {settings(threads)}"
    except CompressError as exc:
        m.timings.drop(OPENVINO_CPU, str(exc))
