import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from tailmix._validation import ParameterError
from tailmix.data import BatchAugment
from tailmix.data import autoaugment as aa
from tailmix.data.autoaugment import (
    AUTOAUGMENT_POLICIES,
    FILL,
    OPS,
    RANDOM_OPS,
    AutoAugment,
    Cutout,
    RandAugment,
    TrivialAugment,
    apply_op,
    build_policy,
    op_argument,
)


def img(values, channels=1):
    """(1, C, H, W) float image from a nested list of 0..1 values (same in every channel)."""
    t = torch.as_tensor(values, dtype=torch.float32)
    return t.expand(1, channels, *t.shape).clone()


def close(a, b, atol=1e-6):
    return torch.allclose(a, torch.as_tensor(b, dtype=a.dtype), atol=atol, rtol=0)


def uint8_batch(b=4, c=3, h=12, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8)


def random_images(b=8, c=3, h=12, w=12, seed=0, device="cpu", dtype=torch.float32):
    return (uint8_batch(b, c, h, w, seed).to(dtype) / 255).to(device)


# --------------------------------------------------------------------------------------------
# Ops against hand-computed pixels
# --------------------------------------------------------------------------------------------

def test_posterize_keeps_the_top_bits():
    x = img([[0, 37], [200, 255]]) / 255
    assert close(apply_op(x, "Posterize", 4.0) * 255, [[[[0, 32], [192, 240]]]], 1e-4)
    assert close(apply_op(x, "Posterize", 1.0) * 255, [[[[0, 0], [128, 128]]]], 1e-4)
    assert torch.equal(apply_op(x, "Posterize", 8.0), x)


def test_solarize_and_invert():
    x = img([[0.0, 0.5], [0.75, 1.0]])
    assert close(apply_op(x, "Solarize", 0.5), [[[[0.0, 0.5], [0.25, 0.0]]]])
    assert close(apply_op(x, "Solarize", 1.0), [[[[0.0, 0.5], [0.75, 0.0]]]])
    assert close(apply_op(x, "Solarize", 0.0), 1 - x)
    assert close(apply_op(x, "Invert", 0.0), [[[[1.0, 0.5], [0.25, 0.0]]]])


def test_brightness_scales_and_clips():
    x = img([[0.2, 0.5], [0.8, 1.0]])
    assert close(apply_op(x, "Brightness", 1.5), [[[[0.3, 0.75], [1.0, 1.0]]]])
    assert close(apply_op(x, "Brightness", 0.0), torch.zeros_like(x))


def test_contrast_blends_with_the_grey_mean():
    x = img([[0.2, 0.6]], channels=3)  # grey pixels: the grey mean is 0.4
    assert close(apply_op(x, "Contrast", 2.0), img([[0.0, 0.8]], channels=3))
    assert close(apply_op(x, "Contrast", 0.5), img([[0.3, 0.5]], channels=3))
    assert close(apply_op(img([[0.2, 0.6]]), "Contrast", 0.0), img([[0.4, 0.4]]))


def test_color_blends_with_the_601_luma():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert close(apply_op(red, "Color", 0.0), torch.full((1, 3, 1, 1), 0.299))
    half = torch.tensor([0.6495, 0.1495, 0.1495]).view(1, 3, 1, 1)
    assert close(apply_op(red, "Color", 0.5), half)
    assert close(apply_op(red, "Color", 2.0), red)  # 1.701, -0.299, -0.299 clipped
    green = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)
    assert close(apply_op(green, "Color", 0.0), torch.full((1, 3, 1, 1), 0.587))
    grey = img([[0.3, 0.9]])
    assert torch.equal(apply_op(grey, "Color", 0.0), grey)  # one channel: its own grey


