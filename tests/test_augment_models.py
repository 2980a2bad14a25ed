import torch

from tailmix.data import BatchAugment
from tailmix.models import build_model


def _aug(padding=4, hflip=True):
    return BatchAugment(mean=torch.zeros(3), std=torch.ones(3), crop_padding=padding, hflip=hflip)


def test_augment_shapes_and_range():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = _aug()(x, torch.Generator().manual_seed(0))
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


def test_crop_is_a_translation_with_zero_padding():
    # Each output is the input shifted by (dy, dx) in [-p, p] with zeros filling the border.
    p = 2
    x = torch.randint(1, 256, (200, 3, 8, 8), dtype=torch.uint8)
    out = _aug(p, hflip=False)(x, torch.Generator().manual_seed(1)) * 255
    padded = torch.nn.functional.pad(x.float(), (p, p, p, p))
    found_shifts = set()
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   if torch.allclose(padded[i, :, dy:dy + 8, dx:dx + 8], out[i], atol=1e-3)]
        assert matches, f"image {i} is not a padded crop"
        found_shifts.update(matches)
    assert len(found_shifts) == (2 * p + 1) ** 2  # every offset occurs


def test_flip_is_horizontal_and_about_half():
    x = torch.arange(8, dtype=torch.uint8).repeat(1000, 1, 8, 1)  # (1000, 1, 8, 8), rows 0..7
    aug = BatchAugment(mean=torch.zeros(1), std=torch.ones(1), crop_padding=0, hflip=True)
    out = aug(x, torch.Generator().manual_seed(2)) * 255
    flipped = (out[:, 0, 0, 0] == 7).float().mean()
    assert 0.45 < flipped < 0.55
    assert torch.equal(out[:, :, :, :].round().sum(dim=3), x.float().sum(dim=3))


def test_eval_mode_only_normalises():
    aug = BatchAugment(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), crop_padding=4,
                       hflip=True)
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    assert torch.allclose(aug(x, train=False), torch.full((2, 3, 4, 4), 2.0))


def test_resnet32_parameter_count_and_features():
    m = build_model("resnet32", num_classes=10)
    assert sum(p.numel() for p in m.parameters()) == 464_154  # about 0.46 M
    logits, feats = m(torch.randn(2, 3, 32, 32), return_features=True)
    assert logits.shape == (2, 10) and feats.shape == (2, 64)
    m.eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(m.head(m.features(x)), m(x), atol=1e-6)


def test_resnet18_and_cosine_head_any_size():
    m = build_model("resnet18", num_classes=200, input_shape=(3, 64, 64), head="cosine")
    m.eval()
    out = m(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 200)
    assert out.abs().max() <= 1 + 1e-5  # cosine logits
