"""OpenVINO on the CPU: fp32 from the parity-checked ONNX file, int8 from NNCF, timed like the others.

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

from compress.errors import CompressError, first_line
from compress.log import log, quiet
from compress.measuring.openvino_compile import compile_file, core, missing, runner, settings, version
from compress.measuring.runtimes._registry import register
from compress.measuring.runtimes.onnx_runtime import labels

if TYPE_CHECKING:
    from compress.measuring.subject import Measurement

OPENVINO_CPU = "openvino-cpu"
PARITY_ATOL = 1e-3  # OpenVINO fp32 may fuse and reorder more than ONNX Runtime; still far below a class flip


def logits(compiled: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(compiled(np.ascontiguousarray(x, dtype=np.float32))[compiled.output(0)])


def parity(model: torch.nn.Module, path: Path, inputs: torch.Tensor, threads: int | None) -> float:
    """Max |OpenVINO fp32 - PyTorch| on the logits of real test images; refuse to time a file that differs."""
    with torch.inference_mode():
        want = model.cpu().eval()(inputs.float()).numpy()
    got = logits(compile_file(path, threads), inputs.numpy())
    diff = float(np.abs(got - want).max())
    if not diff <= PARITY_ATOL:
        raise CompressError(f"OpenVINO does not reproduce PyTorch: max |OpenVINO - PyTorch| = {diff:.3g} on "
                            f"{len(inputs)} test images, above {PARITY_ATOL:g}")
    return diff


def predict(path: Path, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
            threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels from the OpenVINO model itself (so an NNCF int8 row's accuracy is int8's)."""
    compiled = compile_file(path, threads)
    return labels(lambda x: logits(compiled, x), batches)


def quantize(fp32_onnx: Path, batches: list[np.ndarray], out_xml: Path, keep_first_last: bool) -> None:
    """NNCF post-training int8 of the fp32 ONNX file, on the same calibration batches as ONNX Runtime's path.

    `keep_first_last` leaves the first convolution and the last matrix product in fp32, as the
    ONNX Runtime path does, so the two int8 rows quantize the same layers.
    """
    why = missing()
    if why:
        raise CompressError(why)
    try:
        import nncf
    except ImportError as exc:
        raise CompressError(f"NNCF is not installed ({exc.name or 'nncf'}): pip install nncf") from None
    import openvino as ov

    model = core().read_model(str(fp32_onnx))
    compute = [op.get_friendly_name() for op in model.get_ordered_ops()
               if op.get_type_name() in ("Convolution", "MatMul")]
    ignored = nncf.IgnoredScope(names=[compute[0], compute[-1]]) if keep_first_last and compute else None
    try:
        with quiet("nncf", stderr=True):
            int8 = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches),
                                 **({"ignored_scope": ignored} if ignored else {}))
            out_xml.parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(int8, str(out_xml), compress_to_fp16=False)
    except CompressError:
        raise
    except Exception as exc:
        raise CompressError(f"NNCF quantization failed ({type(exc).__name__}: {first_line(exc)})") from None


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


@register(OPENVINO_CPU, "openvino", "OV", "OpenVINO (CPU)", order=40, help="OpenVINO, CPU", reads_onnx=True,
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
        if m.module is not None:  # fp32: the file must reproduce PyTorch before it is timed
            parity(m.module, path, m.check_inputs(), threads)
        m.time(OPENVINO_CPU, lambda b: runner(compile_file(path, threads, b), shape, b),
               (lambda b: runner(compile_file(ref, threads, b), shape, b)) if ref is not None else None)
        m.timings.notes[OPENVINO_CPU] = f"OpenVINO {version()} {settings(threads)}"
    except CompressError as exc:
        m.timings.drop(OPENVINO_CPU, str(exc))