def test_sharpness_smooths_the_interior_and_keeps_the_border():
    x = img([[0.9, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    smooth = [[[[0.9, 0.0, 0.0], [0.0, 0.9 / 13, 0.0], [0.0, 0.0, 0.0]]]]
    assert close(apply_op(x, "Sharpness", 0.0), smooth)
    impulse = img([[0.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    out = apply_op(impulse, "Sharpness", 2.0)  # 2 x - smooth = 1 - 2.5 / 13 at the centre
    assert close(out, img([[0.0, 0.0, 0.0], [0.0, 1 - 2.5 / 13, 0.0], [0.0, 0.0, 0.0]]))
    tiny = img([[0.1, 0.7], [0.4, 0.2]])  # every pixel is a border pixel
    assert torch.equal(apply_op(tiny, "Sharpness", 0.0), tiny)


def test_autocontrast_rescales_each_channel_and_keeps_constant_ones():
    x = torch.tensor([[0.2, 0.4, 0.6], [0.3, 0.3, 0.3], [0.0, 1.0, 0.5]]).view(1, 3, 1, 3)
    out = apply_op(x, "AutoContrast", 0.0)
    expected = torch.tensor([[0.0, 0.5, 1.0], [0.3, 0.3, 0.3], [0.0, 1.0, 0.5]])
    assert close(out, expected.view(1, 3, 1, 3))


def test_equalize_follows_pils_rule():
    # 1024 pixels: 512 at 10, 256 at 50, 256 at 90. step = (1024 - 256) // 255 = 3;
    # lut = (pixels below + 1) // 3 -> 10: 0, 50: 513 // 3 = 171, 90: 769 // 3 = 256 -> 255.
    q = torch.full((32, 32), 10.0)
    q[16:, :16] = 50
    q[16:, 16:] = 90
    out = apply_op(img(q / 255), "Equalize", 0.0) * 255
    expected = torch.full((32, 32), 0.0)
    expected[16:, :16] = 171
    expected[16:, 16:] = 255
    assert close(out, expected.view(1, 1, 32, 32), 1e-4)
    small = img([[10, 50], [90, 90]]) / 255  # step (4 - 2) // 255 = 0: unchanged
    assert close(apply_op(small, "Equalize", 0.0), small)
    flat = torch.full((1, 1, 20, 20), 0.4)  # one value: unchanged
    assert close(apply_op(flat, "Equalize", 0.0), flat)


def test_translate_by_one_pixel_brings_in_the_fill():
    x = img([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    assert close(apply_op(x, "TranslateX", 1.0, fill=0.9), [[[[0.9, 0.1, 0.2], [0.9, 0.4, 0.5]]]])
    assert close(apply_op(x, "TranslateX", -1.0, fill=0.0), [[[[0.2, 0.3, 0.0], [0.5, 0.6, 0.0]]]])
    assert close(apply_op(x, "TranslateY", -1.0), [[[[0.4, 0.5, 0.6], [FILL, FILL, FILL]]]])
    assert close(apply_op(x, "TranslateY", 1.0), [[[[FILL, FILL, FILL], [0.1, 0.2, 0.3]]]])


def test_shear_is_about_the_top_left_corner():
    x = img([[1, 2, 3], [4, 5, 6], [7, 8, 9]]) / 10
    f = 0.0
    # ShearX 1: output (row i, col j) reads column floor(j + 0.5 + (i + 0.5)) = i + j + 1.
    assert close(apply_op(x, "ShearX", 1.0, fill=f) * 10,
                 [[[[2, 3, f], [6, f, f], [f, f, f]]]], 1e-5)
    # ShearY -1: output (i, j) reads row floor(i + 0.5 - (j + 0.5)) = i - j of column j.
    assert close(apply_op(x, "ShearY", -1.0, fill=f) * 10,
                 [[[[1, f, f], [4, 2, f], [7, 5, 3]]]], 1e-5)
    # ShearX 0.3 on row 0 reads columns floor(j + 0.65): no change; row 2 (y = 2.5) shifts 1.
    out = apply_op(x, "ShearX", 0.3, fill=f) * 10
    assert close(out[0, 0, 0], [1, 2, 3], 1e-5) and close(out[0, 0, 2], [8, 9, f], 1e-5)


def test_rotate_by_90_degrees_is_exact_on_a_square():
    for size in (3, 4):
        x = torch.arange(3 * size * size, dtype=torch.float32).view(1, 3, size, size) / 50
        assert torch.equal(apply_op(x, "Rotate", 90.0), torch.rot90(x, 1, (2, 3)))  # CCW
        assert torch.equal(apply_op(x, "Rotate", -90.0), torch.rot90(x, -1, (2, 3)))
        assert torch.equal(apply_op(x, "Rotate", 180.0), x.flip(2, 3))
        assert torch.equal(apply_op(x, "Rotate", 0.0), x)


def test_identity_returns_the_input():
    x = random_images(2)
    assert apply_op(x, "Identity", 0.0) is x


# --------------------------------------------------------------------------------------------
# Ops against PIL (Pillow is a core dependency): the semantics the policies were searched with
# --------------------------------------------------------------------------------------------

PIL_FILL = (128, 128, 128)


def pil_reference(op, value):
    def affine(m):
        return lambda im: im.transform(im.size, Image.AFFINE, m, Image.NEAREST, fillcolor=PIL_FILL)
    return {
        "ShearX": affine((1, value, 0, 0, 1, 0)),
        "ShearY": affine((1, 0, 0, value, 1, 0)),
        "TranslateX": affine((1, 0, -value, 0, 1, 0)),
        "TranslateY": affine((1, 0, 0, 0, 1, -value)),
        "Rotate": lambda im: im.rotate(value, Image.NEAREST, fillcolor=PIL_FILL),
        "Posterize": lambda im: ImageOps.posterize(im, int(value)),
        "Solarize": lambda im: ImageOps.solarize(im, round(value * 255)),
        "Equalize": ImageOps.equalize,
        "Invert": ImageOps.invert,
        "AutoContrast": ImageOps.autocontrast,
        "Brightness": lambda im: ImageEnhance.Brightness(im).enhance(value),
        "Color": lambda im: ImageEnhance.Color(im).enhance(value),
        "Contrast": lambda im: ImageEnhance.Contrast(im).enhance(value),
        "Sharpness": lambda im: ImageEnhance.Sharpness(im).enhance(value),
    }[op]


@pytest.mark.parametrize("op, value, exact", [
    ("ShearX", 0.3, True), ("ShearY", -0.25, True), ("TranslateX", 3.0, True),
    ("TranslateY", -2.4, True), ("Rotate", 30.0, True), ("Rotate", -17.0, True),
    ("Posterize", 5.0, True), ("Solarize", 128 / 255, True), ("Equalize", 0.0, True),
    ("Invert", 0.0, True),
    # float arithmetic against PIL's 8-bit truncation: within about one grey level
    ("AutoContrast", 0.0, False), ("Brightness", 1.7, False), ("Color", 0.3, False),
    ("Contrast", 1.6, False), ("Sharpness", 0.2, False), ("Sharpness", 1.9, False),
])
def test_ops_match_pil(op, value, exact):
    q = uint8_batch(3, 3, 11, 14, seed=1)
    q[1] = q[1] // 4 + 90  # a low-contrast image
    pil = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in q]
    ref = np.stack([np.asarray(pil_reference(op, value)(im)) for im in pil])
    ref = torch.from_numpy(ref).permute(0, 3, 1, 2).float()
    out = apply_op(q.float() / 255, op, value) * 255
    if exact:
        assert torch.equal(out.round(), ref)
    else:
        assert (out - ref).abs().max() <= 1.5


# --------------------------------------------------------------------------------------------
# Batch behaviour
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", OPS)
def test_mask_touches_only_the_masked_examples(op, monkeypatch):
    x = random_images(5, seed=3)
    mask = torch.tensor([True, False, True, False, False])
    value = op_argument(op, torch.full((5,), 0.7), torch.tensor([1.0, -1, -1, 1, 1]),
                        height=12, width=12)
    out = apply_op(x, op, value, mask)
    assert torch.equal(out[~mask], x[~mask])
    for i in (0, 2):  # each masked example as if it were alone
        assert torch.equal(out[i:i + 1], apply_op(x[i:i + 1], op, value[i:i + 1]))
    # The device path (compute all, keep the masked ones) gives the same values.
    monkeypatch.setattr(aa, "_SUBSET_DEVICES", frozenset())
    assert torch.equal(apply_op(x, op, value, mask), out)
    assert torch.equal(apply_op(x, op, value, torch.zeros(5, dtype=torch.bool)), x)


POLICIES = [
    lambda: AutoAugment(),
    lambda: RandAugment(num_ops=2, magnitude=9),
    lambda: RandAugment(num_ops=3, magnitude=30),
    lambda: TrivialAugment(),
    lambda: Cutout(size=5),
]


@pytest.mark.parametrize("make", POLICIES)
@pytest.mark.parametrize("channels", [1, 3])
def test_policies_are_seeded_and_keep_shape_dtype_device_range(make, channels, device):
    policy = make().to(device)
    for dtype in (torch.float32, torch.float64):
        x = random_images(32, channels, seed=5, device=device, dtype=dtype)
        state = torch.get_rng_state()
        out = policy(x, generator=torch.Generator(device=device).manual_seed(7))
        assert torch.equal(torch.get_rng_state(), state)  # the global RNG is never used
        again = policy(x, generator=torch.Generator(device=device).manual_seed(7))
        other = policy(x, generator=torch.Generator(device=device).manual_seed(8))
        assert torch.equal(out, again)
        assert not torch.equal(out, other)
        assert not torch.equal(out, x)
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("make", POLICIES[:4])
def test_policies_agree_on_both_device_paths(make, monkeypatch):
    policy = make()
    x = random_images(32, seed=6)
    out = policy(x, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(aa, "_SUBSET_DEVICES", frozenset())
    assert torch.equal(policy(x, generator=torch.Generator().manual_seed(3)), out)


def test_global_rng_is_used_without_a_generator():
    x = random_images(16)
    torch.manual_seed(0)
    a = RandAugment()(x)
    torch.manual_seed(0)
    assert torch.equal(RandAugment()(x), a)


def test_randaugment_and_trivialaugment_draw_ops_uniformly():
    n, k = 14_000, len(RANDOM_OPS)
    g = torch.Generator().manual_seed(0)
    plan = RandAugment(num_ops=2, magnitude=9)._plan(n, torch.device("cpu"), g)
    assert len(plan) == 2
    for op, level, sign, apply in plan:
        counts = torch.bincount(op, minlength=k)
        assert counts.numel() == k and (counts - n / k).abs().max() < 0.15 * n / k
        assert torch.all(level == 9 / 30) and bool(apply.all())
        assert abs((sign > 0).float().mean() - 0.5) < 0.03
    assert not torch.equal(plan[0][0], plan[1][0])  # rounds draw independently
    ((op, level, sign, apply),) = TrivialAugment(num_bins=31)._plan(n, torch.device("cpu"), g)
    assert (torch.bincount(op, minlength=k) - n / k).abs().max() < 0.15 * n / k
    bins = torch.bincount((level * 30).round().long(), minlength=31)
    assert bins.numel() == 31 and (bins - n / 31).abs().max() < 0.2 * n / 31


def test_autoaugment_table_and_plan():
    table = AUTOAUGMENT_POLICIES["cifar10"]
    assert len(table) == 25 and all(len(sub) == 2 for sub in table)
    for sub in table:
        for op, p, m in sub:
            assert op in OPS and 0 <= p <= 1
            assert (m is None) == (op in aa.WITHOUT_MAGNITUDE) and (m is None or 0 <= m <= 9)
    policy = AutoAugment()
    assert policy.sub_ops.shape == (25, 2) and policy.state_dict() == {}  # non-persistent
    assert {name for name, _ in policy.named_buffers()} == {"sub_ops", "sub_probs", "sub_levels"}
    assert policy.to(torch.float64).sub_probs.dtype == torch.float64  # buffers move with .to
    policy = AutoAugment()
    n = 20_000
    plan = policy._plan(n, torch.device("cpu"), torch.Generator().manual_seed(0))
    for r, (_, _, sign, apply) in enumerate(plan):
        expected = np.mean([sub[r][1] for sub in table])
        assert abs(apply.float().mean().item() - expected) < 0.02
        assert abs((sign > 0).float().mean() - 0.5) < 0.02
    # Sub-policy 1 is (Rotate, 0.7, 2), (TranslateX, 0.3, 9): rotations use level 2 / 9.
    rotate = plan[0][0] == OPS.index("Rotate")
    assert rotate.any() and torch.allclose(plan[0][1][rotate], torch.tensor(2 / 9))


def test_op_argument_ranges():
    level = torch.tensor([0.0, 0.5, 1.0])
    minus = -torch.ones(3)
    assert close(op_argument("ShearX", level, height=32, width=32), [0, 0.15, 0.3])
    assert close(op_argument("TranslateX", level, minus, height=8, width=32),
                 [0, -75 / 331 * 32, -150 / 331 * 32], 1e-5)
    assert close(op_argument("TranslateY", level, height=8, width=32), [0, 600 / 331, 1200 / 331])
    assert close(op_argument("Rotate", level, height=32, width=32), [0, 15, 30])
    assert close(op_argument("Contrast", level, minus, height=32, width=32), [1, 0.55, 0.1])
    assert close(op_argument("Posterize", level, minus, height=32, width=32), [8, 6, 4])
    assert close(op_argument("Solarize", level, height=32, width=32), [1, 0.5, 0])
    assert close(op_argument("Equalize", level, height=32, width=32), [0, 0, 0])


def test_cutout_zeroes_a_square_clipped_at_the_border():
    b, h, w, size = 64, 20, 20, 6
    x = torch.ones(b, 3, h, w)
    out = Cutout(size=size)(x, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)  # replay the centres
    cy = torch.randint(0, h, (b, 1), generator=g)[:, 0]
    cx = torch.randint(0, w, (b, 1), generator=g)[:, 0]
    inner = border = 0
    for i in range(b):
        top, left = int(cy[i]) - size // 2, int(cx[i]) - size // 2
        expected = torch.ones(h, w)
        expected[max(top, 0):top + size, max(left, 0):left + size] = 0
        assert torch.equal(out[i], expected.expand(3, h, w))
        zeros = int((out[i, 0] == 0).sum())
        if 0 <= top and top + size <= h and 0 <= left and left + size <= w:
            inner += 1
            assert zeros == size * size
        else:
            border += 1
            assert 0 < zeros < size * size
    assert inner > 0 and border > 0


# --------------------------------------------------------------------------------------------
# BatchAugment
# --------------------------------------------------------------------------------------------

def crop_flip_reference(raw, generator, padding, mean, std):
    """BatchAugment's training path before policies existed, frozen here."""
    x = raw.float().div_(255.0)
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    x = padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def test_batchaugment_without_policy_is_bit_identical_to_before():
    mean, std = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])
    raw = uint8_batch(16, 3, 32, 32, seed=9)
    g_ref = torch.Generator().manual_seed(11)
    ref = crop_flip_reference(raw, g_ref, 4, mean, std)
    for kw in ({}, {"policy": None, "cutout": 0}):
        aug = BatchAugment(mean=mean, std=std, crop_padding=4, hflip=True, **kw)
        g = torch.Generator().manual_seed(11)
        assert torch.equal(aug(raw, g), ref)
        assert torch.equal(g.get_state(), g_ref.get_state())  # generator consumed the same
        assert set(aug.state_dict()) == {"mean", "std"}


def test_batchaugment_with_policy_and_cutout(device):
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    raw = uint8_batch(16, 3, 16, 16, seed=2).to(device)
    plain = BatchAugment(mean=mean, std=std, crop_padding=2, hflip=True).to(device)
    for kw in ({"policy": RandAugment()}, {"policy": AutoAugment()}, {"cutout": 4},
               {"policy": TrivialAugment(), "cutout": 4}):
        aug = BatchAugment(mean=mean, std=std, crop_padding=2, hflip=True, **kw).to(device)
        assert set(aug.state_dict()) == {"mean", "std"}

        def run(module, seed):
            return module(raw, torch.Generator(device=device).manual_seed(seed))
        out = run(aug, 0)
        assert out.device == raw.device and out.shape == raw.shape
        assert torch.equal(out, run(aug, 0)) and not torch.equal(out, run(plain, 0))
        assert torch.equal(aug(raw, train=False), plain(raw, train=False))
        if "cutout" in kw:  # holes are black before normalisation: -mean / std after
            assert bool((out == -2.0).all(dim=1).flatten(1).sum(1).ge(1).all())


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("build, name", [
    (lambda: RandAugment(num_ops=-1), "num_ops"),
    (lambda: RandAugment(num_ops=1.5), "num_ops"),
    (lambda: RandAugment(magnitude=31), "magnitude"),
    (lambda: RandAugment(magnitude=5, num_bins=5), "magnitude"),
    (lambda: RandAugment(num_bins=1), "num_bins"),
    (lambda: TrivialAugment(num_bins=0), "num_bins"),
    (lambda: TrivialAugment(fill=1.5), "fill"),
    (lambda: AutoAugment(policy="imagenet"), "policy"),
    (lambda: Cutout(size=0), "size"),
    (lambda: build_policy("autoaug"), "name"),
    (lambda: BatchAugment(mean=torch.zeros(3), std=torch.ones(3), cutout=-1), "cutout"),
    (lambda: BatchAugment(mean=torch.zeros(3), std=torch.ones(3), cutout=2.5), "cutout"),
    (lambda: BatchAugment(mean=torch.zeros(3), std=torch.ones(3), policy="randaugment"),
     "policy"),
    (lambda: apply_op(random_images(2), "Blur", 1.0), "op"),
    (lambda: apply_op(random_images(2), "Rotate", torch.zeros(3)), "value"),
    (lambda: apply_op(random_images(2), "Rotate", 1.0, torch.ones(2)), "mask"),
    (lambda: apply_op(random_images(2), "Rotate", 1.0, fill=-0.1), "fill"),
    (lambda: RandAugment()(uint8_batch(2)), "x"),
    (lambda: RandAugment()(torch.rand(2, 2, 4, 4)), "x"),
    (lambda: Cutout()(torch.rand(4, 4)), "x"),
])
def test_bad_parameters_name_themselves(build, name):
    with pytest.raises(ParameterError) as info:
        build()
    assert info.value.name == name
    message = str(info.value)
    assert f"'{name}'" in message and "must be" in message and "Got" in message


def test_build_policy():
    assert build_policy(None) is None and build_policy("none") is None
    assert isinstance(build_policy("autoaugment"), AutoAugment)
    assert isinstance(build_policy("trivialaugment", num_bins=11), TrivialAugment)
    policy = build_policy("randaugment", num_ops=1, magnitude=4, num_bins=10, fill=0.0)
    assert isinstance(policy, RandAugment)
    assert (policy.num_ops, policy.magnitude, policy.num_bins, policy.fill) == (1, 4, 10, 0.0)
