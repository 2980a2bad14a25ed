"""The ``auto`` speed settings: bf16 only where the device computes it natively."""

from __future__ import annotations

import json

import pytest
import torch

from tailmix.pipeline import hardware
from tailmix.pipeline.hardware import choose_speed

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)


@pytest.fixture
def cpu_flags(monkeypatch):
    """Set which of the CPU's bf16 instructions the probes report."""
    def set_flags(*, avx512_bf16: bool = False, amx: bool = False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    return set_flags


@pytest.fixture
def cuda_capability(monkeypatch):
    def set_capability(major: int, minor: int):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None:
                            (major, minor))
    return set_capability


def auto(device, arch="resnet32", is_image=True):
    return choose_speed("auto", "auto", device, arch=arch, is_image=is_image)


def test_a_cpu_without_native_bf16_trains_resnets_in_fp32(cpu_flags):
    cpu_flags()
    choice = auto(CPU)
    assert choice.amp is None and choice.precision == "fp32" and choice.channels_last
    assert "no native bf16" in choice.reason and hardware.cpu_capability() in choice.reason


@pytest.mark.parametrize("flags, named", [({"avx512_bf16": True}, "AVX512-BF16"),
                                          ({"amx": True}, "AMX"),
                                          ({"avx512_bf16": True, "amx": True}, "AMX")])
def test_a_cpu_with_native_bf16_trains_resnets_in_bf16_channels_last(cpu_flags, flags, named):
    cpu_flags(**flags)
    choice = auto(CPU)
    assert choice.amp is torch.bfloat16 and choice.channels_last
    assert named in choice.reason
    # Networks that are not convolutional, and other packages' backbones on a CPU, stay fp32.
    assert auto(CPU, arch="mlp", is_image=False).amp is None
    assert auto(CPU, arch="small_cnn").amp is None
    assert auto(CPU, arch="timm:resnet18").amp is None


@pytest.mark.parametrize("capability, bf16", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_a_gpu_uses_bf16_from_compute_capability_8(cuda_capability, capability, bf16):
    cuda_capability(*capability)
    for arch in ("resnet32", "torchvision:resnet50"):
        choice = auto(CUDA, arch=arch)
        assert (choice.amp is torch.bfloat16) is bf16
        assert f"{capability[0]}.{capability[1]}" in choice.reason
    assert auto(CUDA).channels_last and not auto(CUDA, arch="small_cnn").channels_last


def test_a_written_setting_is_used_as_written(cpu_flags):
    cpu_flags()
    assert choose_speed("bf16", "auto", CPU, arch="resnet32", is_image=True).record() == {
        "precision": "bf16", "channels_last": True, "reason": "precision bf16 as set; "
        "channels_last auto -> on"}
    fp16 = choose_speed("fp16", False, CPU, arch="resnet32", is_image=True)
    assert fp16.amp is torch.float16 and not fp16.channels_last
    cpu_flags(avx512_bf16=True)
    fp32 = choose_speed("fp32", True, CPU, arch="mlp", is_image=False)
    assert fp32.amp is None and fp32.channels_last


def test_a_run_records_the_choice_and_the_cpu_capability(tmp_path):
    from tailmix import train

    lines = []
    train({"dataset": {"name": "digits"}, "model": {"arch": "small_cnn"},
           "train": {"epochs": 1, "batch_size": 64, "device": "cpu"},
           "log": {"progress": False}, "eval": {"margins": False}}, tmp_path / "run",
          log=lines.append)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["speed"]["precision"] == "fp32" and metrics["speed"]["channels_last"] is False
    assert metrics["environment"]["cpu_capability"] == str(
        torch.backends.cpu.get_cpu_capability())
    assert f"speed: {metrics['speed']['reason']}" in lines
