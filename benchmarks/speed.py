"""Speed and peak-memory suite: the methods against a plain forward and the eager baselines.

For randomly initialised HF ViT-S/16- and ViT-B/16-shaped classifiers at several input sizes and
batch sizes, every *approach* below is timed (median of ``--repeats`` calls after one warm-up
call) and its peak memory measured, each (model, size, batch, approach) in a fresh child process:

- ``floor``: the default-loaded (SDPA) model, one forward under ``torch.no_grad()``;
- ``eager_attentions``: the founding approach, an eager-loaded copy called with
  ``output_attentions=True`` (it holds every layer's ``(B, heads, N, N)``);
- ``eager_rollout``: rollout as peers code it (jacobgil/vit-explain): the eager attentions, head
  mean, ``(A + I) / 2``, row renormalisation and ``joint = A_l @ joint`` as full ``N x N`` products;
- ``raw_cls``, ``rollout``, ``mad``: :class:`attnexplain.RawCLSAttention`,
  :class:`attnexplain.AttentionRollout`, :class:`attnexplain.MeanAttentionDistance` with their
  defaults, maps left on the patch grid (``upsample=False``);
- ``gradcam``: ``attnexplain.methods.gradcam.GradCAM`` when that module is importable;
- ``floor_backward``: the floor of the gradient and relevance methods, one forward and one
  backward to the input (``torch.autograd.grad`` of the target logit);
- ``transformer_attribution``, ``lrp``, ``partial_lrp``, ``attnlrp``: the relevance methods
  (:class:`attnexplain.TransformerAttribution` ...), maps on the patch grid; their time and peak
  memory are also reported against ``floor_backward`` and ``gradcam`` (:func:`relevance_ratios`).

Timing: ``time.perf_counter`` around each call (CUDA synchronised), median of the timed calls; a
first call longer than ``--single-call-s`` is timed alone (no warm-up), to bound the run time.

Peak memory (see :class:`PeakMemory`), CPU: after the warm-up the child returns freed heap to the
OS (``malloc_trim``), reads its resident set size (``VmRSS``) and resets the kernel's high-water
mark (``echo 5 > /proc/self/clear_refs``); after the timed calls it reads the high-water mark
(``VmHWM``). ``peak = VmHWM - VmRSS`` is the memory the call needs on top of the resident model,
input and libraries (tracemalloc does not see torch's CPU allocations). CUDA:
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` minus
``torch.cuda.memory_allocated``.

Configurations whose estimated memory (e.g. the eager attentions, ``L * B * heads * N^2`` fp32) is
above ``--memory-budget-gb`` are skipped and reported as such.

``--flow`` measures attention flow instead (ViT-S/16 at 224 px unless ``--models`` / ``--sizes``
say otherwise, one image): :class:`attnexplain.AttentionFlow` (median of ``--repeats`` calls)
against the reference code's approach (samiraabnar/attention_flow: eager attentions, the
``(L + 1) N``-node adjacency as a networkx graph, one Edmonds–Karp max-flow per patch), timed on
the first ``--flow-reference-tokens`` patches and extrapolated to all of them, with the largest
difference between the two on those patches (see :func:`measure_flow`).

Usage::

    python benchmarks/speed.py --quick                      # ViT-S, 224 + 448 px, batch 1
    python benchmarks/speed.py --out results.json           # the full grid
    python benchmarks/speed.py --models vit-b16 --sizes 224 448 --batches 1 8 --device cuda
    python benchmarks/speed.py --flow --out flow.json       # attention flow vs networkx
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import inspect
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from attnexplain.capture.kernel import CHUNK_BYTES

#: Model shapes, as ``transformers.ViTConfig`` keyword arguments (patch 16, 3 channels).
MODELS: dict[str, dict[str, int]] = {
    "vit-s16": {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "intermediate_size": 1536,
    },
    "vit-b16": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    # A toy shape for smoke tests and trying the suite out; not part of the default grid.
    "tiny-test": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
}
PATCH = 16
NUM_CLASSES = 1000
RELEVANCE = ("transformer_attribution", "lrp", "partial_lrp", "attnlrp")
APPROACHES = (
    "floor", "eager_attentions", "eager_rollout", "raw_cls", "rollout", "mad", "gradcam",
    "floor_backward", *RELEVANCE,
)  # fmt: skip
DEFAULT_MODELS = ("vit-s16", "vit-b16")
DEFAULT_SIZES = (224, 448, 896)
DEFAULT_BATCHES = (1, 8)
QUICK = {"models": ("vit-s16",), "sizes": (224, 448), "batches": (1,)}
FLOW_DEFAULTS = {"models": ("vit-s16",), "sizes": (224,), "batches": (1,)}
#: The issue's target for attention flow: seconds per image (ViT-S/16, 224 px, 2 cores).
FLOW_TARGET_S = 10.0
FP32 = 4


@dataclass(frozen=True)
class Case:
    """One measurement: an approach on one model shape, input size and batch size."""

    model: str
    size: int
    batch: int
    approach: str
    device: str
    threads: int
    repeats: int
    max_seconds: float
    single_call_s: float
    allocated_peak: bool = True
    seed: int = 0
    clock: str = "wall"


@dataclass
class Measurement:
    """What a child process reports for one :class:`Case`.

    Attributes:
        case: the case, as a dict.
        status: ``"ok"``, ``"skipped"`` (over the memory budget, GradCAM missing) or ``"error"``.
        reason: why it was skipped or failed, or a note (a single call without warm-up).
        times_s: the timed calls, seconds; ``median_s`` their median (with several trials, the
            median of the per-trial medians ``trial_medians_s``); ``warmup_s`` the warm-up.
        peak_bytes: RSS high-water mark over the resident set around the timed calls.
        resident_bytes: the resident set (model, input, libraries) the peak is measured above.
        memory_method: how ``peak_bytes`` was measured.
        interleaved_times_s: with ``--interleave``, the calls timed round-robin with the other
            approaches of the group in one process; ``interleaved_median_s`` their median, which
            the ratios then use.
        allocated_peak_bytes: peak of torch's live allocations during one more, profiled call
            (CPU; on CUDA the allocator's peak, equal to ``peak_bytes``).
        tokens: ``N``, the sequence length; ``estimated_bytes`` the budget estimate.
        load_average: the 1-minute load average when the case started.
        background_cpu: share of the machine's CPU other processes used during the warm-up and
            timed calls (see :class:`BackgroundCPU`); timings with more than a few percent are
            suspect.
        background_before: the same, sampled for 1 s before the case started.
    """

    case: dict[str, Any]
    status: str
    reason: str = ""
    times_s: list[float] = field(default_factory=list)
    trial_medians_s: list[float] = field(default_factory=list)
    interleaved_times_s: list[float] = field(default_factory=list)
    interleaved_median_s: float | None = None
    warmup_s: float | None = None
    median_s: float | None = None
    peak_bytes: int | None = None
    resident_bytes: int | None = None
    memory_method: str = ""
    allocated_peak_bytes: int | None = None
    tokens: int | None = None
    estimated_bytes: int | None = None
    load_average: float | None = None
    background_cpu: float | None = None
    background_before: float | None = None


# ----------------------------------------------------------------------------- model and approaches


def num_tokens(size: int) -> int:
    """Tokens of a square ``size`` input: ``(size / 16)^2`` patches plus the CLS token."""
    return (size // PATCH) ** 2 + 1


def estimated_bytes(approach: str, model: str, size: int, batch: int) -> int:
    """Rough size of what ``approach`` holds on top of a plain forward, in bytes.

    The eager approaches keep every layer's ``(B, heads, N, N)`` (the peers' rollout also three
    ``(B, N, N)`` products); rollout keeps ``L`` head-fused ``(B, N, N)``; Grad-CAM keeps the
    autograd activations (about 16 ``(B, N, hidden)`` tensors per layer); the others keep rows.
    """
    shape = MODELS[model]
    tokens, layers = num_tokens(size), shape["num_hidden_layers"]
    square = batch * tokens * tokens * FP32
    if approach in ("eager_attentions", "eager_rollout"):
        extra = 3 * square if approach == "eager_rollout" else 0
        return layers * shape["num_attention_heads"] * square + extra
    if approach == "rollout":
        return layers * square
    if approach == "gradcam":
        return 16 * layers * batch * tokens * shape["hidden_size"] * FP32
    if approach in RELEVANCE:  # scores, probabilities and their saved copies, per layer
        return 3 * layers * shape["num_attention_heads"] * square
    return 0


def build_model(name: str, attn_implementation: str, seed: int) -> torch.nn.Module:
    """A randomly initialised ``ViTForImageClassification`` of the named shape, in eval mode."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(**MODELS[name], image_size=224, patch_size=PATCH, num_labels=NUM_CLASSES)
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    return ViTForImageClassification(config).eval()


