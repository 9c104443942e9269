"""One device setting for every command: ``--device`` and ``--dtype`` (train, eval, search, merge, serve).

``resolve_device(name)`` turns a user's device into a torch device string:

- ``auto`` (the default of every command but ``merge``): ``cuda`` when torch sees a CUDA device, else ``cpu``;
- ``cpu``; ``cuda`` (the current CUDA device); ``cuda:N`` (device N).

Asking for CUDA where torch sees none (a CPU-only torch build, no driver, ``CUDA_VISIBLE_DEVICES=""``) or for an index
past the last device is a one-line :class:`~safemerge.errors.ConfigError` naming the flag, exit code 2.

``resolve_dtype(name, device)`` is the dtype policy:

- ``auto``: ``bfloat16`` on a CUDA device that supports it (Ampere and newer; else ``float32``), ``float32`` on the
  CPU (the CPU facts of docs/ARCHITECTURE.md: tiny models are evaluated and trained in fp32);
- an explicit ``float32`` / ``bfloat16`` / ``float16`` is kept (``float16`` needs CUDA);
- ``tf32``: float32 weights with TensorFloat-32 matrix products (CUDA only; :func:`matmul_precision`).

bf16, fp16 and TF32 results are NOT bit-identical to fp32 (nor to the same dtype on the CPU): every command that
uses them records the resolved device and dtype with its output (``train_config.json``, a search's
``result.json``, ``safemerge eval``'s results). Only torch is imported, and only inside functions.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator

from safemerge.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16", "tf32")
_ALIASES = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16", "fp16": "float16", "f16": "float16",
            "half": "float16"}
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")

DEVICE_HELP = ("Where to run: auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N; asking for "
               "CUDA without a CUDA device is an error.")
DTYPE_HELP = ("Weights' dtype: auto (bfloat16 on a CUDA device that supports it, float32 on the CPU), float32, "
              "bfloat16, float16 (CUDA only) or tf32 (float32 weights, TF32 matrix products; CUDA only). bf16/fp16/"
              "TF32 results are not bit-identical to float32.")


def check_device_name(device: str, flag: str = "--device") -> str:
    """``device`` normalised (lower case, stripped) if it is a valid name, else a one-line ConfigError.

    Syntax only (no torch import): for pydantic validators and early CLI checks."""
    name = str(device).strip().lower()
    if not _DEVICE.match(name):
        raise ConfigError(f"{flag} {device!r}: unknown device; choose auto, cpu, cuda or cuda:N (N = GPU index)")
    return name


def check_dtype_name(dtype: str, flag: str = "--dtype") -> str:
    """``dtype`` normalised (aliases such as bf16, fp32 accepted) if valid, else a one-line ConfigError."""
    name = str(dtype).strip().lower()
    name = _ALIASES.get(name, name)
    if name not in DTYPE_CHOICES:
        raise ConfigError(f"{flag} {dtype!r}: unknown dtype; choose {', '.join(DTYPE_CHOICES)}")
    return name


def device_field(value: str) -> str:
    """:func:`check_device_name` for a pydantic field named ``device``: the problem as a ValueError (pydantic adds
    the key and the location)."""
    try:
        return check_device_name(value, "device")
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("device ")) from None


def dtype_field(value: str) -> str:
    """:func:`check_dtype_name` for a pydantic field named ``dtype`` (as :func:`device_field`)."""
    try:
        return check_dtype_name(value, "dtype")
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("dtype ")) from None


# config fields checked by device_field / dtype_field (train and study specs)
DeviceName = Annotated[str, AfterValidator(device_field)]
DtypeName = Annotated[str, AfterValidator(dtype_field)]


def cuda_count() -> int:
    """How many CUDA devices torch sees (0 with a CPU-only torch build or without a driver)."""
    import torch

    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except (RuntimeError, AssertionError):  # a CUDA build without a usable driver
        return 0


def resolve_device(device: str | None = "auto", flag: str = "--device") -> str:
    """``auto`` -> ``cuda`` or ``cpu``; ``cpu`` / ``cuda`` / ``cuda:N`` checked against what torch sees.

    A one-line ConfigError naming ``flag`` for an unknown name, for CUDA without a CUDA device, and for ``cuda:N``
    past the last device."""
    name = check_device_name(device or "auto", flag)
    if name == "cpu":
        return "cpu"
    n = cuda_count()
    if name == "auto":
        return "cuda" if n else "cpu"
    if n == 0:
        import torch

        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"{flag} {name}: torch sees no CUDA device (torch {torch.__version__}, {build}); "
                          f"use {flag} cpu or {flag} auto, or run on a machine with an NVIDIA GPU and a CUDA torch")
    if ":" in name and int(name.split(":")[1]) >= n:
        raise ConfigError(f"{flag} {name}: there are only {n} CUDA device(s) (cuda:0..cuda:{n - 1}); pick one of "
                          "them")
    return name


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def bf16_supported(device: str) -> bool:
    """Whether the CUDA ``device`` computes in bfloat16 natively (compute capability 8.0+: A100, H100, ...)."""
    import torch

    if not is_cuda(device):
        return False
    try:
        return torch.cuda.get_device_capability(torch.device(device))[0] >= 8
    except (RuntimeError, AssertionError):
        return False


def resolve_dtype(dtype: str | None = "auto", device: str = "cpu", flag: str = "--dtype") -> str:
    """The dtype policy (module doc) for an already resolved ``device``: one of float32, bfloat16, float16, tf32."""
    name = check_dtype_name(dtype or "auto", flag)
    if name == "auto":
        return "bfloat16" if bf16_supported(device) else "float32"
    if name in ("float16", "tf32") and not is_cuda(device):
        raise ConfigError(f"{flag} {name} needs a CUDA device (the device is {device}); use {flag} float32 or "
                          "bfloat16 on the CPU")
    return name


def torch_dtype(dtype: str) -> Any:
    """The torch dtype that weights are held in (``tf32`` holds float32)."""
    import torch

    name = check_dtype_name(dtype)
    return {"float32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16,
            "float16": torch.float16, "auto": torch.float32}[name]


@dataclass(frozen=True)
class Placement:
    """A resolved ``--device`` / ``--dtype`` pair."""

    device: str  # cpu | cuda | cuda:N
    dtype: str  # float32 | bfloat16 | float16 | tf32

    @property
    def cuda(self) -> bool:
        return is_cuda(self.device)

    @property
    def torch_dtype(self) -> Any:
        return torch_dtype(self.dtype)

    @property
    def exact_fp32(self) -> bool:
        """Whether the results are plain fp32 (bit-identical to the CPU's for elementwise math; reductions on a
        GPU may still add in another order)."""
        return self.dtype == "float32"

    def record(self) -> dict[str, Any]:
        """What outputs record: device, dtype and whether the numbers are plain fp32."""
        return {"device": self.device, "dtype": self.dtype, "fp32": self.exact_fp32}


def resolve(device: str | None = "auto", dtype: str | None = "auto", device_flag: str = "--device",
            dtype_flag: str = "--dtype") -> Placement:
    """Both settings at once: ``resolve_device`` then ``resolve_dtype`` on that device."""
    dev = resolve_device(device, device_flag)
    return Placement(dev, resolve_dtype(dtype, dev, dtype_flag))


@contextlib.contextmanager
def matmul_precision(dtype: str) -> Iterator[None]:
    """Within the block, CUDA matrix products use TF32 when ``dtype`` is ``tf32`` (else full fp32: torch's default);
    the previous setting is restored afterwards."""
    import torch

    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def release_cuda_memory() -> None:
    """Collect garbage and hand the CUDA caching allocator's free blocks back to the driver (between models: a
    next model, or a vLLM engine sizing its cache from the free memory, then sees all of it). A no-op without
    CUDA."""
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
