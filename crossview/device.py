"""The one place a compute device is chosen."""

from __future__ import annotations

import torch


def pick_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU (``cuda:local_rank``) when there is one, else the CPU; any other name as given."""
    if name is None or str(name) == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_of(device: str | torch.device | None, *tensors: torch.Tensor) -> torch.device:
    """``device`` when given, else the first non-CPU device among ``tensors``, else the CPU."""
    if device is not None:
        return torch.device(device)
    for x in tensors:
        if x.device.type != "cpu":
            return x.device
    return torch.device("cpu")


# -- CPU inference precision: decided here, used by embed, eval, locate-index, locate and serve --

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_flags() -> set[str]:
    """The processor's feature flags from ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_supported() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX), so oneDNN's bf16 kernels are fast; without
    them bf16 is emulated and slower than fp32."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_precision(requested: str = "auto", device: str | torch.device = "cpu") -> str:
    """The inference precision, ``fp32`` or ``bf16``, for ``requested`` (``auto | fp32 | bf16``) on ``device``.

    ``auto``: bf16 on a CPU with native bf16 (see :func:`cpu_bf16_supported`), fp32 elsewhere, including GPUs
    (whose fp16 path is ``--half``). An explicit ``bf16`` is honoured everywhere (emulated, hence slow, on CPUs
    without bf16)."""
    from crossview.errors import ConfigError

    if requested not in PRECISIONS:
        raise ConfigError(f"--precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    return "bf16" if torch.device(device).type == "cpu" and cpu_bf16_supported() else "fp32"


def inference_autocast(precision: str, device: str | torch.device = "cpu", half: bool = False):
    """The context inference runs in: bf16 autocast for ``precision="bf16"`` (convolutions and matrix products in
    bf16, reductions and normalisations kept in fp32 by torch's autocast lists), fp16 autocast for ``half`` on a
    GPU, else nothing."""
    import contextlib

    dev = torch.device(device).type
    if precision == "bf16":
        return torch.autocast(dev, dtype=torch.bfloat16)
    if half and dev == "cuda":
        return torch.autocast(dev, dtype=torch.float16)
    return contextlib.nullcontext()


def prepare_for_inference(model: torch.nn.Module, precision: str, device: str | torch.device = "cpu"):
    """``model`` in eval mode, on the CPU bf16 path also in channels-last layout (oneDNN's fast convolutions);
    weights keep their values and fp32 type, so the model's identity hash does not change."""
    model.eval()
    if precision == "bf16" and torch.device(device).type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model


def as_input(x: torch.Tensor, precision: str) -> torch.Tensor:
    """An image batch in the layout :func:`prepare_for_inference` chose (channels-last on the bf16 path)."""
    return x.contiguous(memory_format=torch.channels_last) if precision == "bf16" and x.dim() == 4 else x


# -- torch.compile of the embedding network: on the CPU bf16 path inductor fuses the norms and activations around
# oneDNN's bf16 matrix products and pre-packs the frozen weights (MFRGN-B: 3.2x fp32 instead of 2.4x eager), at a
# one-off compile of 1-2 minutes, so it pays off on long jobs only.

COMPILE_MODES = ("auto", "on", "off")
COMPILE_AUTO_MIN_ITEMS = 2000  # images in one job before ``auto`` compiles (break-even of MFRGN-B is about 1,600)
COMPILE_AUTO_MIN_PARAMS = 20_000_000  # small networks gain little from compiling
_compile_mode = "auto"


def set_compile_mode(mode: str) -> None:
    """The process-wide ``--compile`` choice: ``auto`` (compile long CPU bf16 embedding jobs of large networks),
    ``on`` (every embedding job) or ``off``."""
    from crossview.errors import ConfigError

    global _compile_mode
    if mode not in COMPILE_MODES:
        raise ConfigError(f"--compile {mode!r}: choose one of {', '.join(COMPILE_MODES)}")
    _compile_mode = mode


def should_compile(model: torch.nn.Module, n_items: int, precision: str, device: str | torch.device = "cpu",
                   mode: str | None = None) -> bool:
    """Whether an embedding job of ``n_items`` images runs ``model`` compiled (see :func:`set_compile_mode`)."""
    mode = mode or _compile_mode
    if mode != "auto":
        return mode == "on"
    big = sum(p.numel() for p in model.parameters()) >= COMPILE_AUTO_MIN_PARAMS
    return (precision == "bf16" and torch.device(device).type == "cpu" and n_items >= COMPILE_AUTO_MIN_ITEMS
            and big)


class _EmbedView(torch.nn.Module):
    """``model.embed(x, view=view)`` as a module's forward, the unit torch.compile traces."""

    def __init__(self, model: torch.nn.Module, view: str):
        super().__init__()
        self.model, self.view = model, view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x, view=self.view)