def _forward_kwargs(size: int) -> dict[str, Any]:
    return {"interpolate_pos_encoding": True} if size != 224 else {}


def peer_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Rollout as jacobgil/vit-explain codes it: full ``N x N`` products, CLS row at the end.

    Args:
        attentions: per layer ``(B, heads, N, N)`` probabilities.

    Returns:
        ``(B, N - 1)`` CLS row of the joint attention over the patch tokens.
    """
    batch, _, tokens, _ = attentions[0].shape
    eye = torch.eye(tokens, device=attentions[0].device)
    joint = eye.expand(batch, tokens, tokens)
    for attention in attentions:
        fused = attention.mean(dim=1)
        fused = (fused + eye) / 2
        fused = fused / fused.sum(dim=-1, keepdim=True)
        joint = torch.matmul(fused, joint)
    return joint[:, 0, 1:]


def make_approach(
    approach: str,
    model_name: str,
    size: int,
    batch: int,
    seed: int,
    device: torch.device,
    model: torch.nn.Module | None = None,
) -> Callable[[torch.Tensor], Any]:
    """Build the model (and method) for ``approach`` and return the call to time on ``inputs``.

    ``model``: an already built model of the right attention implementation (eager for the
    ``eager_*`` approaches, SDPA otherwise) to share between approaches.
    """
    if model is None:
        implementation = "eager" if approach.startswith("eager") else "sdpa"
        model = build_model(model_name, implementation, seed).to(device)
    kwargs = _forward_kwargs(size)

    if approach == "floor":

        def call(inputs: torch.Tensor) -> Any:
            with torch.no_grad():
                return model(pixel_values=inputs, **kwargs).logits

        return call
    if approach == "eager_attentions":

        def call(inputs: torch.Tensor) -> Any:
            with torch.no_grad():
                return model(pixel_values=inputs, output_attentions=True, **kwargs).attentions

        return call
    if approach == "eager_rollout":

        def call(inputs: torch.Tensor) -> Any:
            with torch.no_grad():
                output = model(pixel_values=inputs, output_attentions=True, **kwargs)
                return peer_rollout(output.attentions)

        return call

    if approach == "floor_backward":

        def call(inputs: torch.Tensor) -> Any:
            leaf = inputs.detach().requires_grad_(True)
            logits = model(pixel_values=leaf, **kwargs).logits
            return torch.autograd.grad(logits[:, 0].sum(), leaf)[0]

        return call

    import attnexplain

    if approach in RELEVANCE:
        classes = {
            "transformer_attribution": attnexplain.TransformerAttribution,
            "lrp": attnexplain.LRP,
            "partial_lrp": attnexplain.PartialLRP,
            "attnlrp": attnexplain.AttnLRP,
        }
        method = classes[approach](model)
        return lambda inputs: method.attribute(inputs, target=0, upsample=False)
    if approach == "raw_cls":
        method = attnexplain.RawCLSAttention(model)
        return lambda inputs: method.attribute(inputs, upsample=False)
    if approach == "rollout":
        method = attnexplain.AttentionRollout(model)
        return lambda inputs: method.attribute(inputs, upsample=False)
    if approach == "mad":
        method = attnexplain.MeanAttentionDistance(model)
        return lambda inputs: method.attribute(inputs)
    if approach == "gradcam":
        gradcam_class = load_gradcam()
        if gradcam_class is None:
            raise RuntimeError("attnexplain.methods.gradcam.GradCAM is not importable")
        method = gradcam_class(model)
        accepts_upsample = "upsample" in inspect.signature(method.attribute).parameters
        options = {"upsample": False} if accepts_upsample else {}
        return lambda inputs: method.attribute(inputs, target=0, **options)
    raise ValueError(f"approach must be one of {APPROACHES}, got {approach!r}")


def load_gradcam() -> type | None:
    """``attnexplain.methods.gradcam.GradCAM`` if it can be imported, else ``None``."""
    try:
        from attnexplain.methods.gradcam import GradCAM
    except ImportError:
        return None
    return GradCAM


# ----------------------------------------------------------------------------- measuring


def _proc_status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _reset_rss_peak() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux ``clear_refs`` = 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _trim_heap() -> None:
    """Give freed heap memory back to the OS so the RSS reflects live memory (glibc only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class BackgroundCPU:
    """Share of the machine's CPU time used by *other* processes between start and stop.

    Busy time of all CPUs (``/proc/stat``) minus this process's own CPU time, over the wall
    time and the CPU count: 0 on a quiet machine, 0.5 when another process kept one of two
    cores busy. ``None`` where ``/proc/stat`` is unavailable or the window is under 0.5 s.
    """

    MIN_WINDOW_S = 0.5

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        return busy, own.user + own.system, time.monotonic()

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None:
            return None
        busy, own, wall = (b - a for a, b in zip(self._start, end))
        if wall < self.MIN_WINDOW_S:  # /proc/stat counts in 10 ms ticks
            return None
        return max(0.0, (busy - own) / max(wall * (os.cpu_count() or 1), 1e-9))


def wait_until_quiet(max_wait_s: float, threshold: float = 0.1) -> float | None:
    """Wait (up to ``max_wait_s``) until other processes use less than ``threshold`` of the CPU.

    Returns the last measured background share (1-second samples).
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        probe = BackgroundCPU()
        probe.start()
        time.sleep(1.0)
        share = probe.stop()
        if share is None or share < threshold or time.monotonic() >= deadline:
            return share
        time.sleep(4.0)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: ``--clock``: wall time, or the process's CPU time (all its threads), which other processes on
#: a shared machine do not inflate (with ``--threads 1`` it is the call's compute time).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed(
    call: Callable[[torch.Tensor], Any],
    inputs: torch.Tensor,
    device: torch.device,
    clock: str = "wall",
) -> float:
    now = CLOCKS[clock]
    _synchronize(device)
    start = now()
    result = call(inputs)
    _synchronize(device)
    elapsed = now() - start
    del result
    return elapsed


class PeakMemory:
    """Peak memory a call needs above what is resident when :meth:`start` is called.

    CPU (Linux): freed heap is returned to the OS (``malloc_trim``), ``VmRSS`` read and the
    kernel's high-water mark reset (``clear_refs``); :meth:`read` gives ``VmHWM - VmRSS``. Where
    the mark cannot be reset, ``ru_maxrss`` (the process's lifetime peak) is used instead. CUDA:
    ``max_memory_allocated`` since ``reset_peak_memory_stats`` minus ``memory_allocated``.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.resident = 0
        self.method = ""

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            self.resident = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda: max_memory_allocated - memory_allocated"
            return
        _trim_heap()
        self.resident = (_proc_status_kib("VmRSS") or 0) * 1024
        if _reset_rss_peak():
            self.method = "cpu: VmHWM - VmRSS (malloc_trim, clear_refs reset)"
        else:
            self.method = "cpu: ru_maxrss - VmRSS (lifetime peak, not reset)"

    def read(self) -> int:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif "VmHWM" in self.method:
            peak = (_proc_status_kib("VmHWM") or 0) * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return max(0, peak - self.resident)


def measure(case: Case) -> Measurement:
    """Time and measure one case in the current process (called in a fresh child).

    One warm-up call, then ``case.repeats`` timed calls, fewer (at least one) when the warm-up
    shows they would take more than ``case.max_seconds``. A first call longer than
    ``case.single_call_s`` is the only one: the one-time costs a warm-up absorbs (thread pool,
    kernel selection) are milliseconds, and a second call would double the run time.
    """
    torch.set_num_threads(case.threads)
    device = torch.device(case.device)
    call = make_approach(case.approach, case.model, case.size, case.batch, case.seed, device)
    generator = torch.Generator().manual_seed(case.seed + 1)
    inputs = torch.randn(case.batch, 3, case.size, case.size, generator=generator).to(device)
    result = Measurement(case=asdict(case), status="ok", tokens=num_tokens(case.size))
    result.load_average = os.getloadavg()[0]

    memory, background = PeakMemory(device), BackgroundCPU()
    memory.start()
    background.start()
    first = _timed(call, inputs, device, case.clock)
    if first > case.single_call_s:
        result.times_s = [first]
        result.reason = f"one call of {first:.1f} s > {case.single_call_s:g} s: no warm-up"
    else:
        result.warmup_s = first
        memory.start()
        repeats = max(1, min(case.repeats, int(case.max_seconds / max(first, 1e-9))))
        result.times_s = [_timed(call, inputs, device, case.clock) for _ in range(repeats)]
    result.background_cpu = background.stop()
    result.peak_bytes = memory.read()
    result.resident_bytes = memory.resident
    result.memory_method = memory.method
    result.median_s = statistics.median(result.times_s)
    if device.type == "cuda":
        result.allocated_peak_bytes = result.peak_bytes
    elif case.allocated_peak and first <= case.single_call_s:
        result.allocated_peak_bytes = allocated_peak(call, inputs)
    return result


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's C++ start/stop lines (file descriptor 2) for one call."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def allocated_peak(call: Callable[[torch.Tensor], Any], inputs: torch.Tensor) -> int | None:
    """Peak of torch's live CPU allocations during one call, from the profiler's memory events.

    The CPU counterpart of ``torch.cuda.max_memory_allocated``: exact tensor bytes, free of the
    allocator and page-level noise of the RSS (a few MiB between identical forwards). ``None``
    when the profiler's event API is not available.
    """
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = call(inputs)
        del result
    try:
        events = prof.profiler.kineto_results.events()
        changes = sorted(
            (event.start_ns(), event.nbytes()) for event in events if event.name() == "[memory]"
        )
    except AttributeError:
        return None
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return peak


def time_interleaved(cases: Sequence[Case]) -> dict[str, list[float]]:
    """Time the approaches of one group in one process, round-robin (called in a fresh child).

    Every approach gets a warm-up call, then rounds of one call each, the order rotated every
    round, for ``repeats`` rounds or fewer (at least one) when the warm-ups show they would take
    more than ``max_seconds``: approaches compared within a round share the process, its memory
    layout and the machine's state, which separate processes on a shared VM do not.
    """
    first = cases[0]
    torch.set_num_threads(first.threads)
    device = torch.device(first.device)
    models: dict[str, torch.nn.Module] = {}
    calls = {}
    for case in cases:
        implementation = "eager" if case.approach.startswith("eager") else "sdpa"
        if implementation not in models:
            models[implementation] = build_model(case.model, implementation, case.seed).to(device)
        calls[case.approach] = make_approach(
            case.approach, case.model, case.size, case.batch, case.seed, device,
            model=models[implementation],
        )  # fmt: skip
    generator = torch.Generator().manual_seed(first.seed + 1)
    inputs = torch.randn(first.batch, 3, first.size, first.size, generator=generator).to(device)
    warmup = sum(_timed(call, inputs, device, first.clock) for call in calls.values())
    rounds = max(1, min(first.repeats, int(first.max_seconds * len(calls) / max(warmup, 1e-9))))
    order = list(calls)
    times: dict[str, list[float]] = {approach: [] for approach in order}
    for index in range(rounds):
        shift = index % len(order)
        for approach in order[shift:] + order[:shift]:
            times[approach].append(_timed(calls[approach], inputs, device, first.clock))
    return times


def _interleaved_child(cases: list[Case], connection: Any) -> None:
    try:
        connection.send(time_interleaved(cases))
    except Exception as error:
        connection.send({"error": repr(error)})
    connection.close()


def run_interleaved(cases: list[Case], context: Any, timeout_s: float) -> dict[str, Any]:
    """:func:`time_interleaved` in a fresh child; ``{"error": ...}`` when it fails."""
    if context is None:
        return time_interleaved(cases)
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_interleaved_child, args=(cases, sender))
    process.start()
    sender.close()
    outcome: dict[str, Any] = {"error": f"no result after {timeout_s:.0f} s or child crashed"}
    if receiver.poll(timeout_s):
        with contextlib.suppress(EOFError):
            outcome = receiver.recv()
    process.join(5)
    if process.is_alive():
        process.kill()
        process.join()
    return outcome


def _child(case: Case, connection: Any) -> None:
    try:
        outcome = measure(case)
    except Exception as error:  # reported to the parent, which carries on with the next case
        outcome = Measurement(case=asdict(case), status="error", reason=repr(error))
    connection.send(asdict(outcome))
    connection.close()


def _context() -> multiprocessing.context.BaseContext:
    """A forkserver with torch and transformers preloaded, so children start in milliseconds."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["torch", "transformers", "transformers.models.vit.modeling_vit", "attnexplain"]
    )
    return context


def run_isolated(case: Case, context: Any, timeout_s: float) -> Measurement:
    """Measure ``case`` in a fresh child process; a crash or timeout becomes an error result."""
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(case, sender))
    process.start()
    sender.close()
    outcome: dict[str, Any] | None = None
    if receiver.poll(timeout_s):
        with contextlib.suppress(EOFError):
            outcome = receiver.recv()
    process.join(5)
    timed_out = process.is_alive()
    if timed_out:
        process.kill()
        process.join()
    if outcome is None:
        if timed_out:
            reason = f"no result after {timeout_s:.0f} s (timeout)"
        elif process.exitcode == -9:
            reason = "child killed by signal 9 (out of memory?)"
        else:
            reason = f"child exited with code {process.exitcode}"
        return Measurement(case=asdict(case), status="error", reason=reason)
    return Measurement(**outcome)


# ----------------------------------------------------------------------------- attention flow


def reference_flow_graph(fused: Any) -> Any:
    """The reference code's graph (``get_adjmat``): node ``l * N + i`` is token ``i`` after layer
    ``l`` (0 = the inputs), an edge from ``(l, i)`` to ``(l - 1, k)`` with capacity
    ``fused[l - 1, i, k]``, as a networkx ``DiGraph`` with ``capacity`` attributes.

    The adjacency is filled block by block here; the reference fills it (and sets each edge's
    capacity) in Python loops over every pair of the ``(L + 1) N`` nodes, which is slower still.
    """
    import networkx as nx
    import numpy as np

    layers, tokens, _ = fused.shape
    adjacency = np.zeros(((layers + 1) * tokens, (layers + 1) * tokens))
    for layer in range(1, layers + 1):
        rows = slice(layer * tokens, (layer + 1) * tokens)
        adjacency[rows, (layer - 1) * tokens : layer * tokens] = fused[layer - 1]
    return nx.from_numpy_array(adjacency, create_using=nx.DiGraph(), edge_attr="capacity")


def measure_flow(
    model_name: str, size: int, threads: int, repeats: int, reference_tokens: int, seed: int = 0
) -> dict[str, Any]:
    """Attention flow on one image: ours against the reference approach, same model and input.

    Ours: ``AttentionFlow(model).attribute(x, upsample=False)`` on the SDPA model, one warm-up
    call and the median of ``repeats``. Reference: the eager model's attentions, head mean plus
    identity renormalised in numpy, :func:`reference_flow_graph`, and networkx's Edmonds–Karp
    from the CLS node after the last layer to each patch; the first ``reference_tokens`` patches
    are solved and timed, the total extrapolated as graph time + mean solve time × patches
    (``reference_tokens=0`` times ours only). The machine's load average, the background CPU
    share during our calls (:class:`BackgroundCPU`) and our calls' CPU time (all threads, which
    other processes do not inflate) are recorded with the wall times.

    Returns:
        A JSON-able dict: times, the extrapolation, the speed-up and the largest difference.
    """
    import networkx as nx
    import numpy as np

    import attnexplain

    torch.set_num_threads(threads)
    model = build_model(model_name, "sdpa", seed)
    generator = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn(1, 3, size, size, generator=generator)
    method = attnexplain.AttentionFlow(model)
    method.attribute(inputs, upsample=False)  # warm-up
    times, cpu_times, background = [], [], BackgroundCPU()
    background.start()
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        ours = method.attribute(inputs, upsample=False).flatten().double().numpy()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    median = statistics.median(times)
    result = {
        "model": model_name, "size": size, "tokens": ours.size + 1, "patches": ours.size,
        "layers": MODELS[model_name]["num_hidden_layers"], "threads": threads,
        "attention_flow_times_s": times, "attention_flow_s": median,
        "attention_flow_cpu_s": statistics.median(cpu_times),
        "background_cpu": background.stop(), "load_average": os.getloadavg()[0],
        "target_s": FLOW_TARGET_S, "target_met": median < FLOW_TARGET_S,
        "reference_tokens_solved": 0,
    }  # fmt: skip
    if reference_tokens < 1:
        return result

    start = time.perf_counter()
    eager = build_model(model_name, "eager", seed)
    with torch.no_grad():
        output = eager(pixel_values=inputs, output_attentions=True, **_forward_kwargs(size))
    fused = torch.stack([a[0].mean(dim=0) for a in output.attentions]).double().numpy()
    fused = fused + np.eye(fused.shape[-1])[None]
    fused = fused / fused.sum(axis=-1)[..., None]
    graph = reference_flow_graph(fused)
    graph_s = time.perf_counter() - start
    layers, tokens, _ = fused.shape
    patches = tokens - 1
    chosen = list(range(1, 1 + min(reference_tokens, patches)))
    solves, values = [], []
    for token in chosen:
        start = time.perf_counter()
        flow = nx.algorithms.flow.edmonds_karp
        values.append(nx.maximum_flow_value(graph, layers * tokens, token, flow_func=flow))
        solves.append(time.perf_counter() - start)
    extrapolated = graph_s + statistics.mean(solves) * patches
    return result | {
        "reference_graph_s": graph_s, "reference_solve_s": solves,
        "reference_tokens_solved": len(chosen), "reference_extrapolated_s": extrapolated,
        "extrapolated": len(chosen) < patches, "speedup": extrapolated / median,
        "max_abs_diff": float(np.max(np.abs(ours[[t - 1 for t in chosen]] - np.array(values)))),
    }  # fmt: skip


def format_flow(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`measure_flow` results."""
    lines = [
        "| model | px | N | L | AttentionFlow (s) | reference (s) | speed-up | max abs diff "
        f"| < {FLOW_TARGET_S:g} s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        reference, speedup, difference = "not run", "-", "-"
        if row["reference_tokens_solved"]:
            reference = f"{row['reference_extrapolated_s']:.0f}"
            if row["extrapolated"]:
                reference += f" (from {row['reference_tokens_solved']} of {row['patches']} patches)"
            speedup, difference = f"{row['speedup']:.0f}x", f"{row['max_abs_diff']:.1e}"
        lines.append(
            f"| {row['model']} | {row['size']} | {row['tokens']} | {row['layers']} "
            f"| {row['attention_flow_s']:.2f} | {reference} | {speedup} | {difference} "
            f"| {'yes' if row['target_met'] else 'NO'} |"
        )
    return "\n".join(lines)


def flow_suite(args: argparse.Namespace) -> dict[str, Any]:
    """``--flow``: :func:`measure_flow` for every model and size; returns the JSON document."""
    threads = args.threads or len(os.sched_getaffinity(0))
    load_start = os.getloadavg()
    rows = [
        measure_flow(model, size, threads, args.repeats, args.flow_reference_tokens)
        for model in args.models
        for size in args.sizes
    ]
    return {
        "suite": "attnexplain speed: attention flow",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "threads": threads, "torch": torch.__version__,
                    "load_average_start": load_start, "load_average_end": os.getloadavg()},
        "flow": rows,
    }  # fmt: skip


