"""Peak memory of inference: what a model needs to run alone, measured in a process of its own.

One process's high-water mark (`ru_maxrss`) never goes down, so measuring several models or
runtimes in the harness's own process would report the largest one seen so far for all of them.
Each (model, runtime) therefore gets a short child process (spawned, not forked: a forked child
starts with the parent's pages). The child imports the runtime, records its idle high-water mark,
loads the model, runs one call at each batch in increasing order and records the mark after each:
`peak_mb` is the whole process (what a deployment's container must allow), `model_mb` the part
above the idle process (the model, the runtime's session and the activations). On a GPU the
figure is `torch.cuda.max_memory_allocated` instead (see runtimes/cuda.py).
"""

from __future__ import annotations

import importlib
import multiprocessing
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from compress.errors import first_line
from compress.store.rows import Memory

CHILD_TIMEOUT_S = 600.0  # a 224 px batch of 32 on 2 cores is seconds; a child past this is stuck
Load = Callable[..., Callable[[int], Callable[[], object]]]  # (*args) -> batch -> one call


@dataclass(frozen=True)
class Job:
    """What the child runs: `load(*args)` (module-level, so it pickles by name) gives batch -> one call."""

    load: Load
    args: tuple[Any, ...]
    batches: tuple[int, ...]
    imports: tuple[str, ...] = ()  # the runtime's library, imported before the idle mark is read


def _rss_mb() -> float:
    """This process's high-water resident set, in MiB: Linux's VmHWM, which starts afresh at exec (ru_maxrss
    does not: it keeps the parent's mark across fork and exec, so a spawned child would report the parent's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS: bytes, and a fresh process per spawn
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _child(job: Job, out: Any) -> None:
    try:
        for name in job.imports:
            importlib.import_module(name)
        idle = _rss_mb()  # the interpreter and the runtime's library, nothing of the model yet
        runner = job.load(*job.args)
        peaks = {}
        for b in sorted(job.batches):
            call = runner(b)
            call()
            call()  # a second call: some runtimes allocate their arenas on the first and grow on the second
            del call
            peaks[b] = _rss_mb()
        out.send(("ok", idle, peaks))
    except Exception as exc:  # reported by the parent as the figure's n/a
        out.send(("error", f"{type(exc).__name__}: {first_line(exc)}", {}))
    finally:
        out.close()


def measure(jobs: dict[str, Job]) -> dict[str, tuple[dict[int, Memory], str]]:
    """Peak memory per batch of each job, each from a fresh process, and a note (how long it took, or why there is
    no figure). The children run side by side: a high-water mark is a process's own, whatever runs beside it, and
    the probes then cost the slowest one's time, not their sum."""
    ctx = multiprocessing.get_context("spawn")
    start, running = time.perf_counter(), {}
    for key, job in jobs.items():
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(job, send), daemon=True)
        proc.start()
        send.close()
        running[key] = (proc, receive)
    return {key: _collect(proc, receive, start) for key, (proc, receive) in running.items()}


def _collect(proc: Any, receive: Any, start: float) -> tuple[dict[int, Memory], str]:
    try:
        if not receive.poll(max(1.0, CHILD_TIMEOUT_S - (time.perf_counter() - start))):
            return {}, f"n/a (the memory probe did not finish in {CHILD_TIMEOUT_S:.0f} s)"
        status, idle, peaks = receive.recv()
    except EOFError:
        proc.join(timeout=10)
        return {}, f"n/a (the memory probe died, exit code {proc.exitcode})"
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    if status != "ok":
        return {}, f"n/a (the memory probe failed: {idle})"
    return ({b: Memory(b, round(p, 1), round(p - idle, 1)) for b, p in peaks.items()},
            f"peak resident memory of a process of its own (idle with the runtime imported: {idle:.0f} MiB)")


def torch_file(path: Path, threads: int, shape: tuple[int, int, int]) -> Callable[[int], Callable[[], object]]:
    """A PyTorch model from the file the harness wrote a moment ago into its own scratch folder (torch.save of
    the module, so any module the suite makes loads): the suite's file, not user input, hence weights_only off."""
    import torch

    torch.set_num_threads(threads)
    model = torch.load(path, weights_only=False, mmap=True).eval()  # mmap: the weights are not read twice

    def runner(batch: int) -> Callable[[], object]:
        x = torch.randn(batch, *shape)

        def call() -> object:
            with torch.inference_mode():
                return model(x)
        return call
    return runner


def ort_file(path: Path, threads: int, shape: tuple[int, int, int],
             spinning: bool) -> Callable[[int], Callable[[], object]]:
    """An ONNX Runtime session with the settings every timed session has (threads, spinning), PyTorch unimported."""
    from compress.measuring import ort_session

    sess = ort_session.make(path, threads, spinning)
    return lambda batch: ort_session.runner(sess, shape, batch)


def openvino_file(path: Path, threads: int, shape: tuple[int, int, int]) -> Callable[[int], Callable[[], object]]:
    """An OpenVINO model compiled per batch with a static shape, as it is timed."""
    from compress.measuring import openvino_compile

    return lambda batch: openvino_compile.runner(openvino_compile.compile_file(path, threads, batch), shape, batch)
