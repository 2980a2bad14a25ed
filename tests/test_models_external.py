"""ResNet-50 / ResNeXt-50, adapting outside networks to the model contract, and the optional
torchvision / timm backbones."""

import copy
import sys

import pytest
import torch
from torch import nn

from tailmix._validation import ParameterError
from tailmix.models import (
    ARCHS,
    MLP,
    BottleneckResNet,
    CosineHead,
    SmallCNN,
    Split,
    adapt,
    build_external,
    build_model,
    is_external,
    preprocessing,
)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def quiet(line: str) -> None:
    pass


# --------------------------------------------------------------------------- ResNet-50, ResNeXt-50


@pytest.mark.parametrize(("arch", "expected"), [("resnet50", 25_557_032),
                                                ("resnext50_32x4d", 25_028_904)])
def test_bottleneck_parameter_counts(arch, expected):
    model = build_model(arch, num_classes=1000, input_shape=(3, 224, 224))
    assert isinstance(model, BottleneckResNet)
    assert n_params(model) == expected
    cosine = build_model(arch, num_classes=1000, input_shape=(3, 224, 224), head="cosine")
    assert n_params(cosine) == expected - 1000  # the cosine head has no bias


@pytest.mark.parametrize("arch", ["resnet50", pytest.param("resnext50_32x4d",
                                                           marks=pytest.mark.slow)])
def test_bottleneck_forward_contract(arch):
    assert arch in ARCHS and ARCHS.meta(arch)["inputs"] == "image"
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, input_shape=(3, 32, 32)).eval()
    assert model.feature_dim == 2048 and isinstance(model.head, nn.Linear)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, features = model(x, return_features=True)
        assert logits.shape == (2, 7) and features.shape == (2, 2048)
        assert torch.equal(model.head(features), logits)
        assert torch.equal(model(x), logits)
        # Every block starts as the identity: its last batch norm has zero scale.
        assert all(float(block.bn3.weight.abs().sum()) == 0 for block in model.layers)


def test_resnext_uses_grouped_convolutions():
    model = build_model("resnext50_32x4d", num_classes=10, input_shape=(1, 32, 32))
    first, last = model.layers[0], model.layers[-1]
    assert model.conv1.in_channels == 1
    assert first.conv2.groups == 32 and first.conv2.in_channels == 128
    assert last.conv2.groups == 32 and last.conv2.in_channels == 1024
    plain = build_model("resnet50", num_classes=10)
    assert plain.layers[0].conv2.groups == 1 and plain.layers[0].conv2.in_channels == 64


def test_builtin_arch_refuses_pretrained():
    with pytest.raises(ParameterError) as info:
        build_model("resnet50", num_classes=10, pretrained=True)
    assert info.value.name == "model.pretrained" and "torchvision:" in str(info.value)
    with pytest.raises(ParameterError) as info:
        build_model("resnet32", num_classes=10, pretrained="yes")
    assert info.value.name == "model.pretrained"
    # Unchanged: an unknown built-in name is still refused before anything else.
    with pytest.raises(ParameterError) as info:
        build_model("resnet51", num_classes=10, pretrained=True)
    assert info.value.name == "arch"


# --------------------------------------------------------------------------- adapt


class TinyCNN(nn.Module):
    """A user network: convolutions, batch norm, dropout, then ``fc`` (plus a hidden Linear
    before it of the same width as the classes, which must not be taken for the head)."""

    def __init__(self, num_classes: int = 10, scale: float = 1.0):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.hidden = nn.Linear(8, num_classes)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(num_classes, num_classes)
        self.scale = scale

    def forward(self, x):
        h = torch.relu(self.hidden(self.conv(x).mean(dim=(2, 3))))
        return self.fc(self.drop(h)) * self.scale


def test_adapt_sequential_mlp():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                        nn.Linear(16, 4))
    original = copy.deepcopy(net)
    last = net[4]
    lines = []
    model = adapt(net, num_classes=4, input_shape=(6,), log=lines.append)
    assert isinstance(model, Split) and model.feature_dim == 16 and model.head is last
    assert isinstance(net[4], nn.Identity)  # cut in place
    assert len(lines) == 1 and "'4'" in lines[0] and "Linear 16 -> 4" in lines[0]
    x = torch.randn(5, 6)
    logits, features = model(x, return_features=True)
    assert torch.equal(logits, original(x))
    assert features.shape == (5, 16) and torch.equal(model.features(x), features)