def embedder(model: torch.nn.Module, view: str, batch: int, compiled: bool):
    """A function ``x -> model.embed(x, view=view)``; with ``compiled`` a torch.compile'd one (inductor, frozen
    weights) built once per model, view and batch size. Batches smaller than ``batch`` are padded to it so the
    last batch of a job does not trigger a second compile. Falls back to the eager network, with a warning, where
    compiling fails (no C++ compiler, an unsupported operator)."""
    import sys

    if not compiled:
        return lambda x: model.embed(x, view=view)
    cache = model.__dict__.setdefault("_crossview_compiled", {})  # dies with the model
    key = (view, batch)
    if key not in cache:
        cache[key] = torch.compile(_EmbedView(model, view).eval(), options={"freezing": True})
    net = cache[key]

    def run(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n < batch:
            x = torch.cat([x, x[-1:].expand(batch - n, *x.shape[1:])]).contiguous(
                memory_format=torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                else torch.contiguous_format)
        try:
            return net(x)[:n]
        except Exception as exc:  # noqa: BLE001 - compiling is an optimisation; the eager network is the reference
            print(f"crossview: warning: torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); "
                  f"embedding without it (--compile off hides this)", file=sys.stderr)
            cache[key] = _EmbedView(model, view)
            return model.embed(x[:n], view=view)
    return run


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else the CPU count)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def competing_load(threads: int) -> str | None:
    """A warning when other processes already keep the cores busy (1-minute load average, or processes running
    right now, plus our ``threads`` exceed the cores), else None. Measured before our own work starts."""
    import os

    cores = usable_cpus()
    try:
        load1 = os.getloadavg()[0]
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0]) - 1  # minus this process
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    busy = max(load1, float(running))
    if busy + threads <= cores + 0.5:
        return None
    return (f"other processes are competing for the CPU (load average {load1:.2f}, {running} running, "
            f"{cores} cores, {threads} threads here): inference will be slower than it can be; stop them or "
            f"lower --threads")


def configure_threads(threads: int | None = None, warn: bool = True) -> int:
    """Set torch's intra-op threads to ``threads`` (default: the usable CPUs, one per core, no oversubscription)
    and warn on stderr when other processes compete for the cores. Returns the thread count."""
    import sys

    from crossview.errors import ConfigError

    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: give at least 1")
    n = int(threads or usable_cpus())
    torch.set_num_threads(n)
    msg = competing_load(n) if warn else None
    if msg:
        print(f"crossview: warning: {msg}", file=sys.stderr)
    return n


def setup_inference(args, local_rank: int = 0, warn: bool = True) -> tuple[torch.device, str]:
    """An inference command's device and precision from its ``--device``, ``--precision``, ``--compile`` and
    ``--threads`` (see :func:`add_precision_args`); on the CPU also sets the threads (warning on competing load
    when ``warn``)."""
    device = pick_device(args.device, local_rank)
    precision = cpu_precision(args.precision, device)
    set_compile_mode(args.compile)
    if device.type == "cpu":
        configure_threads(args.threads, warn=warn)
    return device, precision


def inference_record(precision: str, device: str | torch.device = "cpu") -> dict:
    """What outputs record about how inference ran: precision, channels-last, threads, native CPU bf16."""
    cpu = torch.device(device).type == "cpu"
    return {"precision": precision, "channels_last": precision == "bf16" and cpu,
            "threads": torch.get_num_threads() if cpu else None, "cpu_bf16": cpu_bf16_supported() if cpu else None}


def add_precision_args(parser) -> None:
    """``--precision auto|fp32|bf16`` and ``--threads N`` on a sub-command's parser."""
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="inference precision: auto = bf16 + channels-last on CPUs with native bf16 "
                             "(AVX-512 BF16 / AMX), fp32 elsewhere (default auto); descriptors are stored as "
                             "float32 either way")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the usable CPU count)")
    parser.add_argument("--compile", choices=COMPILE_MODES, default="auto",
                        help="torch.compile the embedding network: auto = on the CPU bf16 path for jobs of "
                             f"{COMPILE_AUTO_MIN_ITEMS:,}+ images with a large network (a 1-2 min one-off compile, "
                             "then about 1.3x faster); on; off (default auto)")


def _to_fp32(x):
    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
    if isinstance(x, tuple | list):
        return type(x)(_to_fp32(v) for v in x) if not hasattr(x, "_fields") else type(x)(*(_to_fp32(v) for v in x))
    if isinstance(x, dict):
        return {k: _to_fp32(v) for k, v in x.items()}
    return x


def _networks(model: torch.nn.Module):
    """The direct sub-networks of ``model``: its children, with module lists and dicts opened."""
    for child in model.children():
        if isinstance(child, torch.nn.ModuleList | torch.nn.ModuleDict):  # no forward of their own
            yield from (child.values() if isinstance(child, torch.nn.ModuleDict) else child)
        else:
            yield child


def subnetwork_autocast(model: torch.nn.Module, precision: str, device: str | torch.device = "cpu"):
    """A context in which only ``model``'s sub-networks (its child modules: encoders, heads, update blocks) run under
    bf16 autocast, each returning fp32 tensors, while what ``model`` computes between them (spherical / BEV
    transforms' sampling grids, correlation soft-argmax, Procrustes, RANSAC, homography solves) stays in fp32.
    The fine models' pose geometry needs fp32 (``torch.linalg`` has no bf16 kernels), their feature networks do
    not. For ``precision="fp32"`` nothing changes."""
    import contextlib
    import functools

    if precision != "bf16":
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def ctx():
        wrapped = []
        for net in _networks(model):
            def forward(*a, _f=net.forward, **k):
                with inference_autocast(precision, device):
                    return _to_fp32(_f(*a, **k))
            net.forward = functools.wraps(net.forward)(forward)
            wrapped.append(net)
        try:
            yield model
        finally:
            for net in wrapped:
                del net.forward  # back to the class's forward
    return ctx()