# ----------------------------------------------------------------------------- suite and report


def plan(args: argparse.Namespace) -> list[Case]:
    """Every case of the grid, in the order they run (the floor first in each group)."""
    threads = args.threads or len(os.sched_getaffinity(0))
    return [
        Case(
            model,
            size,
            batch,
            approach,
            args.device,
            threads,
            args.repeats,
            args.max_seconds,
            args.single_call_s,
            not args.no_allocated_peak,
            clock=args.clock,
        )
        for model in args.models
        for size in args.sizes
        for batch in args.batches
        for approach in args.approaches
    ]


def run_suite(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every planned case (isolated unless ``--in-process``) and return the JSON document.

    With ``--trials T`` each group (model, size, batch) runs its approaches round-robin ``T``
    times, each call in a fresh process, so that slow drifts of the machine hit every approach.
    """
    cases = plan(args)
    budget = args.memory_budget_gb * 2**30
    if args.malloc_mmap_threshold is not None:  # read by glibc when the forkserver starts
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    context = None if args.in_process else _context()
    load_start = os.getloadavg()
    results: list[Measurement] = []
    started = time.perf_counter()
    groups: dict[tuple[str, int, int], list[Case]] = {}
    for case in cases:
        groups.setdefault((case.model, case.size, case.batch), []).append(case)
    done = 0
    for group in groups.values():
        trials: dict[Case, list[Measurement]] = {case: [] for case in group}
        skipped: dict[Case, Measurement] = {}
        for case in group:
            reason = _skip_reason(case, budget, args.memory_budget_gb)
            if reason:
                skipped[case] = Measurement(case=asdict(case), status="skipped", reason=reason)
        for trial in range(args.trials):
            for case in group:
                if case in skipped:
                    continue
                before = wait_until_quiet(args.wait_quiet_s)
                if context is None:
                    outcome = measure(case)
                else:
                    outcome = run_isolated(case, context, args.case_timeout_s)
                outcome.background_before = before
                trials[case].append(outcome)
                if args.trials > 1:
                    log(f"  trial {trial + 1}/{args.trials}: {_describe(outcome)}")
        interleaved: dict[str, Any] = {}
        if args.interleave:
            measured = [case for case in group if case not in skipped]
            wait_until_quiet(args.wait_quiet_s)
            interleaved = run_interleaved(measured, context, args.case_timeout_s)
            if "error" in interleaved:
                log(f"  interleaved timing failed: {interleaved['error']}")
        for case in group:
            outcome = skipped.get(case) or combine_trials(trials[case])
            times = interleaved.get(case.approach)
            if outcome.status == "ok" and isinstance(times, list):
                outcome.interleaved_times_s = times
                outcome.interleaved_median_s = statistics.median(times)
            outcome.estimated_bytes = estimated_bytes(
                case.approach, case.model, case.size, case.batch
            )
            outcome.tokens = num_tokens(case.size)
            results.append(outcome)
            done += 1
            log(f"[{done}/{len(cases)}] {_describe(outcome)}")
        if args.out:  # written after every group, so an interrupted run keeps what it measured
            write_json(args.out, _document(args, results, load_start, started))
    return _document(args, results, load_start, started)


def _skip_reason(case: Case, budget: float, budget_gb: float) -> str:
    if case.approach == "gradcam" and load_gradcam() is None:
        return "GradCAM not importable"
    estimate = estimated_bytes(case.approach, case.model, case.size, case.batch)
    if estimate > budget:
        return f"needs ~{estimate / 2**30:.1f} GB > budget {budget_gb:g} GB"
    return ""


def combine_trials(trials: list[Measurement]) -> Measurement:
    """One measurement from the trials of a case: medians of the per-trial medians and peaks.

    ``times_s`` keeps every timed call, ``trial_medians_s`` each trial's median; an error in
    any trial makes the case an error; ``background_cpu`` is the worst trial's.
    """
    failed = [trial for trial in trials if trial.status != "ok"]
    if failed or len(trials) == 1:
        return failed[0] if failed else trials[0]
    first = trials[0]
    allocated = [t.allocated_peak_bytes for t in trials if t.allocated_peak_bytes is not None]
    backgrounds = [t.background_cpu for t in trials if t.background_cpu is not None]
    return Measurement(
        case=first.case,
        status="ok",
        reason="; ".join(sorted({t.reason for t in trials if t.reason})),
        times_s=[time_s for t in trials for time_s in t.times_s],
        trial_medians_s=[t.median_s for t in trials],
        warmup_s=first.warmup_s,
        median_s=statistics.median(t.median_s for t in trials),
        peak_bytes=int(statistics.median(t.peak_bytes for t in trials)),
        resident_bytes=int(statistics.median(t.resident_bytes for t in trials)),
        memory_method=first.memory_method,
        allocated_peak_bytes=int(statistics.median(allocated)) if allocated else None,
        load_average=first.load_average,
        background_cpu=max(backgrounds) if backgrounds else None,
        background_before=first.background_before,
    )


def _describe(outcome: Measurement) -> str:
    case = outcome.case
    head = f"{case['model']} {case['size']}px B={case['batch']} {case['approach']}"
    if outcome.status != "ok":
        return f"{head}: {outcome.status} ({outcome.reason})"
    background = outcome.background_cpu
    interleaved = (
        f" (interleaved {outcome.interleaved_median_s * 1e3:.1f} ms)"
        if outcome.interleaved_median_s
        else ""
    )
    return (
        f"{head}: {outcome.median_s * 1e3:.1f} ms (n={len(outcome.times_s)}){interleaved}, "
        f"peak +{outcome.peak_bytes / 2**20:.0f} MiB, background CPU "
        + ("-" if background is None else f"{100 * background:.0f}%")
    )


def _document(
    args: argparse.Namespace,
    results: list[Measurement],
    load_start: tuple[float, float, float],
    started: float,
) -> dict[str, Any]:
    threads = args.threads or len(os.sched_getaffinity(0))
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "device": args.device,
        "cuda_device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
    }
    with contextlib.suppress(ImportError):
        import transformers

        machine["transformers"] = transformers.__version__
    settings = {key: value for key, value in vars(args).items() if key not in ("out",)}
    document = {
        "suite": "attnexplain speed",
        "machine": machine,
        "settings": settings,
        "wall_s": time.perf_counter() - started,
        "results": [asdict(result) for result in results],
    }
    document["ratios"] = ratios(document["results"])
    document["targets"] = check_targets(document["ratios"])
    document["relevance"] = relevance_ratios(document["ratios"])
    return document


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case: time and peak memory against the floor of the same model, size and batch."""
    floors = {
        _group(result): result
        for result in results
        if result["case"]["approach"] == "floor" and result["status"] == "ok"
    }
    rows = []
    for result in results:
        case, floor = result["case"], floors.get(_group(result))
        row = {
            "model": case["model"],
            "size": case["size"],
            "batch": case["batch"],
            "approach": case["approach"],
            "tokens": result["tokens"],
            "status": result["status"],
            "reason": result["reason"],
            "background_cpu": result.get("background_cpu"),
        }
        if result["status"] == "ok":
            row["timing"] = "isolated"
            seconds, floor_seconds = result["median_s"], floor and floor["median_s"]
            if floor and result.get("interleaved_median_s") and floor.get("interleaved_median_s"):
                row["timing"] = "interleaved"
                seconds, floor_seconds = (
                    result["interleaved_median_s"],
                    floor["interleaved_median_s"],
                )
            row["time_ms"] = seconds * 1e3
            row["isolated_time_ms"] = result["median_s"] * 1e3
            row["peak_mib"] = result["peak_bytes"] / 2**20
            if floor is not None:
                row["time_ratio"] = seconds / floor_seconds
                row["extra_peak_mib"] = (result["peak_bytes"] - floor["peak_bytes"]) / 2**20
                row["peak_ratio"] = result["peak_bytes"] / max(floor["peak_bytes"], 1)
                allocated, floor_allocated = (
                    result.get("allocated_peak_bytes"),
                    floor.get("allocated_peak_bytes"),
                )
                if allocated is not None and floor_allocated:
                    row["allocated_peak_mib"] = allocated / 2**20
                    row["allocated_peak_ratio"] = allocated / floor_allocated
                    row["extra_allocated_mib"] = (allocated - floor_allocated) / 2**20
                total = result["peak_bytes"] + result["resident_bytes"]
                row["total_peak_ratio"] = total / (floor["peak_bytes"] + floor["resident_bytes"])
        rows.append(row)
    return rows


def relevance_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per relevance method: time and peak memory against ``floor_backward`` and ``gradcam``.

    ``floor_backward`` (one forward and one backward) is the physical floor of a method that
    propagates one backward pass; Grad-CAM is the cheapest gradient method.
    """
    by_key = {(r["model"], r["size"], r["batch"], r["approach"]): r for r in rows}
    table = []
    for (model, size, batch, approach), row in by_key.items():
        if approach not in RELEVANCE or "time_ms" not in row:
            continue
        entry = {"model": model, "size": size, "batch": batch, "approach": approach,
                 "time_ms": row["time_ms"], "peak_mib": row["peak_mib"]}  # fmt: skip
        for reference in ("floor_backward", "gradcam"):
            other = by_key.get((model, size, batch, reference))
            if other is not None and "time_ms" in other:
                entry[f"time_vs_{reference}"] = row["time_ms"] / other["time_ms"]
                entry[f"peak_vs_{reference}"] = row["peak_mib"] / max(other["peak_mib"], 1e-9)
        table.append(entry)
    return table


def format_relevance(table: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`relevance_ratios`."""
    lines = [
        "| model | px | B | approach | time (ms) | x floor_backward | x gradcam | RSS peak (MiB) "
        "| x floor_backward | x gradcam |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in table:
        lines.append(
            f"| {entry['model']} | {entry['size']} | {entry['batch']} | {entry['approach']} "
            f"| {entry['time_ms']:.1f} | {_fmt(entry.get('time_vs_floor_backward'), 'x')} "
            f"| {_fmt(entry.get('time_vs_gradcam'), 'x')} | {entry['peak_mib']:.0f} "
            f"| {_fmt(entry.get('peak_vs_floor_backward'), 'x')} "
            f"| {_fmt(entry.get('peak_vs_gradcam'), 'x')} |"
        )
    return "\n".join(lines)


def _group(result: dict[str, Any]) -> tuple[str, int, int]:
    case = result["case"]
    return case["model"], case["size"], case["batch"]


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, judged per (model, size, batch) on the measured ratios.

    - ``raw_cls``: time and peak memory within 1.05x the floor;
    - ``rollout`` and ``mad``: time within 1.3x the floor up to 448 px, 2x above;
    - ``mad`` stores no attention: its extra allocated peak is at most the kernel's transient
      working set, three score chunks (scores, probabilities, one temporary), whatever the depth;
    - ``rollout`` at >= 896 px: >= 3x faster than ``eager_rollout``, extra peak memory (over
      the floor) no more than the ``L`` head-fused maps, ``L * B * N^2`` fp32 values;
    - ``transformer_attribution`` at 224 px: time within 3x ``floor_backward``.
    """
    by_key = {(r["model"], r["size"], r["batch"], r["approach"]): r for r in rows}
    checks = []

    def add(row: dict[str, Any], target: str, value: float, limit: float, higher: bool) -> None:
        met = value >= limit if higher else value <= limit
        checks.append(
            {
                "model": row["model"],
                "size": row["size"],
                "batch": row["batch"],
                "approach": row["approach"],
                "target": target,
                "value": value,
                "limit": limit,
                "met": met,
            }
        )

    for (model, size, batch, approach), row in by_key.items():
        if "time_ratio" not in row:
            continue
        floor_backward = by_key.get((model, size, batch, "floor_backward"), {})
        if approach == "transformer_attribution" and size == 224 and "time_ms" in floor_backward:
            ratio = row["time_ms"] / floor_backward["time_ms"]
            add(row, "time <= 3x floor_backward", ratio, 3.0, higher=False)
        if approach == "raw_cls":
            add(row, "time <= 1.05x floor", row["time_ratio"], 1.05, higher=False)
            add(row, "RSS peak <= 1.05x floor", row["peak_ratio"], 1.05, higher=False)
            if "allocated_peak_ratio" in row:
                ratio = row["allocated_peak_ratio"]
                add(row, "allocated peak <= 1.05x floor", ratio, 1.05, higher=False)
        if approach in ("rollout", "mad"):
            limit = 1.3 if size <= 448 else 2.0
            add(row, f"time <= {limit:g}x floor", row["time_ratio"], limit, higher=False)
        if approach == "mad" and "extra_allocated_mib" in row:
            shape = MODELS[model]
            layer = batch * shape["num_attention_heads"] * row["tokens"] ** 2 * FP32
            working_set_mib = 3 * min(layer, CHUNK_BYTES) / 2**20
            target = "stores no attention: extra allocated <= 3 score chunks (MiB)"
            add(row, target, row["extra_allocated_mib"], working_set_mib, higher=False)
        if approach == "rollout" and size >= 896:
            layers = MODELS[model]["num_hidden_layers"]
            fused_mib = layers * batch * row["tokens"] ** 2 * FP32 / 2**20
            target = "extra {} peak <= L*B*N^2 fp32 (MiB)"
            add(row, target.format("RSS"), row["extra_peak_mib"], fused_mib, higher=False)
            if "extra_allocated_mib" in row:
                extra = row["extra_allocated_mib"]
                add(row, target.format("allocated"), extra, fused_mib, higher=False)
            peer = by_key.get((model, size, batch, "eager_rollout"))
            if peer is not None and "time_ms" in peer:
                speedup = peer["time_ms"] / row["time_ms"]
                add(row, "speed-up vs eager_rollout >= 3x", speedup, 3.0, higher=True)
    return checks


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the ratios (one line per case, skipped ones with their reason).

    ``RSS`` columns: the high-water mark of the process over its resident set; ``alloc``
    columns: the peak of torch's live allocations (CPU profiler, or CUDA's allocator); ``bg
    CPU``: the machine's CPU share other processes used during the timed calls. A time marked
    ``*`` is the interleaved median (``--interleave``), else the isolated one.
    """
    lines = [
        "| model | px | B | N | approach | time (ms) | x floor | RSS peak (MiB) | x floor "
        "| +MiB | alloc peak (MiB) | x floor | +MiB | bg CPU |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        head = (
            f"| {row['model']} | {row['size']} | {row['batch']} | {row['tokens']} "
            f"| {row['approach']} "
        )
        if row["status"] != "ok":
            lines.append(head + f"| {row['status']}: {row['reason']} |" + " |" * 8)
            continue
        marker = "*" if row.get("timing") == "interleaved" else ""
        cells = [
            f"{row['time_ms']:.1f}{marker}",
            _fmt(row.get("time_ratio"), "x"),
            f"{row['peak_mib']:.0f}",
            _fmt(row.get("peak_ratio"), "x"),
            _fmt(row.get("extra_peak_mib"), ""),
            _fmt(row.get("allocated_peak_mib"), "MiB"),
            _fmt(row.get("allocated_peak_ratio"), "x"),
            _fmt(row.get("extra_allocated_mib"), ""),
            "-" if row.get("background_cpu") is None else f"{100 * row['background_cpu']:.0f}%",
        ]
        lines.append(head + "| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_targets(checks: list[dict[str, Any]]) -> str:
    """A Markdown table of the targets, one line per check."""
    lines = [
        "| model | px | B | approach | target | measured | met |",
        "|---|---:|---:|---|---|---:|---|",
    ]
    for check in checks:
        lines.append(
            f"| {check['model']} | {check['size']} | {check['batch']} | {check['approach']} "
            f"| {check['target']} | {check['value']:.2f} | {'yes' if check['met'] else 'NO'} |"
        )
    return "\n".join(lines)


def _fmt(value: float | None, suffix: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if suffix == "MiB":
        return f"{value:.0f}"
    return f"{value:.2f}{suffix}" if suffix else f"{value:+.0f}"


def write_json(path: str | Path, document: dict[str, Any]) -> None:
    """Write ``document`` as indented JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(document, indent=2))
    temporary.replace(path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None)
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="input sides in px")
    parser.add_argument("--batches", nargs="+", type=int, default=None)
    parser.add_argument("--approaches", nargs="+", choices=APPROACHES, default=list(APPROACHES))
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=20.0,
        help="fewer timed calls (at least 1) when the warm-up shows they would take longer",
    )
    parser.add_argument(
        "--single-call-s",
        type=float,
        default=10.0,
        help="a first call longer than this is timed alone, without warm-up",
    )
    parser.add_argument(
        "--no-allocated-peak",
        action="store_true",
        help="skip the extra profiled call that measures torch's allocated peak (CPU)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=1,
        help="fresh processes per case, round-robin over the approaches (default 1); the\n"
        "result is the median of the trials' medians",
    )
    parser.add_argument(
        "--interleave",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time each group's approaches round-robin in one process and take the\n"
        "ratios from there (default: on with --quick)",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or the process's CPU time (robust to other processes on a shared\n"
        "CPU; use with --threads 1)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:index]")
    parser.add_argument("--threads", type=int, default=None, help="default: the usable cores")
    parser.add_argument(
        "--wait-quiet-s",
        type=float,
        default=0.0,
        help="before each case, wait up to this long for other processes to use < 10%% CPU",
    )
    parser.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        default=None,
        metavar="BYTES",
        help="set glibc's MALLOC_MMAP_THRESHOLD_ in the children: the RSS peak then follows\n"
        "torch's allocations (no heap retention) at some cost in page faults",
    )
    parser.add_argument("--memory-budget-gb", type=float, default=12.0)
    parser.add_argument("--case-timeout-s", type=float, default=900.0)
    parser.add_argument("--out", default=None, help="write the raw results as JSON here")
    parser.add_argument(
        "--quick", action="store_true", help="ViT-S at 224 and 448 px, batch 1 (a few minutes)"
    )
    parser.add_argument(
        "--from-json",
        nargs="+",
        default=None,
        metavar="FILE",
        help="measure nothing: print the tables of earlier runs' JSON files, merged\n"
        "(a case in several files is taken from the last)",
    )
    parser.add_argument(
        "--flow",
        action="store_true",
        help="measure attention flow against the reference networkx approach instead\n"
        "(default ViT-S/16 at 224 px, one image)",
    )
    parser.add_argument(
        "--flow-reference-tokens",
        type=int,
        default=2,
        help="patches the reference solves (timed, then extrapolated to all; 0: no\n"
        "reference); default 2",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="no child processes (debugging only: peak memory is then not per case)",
    )
    args = parser.parse_args(argv)
    defaults = FLOW_DEFAULTS if args.flow else QUICK if args.quick else {
        "models": DEFAULT_MODELS, "sizes": DEFAULT_SIZES, "batches": DEFAULT_BATCHES
    }  # fmt: skip
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, list(value))
    if "floor" not in args.approaches:
        args.approaches = ["floor", *args.approaches]
    if args.interleave is None:
        args.interleave = args.quick
    if args.trials < 1:
        parser.error(f"--trials must be >= 1, got {args.trials}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if any(size % PATCH for size in args.sizes):
        parser.error(f"--sizes must be multiples of the patch size {PATCH}, got {args.sizes}")
    return args


def report_files(paths: Sequence[str | Path]) -> dict[str, Any]:
    """Merge the results of earlier runs, recompute ratios and targets, print the tables.

    A case present in several files is taken from the last one (re-measure a disturbed case and
    pass its file after the original).
    """
    documents = [json.loads(Path(path).read_text()) for path in paths]
    latest: dict[tuple[str, int, int, str], dict[str, Any]] = {}
    for document in documents:  # a case measured again in a later file replaces the earlier one
        for result in document["results"]:
            latest[(*_group(result), result["case"]["approach"])] = result
    results = list(latest.values())
    merged = {
        "suite": "attnexplain speed",
        "machines": [document["machine"] for document in documents],
        "results": results,
        "ratios": ratios(results),
    }
    merged["targets"] = check_targets(merged["ratios"])
    merged["relevance"] = relevance_ratios(merged["ratios"])
    print(format_table(merged["ratios"]))
    print()
    print(format_targets(merged["targets"]))
    print()
    print(format_relevance(merged["relevance"]))
    return merged


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the suite from the command line; returns the JSON document."""
    args = parse_args(argv)
    if args.from_json:
        return report_files(args.from_json)
    if args.flow:
        document = flow_suite(args)
        print(format_flow(document["flow"]))
        if args.out:
            write_json(args.out, document)
        return document
    document = run_suite(args)
    print()
    print(format_table(document["ratios"]))
    if document["targets"]:
        print()
        print(format_targets(document["targets"]))
    if document["relevance"]:
        print()
        print(format_relevance(document["relevance"]))
    machine = document["machine"]
    print(
        f"\n{machine['threads']} threads on {machine['device']}, torch {machine['torch']}, "
        f"load average {machine['load_average_start'][0]:.2f} -> "
        f"{machine['load_average_end'][0]:.2f}, {document['wall_s']:.0f} s"
    )
    if args.out:
        write_json(args.out, document)
        print(f"results written to {args.out}")
    return document


if __name__ == "__main__":
    main()