def test_adapt_custom_cnn_keeps_logits_and_training_flags():
    torch.manual_seed(0)
    net = TinyCNN()
    net.train()
    net.conv[1].eval()  # a frozen batch norm stays frozen
    original = copy.deepcopy(net).eval()
    lines = []
    model = adapt(net, num_classes=10, input_shape=(3, 12, 12), log=lines.append)
    assert net.training and not net.conv[1].training and net.drop.training
    assert isinstance(net.fc, nn.Identity) and isinstance(net.hidden, nn.Linear)
    assert isinstance(model.head, nn.Linear) and model.head.in_features == 10
    assert len(lines) == 1 and "'fc'" in lines[0] and "classifier head" in lines[0]
    model.eval()
    x = torch.randn(3, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))
        assert model.features(x).shape == (3, 10)
    assert sorted(model.state_dict()) == sorted(
        ["body." + k for k in original.state_dict() if not k.startswith("fc.")]
        + ["head.weight", "head.bias"])


def test_adapt_cosine_head():
    lines = []
    model = adapt(TinyCNN(), num_classes=10, input_shape=(3, 8, 8), head="cosine",
                  log=lines.append)
    assert isinstance(model.head, CosineHead) and model.head.weight.shape == (10, 10)
    assert "CosineHead" in lines[0]
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 10) and float(logits.abs().max()) <= 1 + 1e-6


def test_adapt_a_bare_linear():
    layer = nn.Linear(5, 3)
    lines = []
    model = adapt(layer, num_classes=3, input_shape=(5,), log=lines.append)
    assert model.head is layer and "the module itself" in lines[0]
    x = torch.randn(4, 5)
    assert torch.equal(model.features(x), x) and torch.equal(model(x), layer(x))


def test_adapt_leaves_the_global_random_stream_alone():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    adapt(TinyCNN(), num_classes=10, input_shape=(3, 8, 8), log=quiet)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(4), expected)


def test_adapt_refuses_wrong_width():
    net = TinyCNN(num_classes=10)
    with pytest.raises(ParameterError) as info:
        adapt(net, num_classes=5, input_shape=(3, 8, 8), log=quiet)
    assert info.value.name == "model" and "(2, 10)" in str(info.value)
    assert isinstance(net.fc, nn.Linear)


def test_adapt_refuses_work_after_the_last_linear():
    net = TinyCNN(scale=2.0)
    with pytest.raises(ParameterError) as info:
        adapt(net, num_classes=10, input_shape=(3, 8, 8), log=quiet)
    assert info.value.name == "model" and "'fc'" in str(info.value)
    assert "not the last step" in str(info.value)
    assert isinstance(net.fc, nn.Linear)  # put back
    assert isinstance(net.hidden, nn.Linear)


def test_adapt_refuses_modules_without_a_classifier():
    conv_only = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ParameterError) as info:
        adapt(conv_only, num_classes=4, input_shape=(3, 8, 8), log=quiet)
    assert "no nn.Linear" in str(info.value)

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x), x

    with pytest.raises(ParameterError) as info:
        adapt(Pair(), num_classes=2, input_shape=(3,), log=quiet)
    assert "tuple" in str(info.value)
    with pytest.raises(ParameterError) as info:
        adapt(nn.Linear(3, 2), num_classes=2, input_shape=(2,), log=quiet)
    assert "RuntimeError" in str(info.value)
    with pytest.raises(ParameterError):
        adapt("not a module", num_classes=2, input_shape=(3,), log=quiet)
    with pytest.raises(ParameterError) as info:
        adapt(nn.Linear(3, 2), num_classes=2, input_shape=(3, 0), log=quiet)
    assert info.value.name == "input_shape"


