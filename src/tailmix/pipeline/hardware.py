"""What ``auto`` speed settings choose on the device a run trains on, and why.

``train.precision: auto`` trains a convolutional network in bf16 autocast only where the
device computes bf16 natively: a CUDA GPU of compute capability 8.0 or newer (Ampere and
later), or a CPU with AVX512-BF16 or AMX instructions. Elsewhere bf16 is emulated through
fp32 and runs several times slower than fp32 itself, so ``auto`` trains in fp32. fp16 (with
loss scaling) is never chosen by ``auto``.

``train.channels_last: auto`` uses the channels-last memory format for a ResNet's images: its
convolutions run faster in it on a GPU, in bf16, and in fp32 on an AVX2 CPU too (ResNet-32,
batch 128: 152 against 135 img/s for a training step, ``benchmarks/README.md``).

Each choice comes with the reason, which the run logs and records in ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SpeedChoice", "choose_speed", "cpu_capability", "native_bf16"]

# Built-in networks made of convolutions: the ones whose speed the settings below measured.
CONV_ARCHS = ("resnet32", "resnet18", "resnet50", "resnext50_32x4d")


def cpu_capability() -> str:
    """The vector instruction set PyTorch's CPU kernels use here (``AVX2``, ``AVX512``...)."""
    return str(torch.backends.cpu.get_cpu_capability())


def _cpu_flag(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)  # private probes: absent in some builds
    try:
        return bool(probe()) if probe is not None else False
    except (RuntimeError, AttributeError):
        return False


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 in hardware, and what says so."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        ok = major >= 8
        return ok, f"compute capability {major}.{minor} ({'>=' if ok else '<'} 8.0)"
    if device.type == "cpu":
        found = [label for flag, label in (("_is_avx512_bf16_supported", "AVX512-BF16"),
                                           ("_is_amx_tile_supported", "AMX"))
                 if _cpu_flag(flag)]
        if found:
            return True, f"CPU with {' and '.join(found)}"
        return False, f"CPU capability {cpu_capability()}, without AVX512-BF16 or AMX"
    return False, f"device type {device.type}"


@dataclass(frozen=True)
class SpeedChoice:
    """The autocast dtype (None: fp32) and memory format a run trains with, and why."""

    amp: torch.dtype | None
    channels_last: bool
    reason: str

    @property
    def precision(self) -> str:
        """The precision actually used: ``fp32``, ``bf16`` or ``fp16``."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp]

    def record(self) -> dict[str, object]:
        """What ``metrics.json`` keeps of the choice."""
        return {"precision": self.precision, "channels_last": self.channels_last,
                "reason": self.reason}


def choose_speed(precision: str, channels_last: bool | str, device: torch.device, *,
                 arch: str, is_image: bool) -> SpeedChoice:
    """Resolve ``train.precision`` and ``train.channels_last`` for ``arch`` on ``device``.

    A precision other than ``auto`` is used as written, and so is a boolean
    ``channels_last``. ``auto`` precision is bf16 for a convolutional network (a built-in
    ResNet, or a torchvision or timm backbone on CUDA) on a device with native bf16, fp32
    otherwise; ``auto`` channels-last is on for a built-in ResNet's images.
    """
    external = arch.startswith(("torchvision:", "timm:"))
    conv = arch in CONV_ARCHS or external
    native, why = native_bf16(device)
    notes = []
    if precision == "auto":
        # Backbones from other packages stay in fp32 on a CPU: their layers were not measured.
        bf16 = conv and native and (device.type == "cuda" or not external)
        amp = torch.bfloat16 if bf16 else None
        if not conv:
            notes.append(f"precision auto -> fp32: {arch!r} is not a convolutional network")
        elif bf16:
            notes.append(f"precision auto -> bf16: native bf16 ({why})")
        elif native:
            notes.append(f"precision auto -> fp32: {arch} on a CPU is kept in fp32")
        else:
            notes.append(f"precision auto -> fp32: no native bf16 ({why}); emulated bf16 "
                         "runs several times slower than fp32")
    else:
        amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        notes.append(f"precision {precision} as set")
    if channels_last == "auto":
        resnet = is_image and arch.startswith("resnet")
        cl = resnet
        if resnet:
            notes.append("channels_last auto -> on")
    else:
        cl = bool(channels_last)
    return SpeedChoice(amp, cl, "; ".join(notes))
