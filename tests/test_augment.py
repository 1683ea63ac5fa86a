"""Tests for hf_distill.augment (differentiable siamese augmentation). Kept tiny: 8x8 images, a handful per batch."""

import pytest
import torch

from hf_distill.augment import (
    DEFAULT_STRATEGY,
    DIGITS_STRATEGY,
    FAMILY_OPS,
    AugmentParams,
    SiameseAugment,
)

N, C, H, W = 6, 3, 8, 8
FAMILIES = list(FAMILY_OPS)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(N, C, H, W, generator=_gen(seed), dtype=dtype)


def test_strategy_constants():
    assert SiameseAugment(DEFAULT_STRATEGY).families == ("color", "crop", "cutout", "flip", "scale", "rotate")
    assert "flip" not in SiameseAugment(DIGITS_STRATEGY).families


@pytest.mark.parametrize("family", FAMILIES)
def test_single_family_shape_determinism_and_grad(family):
    aug = SiameseAugment(family)
    x = _images().requires_grad_(True)
    params = aug.sample(N, (H, W), _gen(1))
    assert params.ops == FAMILY_OPS[family]
    assert len(params) == N
    assert all(v.shape[0] == N for v in params.values.values())

    out = aug.apply(x, params)
    assert out.shape == x.shape and out.dtype == x.dtype
    # Same seed -> identical output.
    torch.testing.assert_close(aug(x, _gen(1)), out, rtol=0, atol=0)

    (out * torch.linspace(0.5, 1.5, out.numel()).view_as(out)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_siamese_same_transform_on_two_batches(family):
    aug = SiameseAugment(family)
    params = aug.sample(N, (H, W), _gen(2))
    real, syn = _images(3), _images(4)
    torch.testing.assert_close(aug.apply(real, params), aug.apply(real.clone(), params), rtol=0, atol=0)
    # Every op here is per-image, so augmenting a subset with selected params equals selecting from the full result.
    index = torch.tensor([4, 0, 2])
    torch.testing.assert_close(aug.apply(syn[index], params.select(index)), aug.apply(syn, params)[index])
    mask = torch.tensor([True, False, True, False, False, True])
    torch.testing.assert_close(aug.apply(syn[mask], params.select(mask)), aug.apply(syn, params)[mask])


@pytest.mark.parametrize("family", ["crop", "cutout", "flip", "scale", "rotate"])
def test_geometric_ops_are_linear_so_transform_is_shared(family):
    # Geometric ops are linear in x: T(a + b) == T(a) + T(b) holds only if both batches got the same transform.
    aug = SiameseAugment(family)
    params = aug.sample(N, (H, W), _gen(5))
    a, b = _images(6), _images(7)
    torch.testing.assert_close(aug.apply(a + b, params), aug.apply(a, params) + aug.apply(b, params))


def test_flip_really_flips():
    aug = SiameseAugment("flip")
    x = _images()
    params = aug.sample(N, (H, W), _gen(0))
    flags = params.values["flip"]
    assert flags.dtype == torch.bool
    out = aug.apply(x, params)
    torch.testing.assert_close(out[flags], torch.flip(x[flags], dims=[3]), rtol=0, atol=0)
    torch.testing.assert_close(out[~flags], x[~flags], rtol=0, atol=0)
    # Explicit flags, independent of the draw.
    forced = AugmentParams(ops=("flip",), values={"flip": torch.tensor([True, False] * (N // 2))})
    out = aug.apply(x, forced)
    torch.testing.assert_close(out[0], x[0].flip(-1))
    torch.testing.assert_close(out[1], x[1])


def test_crop_matches_shifted_reference():
    aug = SiameseAugment("crop")
    x = _images()
    shifts = torch.tensor([[0, 0], [1, 0], [0, -1], [-1, 1], [1, 1], [-1, -1]])
    out = aug.apply(x, AugmentParams(ops=("crop",), values={"crop": shifts}))
    for i, (dy, dx) in enumerate(shifts.tolist()):
        expected = torch.zeros_like(x[i])
        for r in range(H):
            for c in range(W):
                if 0 <= r + dy < H and 0 <= c + dx < W:
                    expected[:, r, c] = x[i, :, r + dy, c + dx]
        torch.testing.assert_close(out[i], expected, rtol=0, atol=0)
    # Sampled shifts stay within round(crop_ratio * side) = 1 for 8x8 images.
    drawn = aug.sample(200, (H, W), _gen(0)).values["crop"]
    assert drawn.dtype == torch.long and drawn.abs().max() <= 1 and set(drawn.unique().tolist()) == {-1, 0, 1}


def test_cutout_zeroes_a_square():
    aug = SiameseAugment("cutout")
    x = torch.ones(2, C, H, W)
    centres = torch.tensor([[4, 4], [0, 0]])
    out = aug.apply(x, AugmentParams(ops=("cutout",), values={"cutout": centres}))
    # Size 4x4 (0.5 * 8); centre (4, 4) -> rows/cols 2..5; centre (0, 0) -> only the 2x2 corner is on the image.
    assert (out[0, :, 2:6, 2:6] == 0).all() and out[0].sum() == C * (H * W - 16)
    assert (out[1, :, :2, :2] == 0).all() and out[1].sum() == C * (H * W - 4)
    drawn = aug.sample(200, (H, W), _gen(0)).values["cutout"]
    assert drawn.min() >= 0 and drawn.max() <= H  # even size: centre in [0, H] as in the reference


def test_color_formulas():
    aug = SiameseAugment("color")
    x = _images()
    params = aug.sample(N, (H, W), _gen(0))
    assert params.ops == ("brightness", "saturation", "contrast")
    b = params.values["brightness"].view(-1, 1, 1, 1)
    s = params.values["saturation"].view(-1, 1, 1, 1)
    c = params.values["contrast"].view(-1, 1, 1, 1)
    assert (b.abs() <= 0.5).all() and (s >= 0).all() and (s <= 2).all() and (c >= 0.5).all() and (c <= 1.5).all()
    y = x + b
    m = y.mean(dim=1, keepdim=True)
    y = (y - m) * s + m
    m = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - m) * c + m
    torch.testing.assert_close(aug.apply(x, params), y)


def test_scale_and_rotate_identity_and_ranges():
    x = _images()
    ident_scale = AugmentParams(ops=("scale",), values={"scale": torch.ones(N, 2)})
    ident_rot = AugmentParams(ops=("rotate",), values={"rotate": torch.zeros(N)})
    torch.testing.assert_close(SiameseAugment("scale").apply(x, ident_scale), x)
    torch.testing.assert_close(SiameseAugment("rotate").apply(x, ident_rot), x)
    # 90 degrees on a square image with align_corners=True is an exact pixel permutation.
    rot90 = SiameseAugment("rotate").apply(
        x, AugmentParams(ops=("rotate",), values={"rotate": torch.full((N,), 90.0)})
    )
    assert any(torch.allclose(rot90, torch.rot90(x, k, dims=(2, 3)), atol=1e-5) for k in (1, -1))

    sc = SiameseAugment("scale").sample(500, (H, W), _gen(0)).values["scale"]
    assert sc.shape == (500, 2) and sc.min() >= 1 / 1.2 and sc.max() <= 1.2
    rot = SiameseAugment("rotate").sample(500, (H, W), _gen(0)).values["rotate"]
    assert rot.shape == (500,) and rot.abs().max() <= 15.0 and rot.min() < 0 < rot.max()


def test_mode_single_picks_one_family_and_covers_all():
    aug = SiameseAugment(DEFAULT_STRATEGY)
    g = _gen(0)
    seen = set()
    for _ in range(60):
        ops = aug.sample(2, (H, W), g).ops
        family = next(f for f, f_ops in FAMILY_OPS.items() if f_ops == ops)
        seen.add(family)
    assert seen == set(FAMILIES)


def test_mode_all_applies_every_op_in_order():
    aug = SiameseAugment(DEFAULT_STRATEGY, mode="all")
    params = aug.sample(N, (H, W), _gen(0))
    expected = tuple(op for f in DEFAULT_STRATEGY.split("_") for op in FAMILY_OPS[f])
    assert params.ops == expected and set(params.values) == set(expected)
    x = _images().requires_grad_(True)
    out = aug.apply(x, params)
    # Equivalent to applying each op in sequence with single-op params.
    y = x
    for op in expected:
        y = aug.apply(y, AugmentParams(ops=(op,), values={op: params.values[op]}))
    torch.testing.assert_close(out, y)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("strategy", [None, "", "none", "None"])
def test_identity_when_disabled(strategy):
    aug = SiameseAugment(strategy)
    assert not aug.enabled
    x = _images()
    params = aug.sample(N, (H, W), _gen(0))
    assert params.ops == () and len(params) == N
    assert torch.equal(aug.apply(x, params), x) and torch.equal(aug(x, _gen(0)), x)
    assert SiameseAugment("crop").enabled


def test_errors():
    with pytest.raises(ValueError, match="valid families"):
        SiameseAugment("color_blur")
    with pytest.raises(ValueError, match="mode"):
        SiameseAugment("crop", mode="M")
    with pytest.raises(ValueError, match="repeats"):
        SiameseAugment("crop_crop")
    aug = SiameseAugment("flip")
    params = aug.sample(N - 1, (H, W), _gen(0))
    with pytest.raises(ValueError, match="images"):
        aug.apply(_images(), params)
    with pytest.raises(ValueError):
        AugmentParams(
            ops=("flip", "rotate"), values={"flip": torch.zeros(3, dtype=torch.bool), "rotate": torch.zeros(4)}
        )


def test_global_rng_untouched():
    state = torch.random.get_rng_state()
    aug = SiameseAugment(DEFAULT_STRATEGY, mode="all")
    g = _gen(0)
    x = _images()
    aug(x, g)
    SiameseAugment(DEFAULT_STRATEGY)(x, g)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes(dtype):
    aug = SiameseAugment(DEFAULT_STRATEGY, mode="all")
    x = _images(dtype=dtype).requires_grad_(True)
    out = aug(x, _gen(0))
    assert out.dtype == dtype and out.shape == x.shape
    out.float().sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


def test_different_seeds_differ():
    aug = SiameseAugment(DEFAULT_STRATEGY, mode="all")
    x = _images()
    assert not torch.equal(aug(x, _gen(0)), aug(x, _gen(1)))