def test_adapt_passes_contract_models_through():
    lines = []
    cnn = SmallCNN(10, in_channels=3)
    assert adapt(cnn, num_classes=10, input_shape=(3, 8, 8), log=lines.append) is cnn
    assert isinstance(cnn.head, nn.Linear) and "own features() and head" in lines[0]
    mlp = MLP(4, in_features=6, head="cosine")
    head = mlp.head
    assert adapt(mlp, num_classes=4, input_shape=(6,), head="cosine", log=quiet) is mlp
    assert mlp.head is head
    # A linear head is swapped for a cosine one when asked.
    cnn = SmallCNN(10, in_channels=3)
    assert adapt(cnn, num_classes=10, input_shape=(3, 8, 8), head="cosine", log=quiet) is cnn
    assert isinstance(cnn.head, CosineHead)


def test_adapt_cuts_a_module_whose_features_are_not_the_contract():
    class MapFeatures(nn.Module):  # like torchvision's Swin: features() is a feature map
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU())
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            return self.head(self.features(x).mean(dim=(2, 3)))

    net = MapFeatures()
    original = copy.deepcopy(net)
    lines = []
    model = adapt(net, num_classes=3, input_shape=(3, 8, 8), log=lines.append)
    assert isinstance(model, Split) and model.feature_dim == 6
    assert len(lines) == 2 and "not using its own" in lines[0] and "'head'" in lines[1]
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model(x), original(x))


# --------------------------------------------------------------------------- torchvision, timm


def test_is_external_and_preprocessing_of_builtins():
    assert is_external("torchvision:resnet50") and is_external("timm:convnext_tiny")
    assert not is_external("resnet50") and not is_external(None)
    assert preprocessing("resnet50", pretrained=False) is None


def test_external_argument_errors_need_no_package():
    with pytest.raises(ParameterError) as info:
        build_external("torchvision:", num_classes=3, input_shape=(3, 32, 32), log=quiet)
    assert info.value.name == "model.arch"
    with pytest.raises(ParameterError) as info:
        build_model("timm:resnet18", num_classes=3, input_shape=(16,))
    assert info.value.name == "model.arch" and "(C, H, W)" in str(info.value)


@pytest.mark.parametrize(("arch", "package"), [("timm:resnet18", "timm"),
                                               ("torchvision:resnet18", "torchvision")])
def test_missing_package_is_a_parameter_error(monkeypatch, arch, package):
    for module in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, package, None)  # the import now raises ImportError
    with pytest.raises(ParameterError) as info:
        build_model(arch, num_classes=3, input_shape=(3, 32, 32))
    assert info.value.name == "model.arch"
    assert f"tailmix[{package}]" in str(info.value)
    with pytest.raises(ParameterError) as info:
        preprocessing(arch, pretrained=False)
    assert f"tailmix[{package}]" in str(info.value)


def test_torchvision_backbone():
    pytest.importorskip("torchvision", reason="torchvision is not installed")
    torch.manual_seed(0)
    lines = []
    model = build_external("torchvision:resnet18", num_classes=7, input_shape=(3, 64, 64),
                           pretrained=False, log=lines.append)
    assert isinstance(model, Split) and model.feature_dim == 512
    assert "'fc'" in lines[0] and "Linear 512 -> 7" in lines[0]
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, features = model(x, return_features=True)
    assert logits.shape == (2, 7) and features.shape == (2, 512)
    cosine = build_model("torchvision:mobilenet_v3_small", num_classes=5,
                         input_shape=(3, 64, 64), head="cosine")
    assert isinstance(cosine.head, CosineHead) and cosine(x).shape == (2, 5)
    with pytest.raises(ParameterError) as info:
        build_model("torchvision:no_such_net", num_classes=3, input_shape=(3, 32, 32))
    assert info.value.name == "model.arch" and "list_models" in str(info.value)
    with pytest.raises(ParameterError) as info:
        build_model("torchvision:resnet18", num_classes=3, input_shape=(1, 32, 32))
    assert info.value.name == "model.arch"


def test_torchvision_preprocessing():
    pytest.importorskip("torchvision", reason="torchvision is not installed")
    plain = preprocessing("torchvision:resnet50", pretrained=False)
    assert plain == {"input_size": (3, 224, 224), "mean": (0.485, 0.456, 0.406),
                     "std": (0.229, 0.224, 0.225), "resize": 256,
                     "interpolation": "bilinear"}
    weights = preprocessing("torchvision:resnet50", pretrained=True)  # metadata, no download
    assert weights["input_size"] == (3, 224, 224)
    assert isinstance(weights["resize"], int) and weights["resize"] >= 224
    assert weights["interpolation"] in ("bilinear", "bicubic")
    assert len(weights["mean"]) == 3 and len(weights["std"]) == 3


def test_timm_backbone():
    pytest.importorskip("timm", reason="timm is not installed")
    lines = []
    model = build_external("timm:resnet18", num_classes=7, input_shape=(3, 64, 64),
                           log=lines.append)
    assert isinstance(model, Split) and model.feature_dim == 512 and "'fc'" in lines[0]
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        logits, features = model(x, return_features=True)
    assert logits.shape == (2, 7) and features.shape == (2, 512)
    gray = build_model("timm:resnet18", num_classes=4, input_shape=(1, 32, 32), head="cosine")
    assert isinstance(gray.head, CosineHead) and gray(torch.randn(2, 1, 32, 32)).shape == (2, 4)
    with pytest.raises(ParameterError) as info:
        build_model("timm:no_such_net", num_classes=3, input_shape=(3, 32, 32))
    assert info.value.name == "model.arch" and "list_models" in str(info.value)


def test_timm_preprocessing():
    timm = pytest.importorskip("timm", reason="timm is not installed")
    info = preprocessing("timm:resnet18", pretrained=True)
    cfg = timm.data.resolve_data_config({}, model=timm.create_model("resnet18"))
    assert info["input_size"] == tuple(cfg["input_size"])
    assert info["mean"] == pytest.approx(tuple(cfg["mean"]))
    assert info["std"] == pytest.approx(tuple(cfg["std"]))
    assert info["resize"] == round(cfg["input_size"][1] / cfg["crop_pct"])
    assert info["interpolation"] in ("bilinear", "bicubic")


def test_cosine_head_scale_is_outside_its_forward_and_its_weights():
    """The head returns bare cosines whatever its scale (training arithmetic is the
    loss's); the scale moves with the module, stays out of the state_dict (checkpoints of
    any version load) and is read by logit_scale."""
    from tailmix.models.heads import logit_scale, set_logit_scale

    torch.manual_seed(0)
    head = CosineHead(5, 3)
    x = torch.randn(4, 5)
    plain = head(x)
    assert plain.abs().max() <= 1 + 1e-6 and float(head.scale) == 1.0
    head.set_scale(30)
    assert torch.equal(head(x), plain) and float(head.scale) == 30.0
    assert set(head.state_dict()) == {"weight"}
    assert head.double().scale.dtype == torch.float64
    net = MLP(3, in_features=5, head="cosine")
    set_logit_scale(net, 12.5)
    assert float(logit_scale(net)) == 12.5
    linear = MLP(3, in_features=5)
    set_logit_scale(linear, 12.5)  # nothing to scale: left alone
    assert logit_scale(linear) is None
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ParameterError, match="'scale'"):
            CosineHead(5, 3, scale=bad)



def test_timm_backbone_trains_on_grey_images_held_in_memory(tmp_path):
    """A timm backbone built for one channel gets one channel's normalisation, so grey
    batches stay grey (three-channel statistics would broadcast them to three channels)."""
    pytest.importorskip("timm", reason="timm is not installed")
    from tailmix.pipeline.build import build_run

    run = build_run({"dataset": {"name": "digits", "image_size": 32},
                     "model": {"arch": "timm:resnet18", "pretrained": False},
                     "train": {"epochs": 1, "batch_size": 32, "precision": "fp32"},
                     "log": {"progress": False}}, None, log=quiet)
    assert run.data.augment.mean.numel() == 1 and run.data.augment.std.numel() == 1
    assert run.data.augment.mean.item() == pytest.approx((0.485 + 0.456 + 0.406) / 3)
    row = run.trainer.train_epoch(0)
    assert torch.isfinite(torch.tensor(row["train_loss"]))
