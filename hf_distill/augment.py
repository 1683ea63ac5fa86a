"""Differentiable siamese augmentation (DSA).

Implements the augmentation scheme of *Dataset Condensation with Differentiable Siamese Augmentation*
(Zhao & Bilen, ICML 2021) in pure, batched torch. Two properties matter for distillation:

* **Differentiable**: every op is a composition of differentiable torch primitives (affine grids, gathers, masks,
  arithmetic), so gradients of a matching loss flow back into the synthetic images through the augmentation.
* **Siamese**: parameters are drawn once (:meth:`SiameseAugment.sample`) and then applied to both the real and the
  synthetic batch (:meth:`SiameseAugment.apply`), so the two are compared under the *same* transform.

All randomness comes from an explicit :class:`torch.Generator`; the global RNG is never touched, which keeps
distillation runs reproducible and independent of whatever else consumes random numbers.

The defaults follow ``ParamDiffAug`` from the reference implementation
(https://github.com/VICO-UoE/DatasetCondensation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_STRATEGY",
    "DIGITS_STRATEGY",
    "resolve_strategy",
    "strategy_or_none",
    "FAMILY_OPS",
    "AugmentParams",
    "SiameseAugment",
    "CutMix",
]

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
# The DSA code drops horizontal flips for digit datasets (MNIST/SVHN): a mirrored digit is often a different glyph.
DIGITS_STRATEGY = "color_crop_cutout_scale_rotate"

# Strategy families and the elementary ops each one expands to (in application order).
FAMILY_OPS: dict[str, tuple[str, ...]] = {
    "color": ("brightness", "saturation", "contrast"),
    "crop": ("crop",),
    "cutout": ("cutout",),
    "flip": ("flip",),
    "scale": ("scale",),
    "rotate": ("rotate",),
}
_ALL_OPS = frozenset(op for ops in FAMILY_OPS.values() for op in ops)
_MODES = ("single", "all")
_NONE_STRATEGIES = ("", "none")


def strategy_or_none(strategy: str | None) -> str | None:
    """`strategy`, or `None` when it turns augmentation off (`None`, `""` or `"none"`, in any case)."""
    if strategy is None or strategy.strip().lower() in _NONE_STRATEGIES:
        return None
    return strategy


def resolve_strategy(strategy: str | None, class_names: list[str]) -> str | None:
    """`'auto'` -> the DSA default, without flip when the classes are the digits 0-9 (as the DSA code does)."""
    strategy = strategy_or_none(strategy)
    if strategy == "auto":
        return DIGITS_STRATEGY if all(name.strip().isdigit() for name in class_names) else DEFAULT_STRATEGY
    return strategy


def _round_half_up(value: float) -> int:
    # The reference uses ``int(v + 0.5)``; Python's ``round`` is banker's rounding and would differ on exact halves.
    return int(value + 0.5)


@dataclass
class AugmentParams:
    """One draw of augmentation parameters for a batch of ``n`` images.

    Args:
        ops (`tuple[str, ...]`):
            Names of the elementary ops to apply, in order, e.g. ``("scale",)`` or
            ``("brightness", "saturation", "contrast")``. Empty means identity.
        values (`dict[str, torch.Tensor]`):
            Per-image parameters keyed by op name, first dimension ``n``:

            - ``"brightness"``: `(n,)` additive offset ``(u - 0.5) * brightness``.
            - ``"saturation"``: `(n,)` multiplier ``u * saturation`` of the deviation from the per-pixel channel mean.
            - ``"contrast"``: `(n,)` multiplier ``u + contrast`` of the deviation from the per-image mean.
            - ``"crop"``: `(n, 2)` integer shifts ``(dy, dx)``; output pixel ``(i, j)`` reads input
              ``(i + dy, j + dx)`` (zero outside the image).
            - ``"cutout"``: `(n, 2)` integer centres ``(row, col)`` of the zeroed square.
            - ``"flip"``: `(n,)` bool, whether image ``i`` is mirrored horizontally.
            - ``"scale"``: `(n, 2)` scale factors ``(sx, sy)`` of the sampling grid.
            - ``"rotate"``: `(n,)` rotation angle in degrees.
        n (`int`, *optional*):
            Batch size. Only needed when ``values`` is empty (identity params); otherwise inferred from ``values``.
    """

    ops: tuple[str, ...]
    values: dict[str, torch.Tensor]
    n: int | None = None

    def __post_init__(self) -> None:
        self.ops = tuple(self.ops)
        sizes = {int(v.shape[0]) for v in self.values.values()}
        if self.n is not None:
            sizes.add(int(self.n))
        if len(sizes) > 1:
            raise ValueError(f"All augmentation parameters must share the batch dimension, got sizes {sorted(sizes)}.")
        if self.n is None and sizes:
            self.n = sizes.pop()

    def __len__(self) -> int:
        return 0 if self.n is None else self.n

    def select(self, index: torch.LongTensor) -> AugmentParams:
        """Return the parameters of the rows in ``index`` (same ops).

        Useful to augment a subset of a batch (e.g. one class) with exactly the transforms its images got in the
        full draw.

        Args:
            index (`torch.LongTensor`): 1-D indices (or a bool mask) into the batch dimension.

        Returns:
            `AugmentParams`: parameters for ``len(index)`` images.
        """
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        values = {k: v[index.to(v.device)] for k, v in self.values.items()}
        return AugmentParams(ops=self.ops, values=values, n=int(index.numel()))

    def to(self, device: torch.device | str) -> AugmentParams:
        """Return a copy with every parameter tensor moved to ``device``.

        Args:
            device (`torch.device` or `str`): target device.

        Returns:
            `AugmentParams`: the moved parameters.
        """
        return AugmentParams(ops=self.ops, values={k: v.to(device) for k, v in self.values.items()}, n=self.n)


class SiameseAugment:
    """Differentiable siamese augmentation with explicit randomness.

    Example:

    ```python
    >>> aug = SiameseAugment()
    >>> g = torch.Generator().manual_seed(0)
    >>> params = aug.sample(len(x_real), x_real.shape[-2:], g)
    >>> real_aug, syn_aug = aug.apply(x_real, params), aug.apply(x_syn, params)
    ```

    Args:
        strategy (`str`, *optional*, defaults to `DEFAULT_STRATEGY`):
            ``_``-separated families among ``color``, ``crop``, ``cutout``, ``flip``, ``scale``, ``rotate``.
            ``None``, ``""`` or ``"none"`` disables augmentation.
        mode (`str`, *optional*, defaults to `"single"`):
            ``"single"`` (the papers' default, ``'S'`` in the reference) picks one family uniformly per
            :meth:`sample` call; ``"all"`` (``'M'``) applies every family in strategy order.
        scale_ratio (`float`, *optional*, defaults to 1.2):
            Scale factors are drawn from ``U(1 / scale_ratio, scale_ratio)``, independently for x and y.
        rotate_degrees (`float`, *optional*, defaults to 15.0):
            Rotation angles are drawn from ``U(-rotate_degrees, rotate_degrees)``.
        crop_ratio (`float`, *optional*, defaults to 0.125):
            Maximum translation as a fraction of the image side (zero padding).
        cutout_ratio (`float`, *optional*, defaults to 0.5):
            Side of the zeroed square as a fraction of the image side.
        brightness (`float`, *optional*, defaults to 1.0):
            Brightness offset is ``(u - 0.5) * brightness``.
        saturation (`float`, *optional*, defaults to 2.0):
            Saturation multiplier is ``u * saturation``.
        contrast (`float`, *optional*, defaults to 0.5):
            Contrast multiplier is ``u + contrast``.
    """

    def __init__(
        self,
        strategy: str | None = DEFAULT_STRATEGY,
        mode: str = "single",
        *,
        scale_ratio: float = 1.2,
        rotate_degrees: float = 15.0,
        crop_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"Unknown augmentation mode {mode!r}; expected one of {list(_MODES)}.")
        if scale_ratio <= 0:
            raise ValueError(f"scale_ratio must be positive, got {scale_ratio}.")
        self.strategy = strategy
        self.mode = mode
        self.families = self._parse_strategy(strategy)
        self.scale_ratio = float(scale_ratio)
        self.rotate_degrees = float(rotate_degrees)
        self.crop_ratio = float(crop_ratio)
        self.cutout_ratio = float(cutout_ratio)
        self.brightness = float(brightness)
        self.saturation = float(saturation)
        self.contrast = float(contrast)

    @staticmethod
    def _parse_strategy(strategy: str | None) -> tuple[str, ...]:
        if strategy_or_none(strategy) is None:
            return ()
        families = tuple(strategy.strip().split("_"))
        unknown = [f for f in families if f not in FAMILY_OPS]
        if unknown:
            raise ValueError(
                f"Unknown augmentation family {unknown} in strategy {strategy!r}; "
                f"valid families are {list(FAMILY_OPS)}."
            )
        if len(set(families)) != len(families):
            # Parameters are keyed by op name, so a repeated family cannot carry two independent draws.
            raise ValueError(f"Augmentation strategy {strategy!r} repeats a family.")
        return families

    @property
    def enabled(self) -> bool:
        """Whether this augmenter does anything (``False`` for strategy ``None`` / ``""`` / ``"none"``)."""
        return bool(self.families)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(strategy={self.strategy!r}, mode={self.mode!r})"

    # ------------------------------------------------------------------ sampling

    def sample(self, n: int, image_size: tuple[int, int], generator: torch.Generator) -> AugmentParams:
        """Draw augmentation parameters for a batch of ``n`` images.

        In ``"single"`` mode the family choice needs a host-side value; with a CUDA generator that is one small sync
        per call, so a CPU generator is preferable in hot loops (parameters are moved to the images' device in
        :meth:`apply`).

        Args:
            n (`int`): number of images.
            image_size (`tuple[int, int]`): ``(H, W)`` of the images, used for crop shifts and cutout centres.
            generator (`torch.Generator`): source of all randomness; parameters are created on its device.

        Returns:
            `AugmentParams`: the drawn parameters, applicable to any batch of ``n`` images via :meth:`apply`.
        """
        n = int(n)
        if not self.enabled:
            return AugmentParams(ops=(), values={}, n=n)
        if self.mode == "single":
            choice = int(torch.randint(len(self.families), (1,), generator=generator, device=generator.device))
            families = (self.families[choice],)
        else:
            families = self.families
        height, width = (int(s) for s in image_size)
        ops = tuple(op for family in families for op in FAMILY_OPS[family])
        values = {op: self._sample_op(op, n, height, width, generator) for op in ops}
        return AugmentParams(ops=ops, values=values, n=n)

    def _sample_op(self, op: str, n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        device = generator.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=device)

        def randint_pair(low: tuple[int, int], high: tuple[int, int]) -> torch.Tensor:
            # (n, 2) integers, column k uniform in [low[k], high[k]); one randint per axis keeps it exactly uniform.
            return torch.stack(
                [torch.randint(lo, hi, (n,), generator=generator, device=device) for lo, hi in zip(low, high)], dim=1
            )

        if op == "brightness":
            return (rand(n) - 0.5) * self.brightness
        if op == "saturation":
            return rand(n) * self.saturation
        if op == "contrast":
            return rand(n) + self.contrast
        if op == "crop":
            shift_h = _round_half_up(height * self.crop_ratio)
            shift_w = _round_half_up(width * self.crop_ratio)
            return randint_pair((-shift_h, -shift_w), (shift_h + 1, shift_w + 1))
        if op == "cutout":
            size_h, size_w = self._cutout_size(height, width)
            # As in the reference, the centre ranges over [0, H] for even sizes ([0, H - 1] for odd ones), so the
            # square may hang partly off the image.
            return randint_pair((0, 0), (height + (1 - size_h % 2), width + (1 - size_w % 2)))
        if op == "flip":
            return rand(n) < 0.5
        if op == "scale":
            low = 1.0 / self.scale_ratio
            return rand(n, 2) * (self.scale_ratio - low) + low
        if op == "rotate":
            return (rand(n) - 0.5) * (2 * self.rotate_degrees)
        raise ValueError(f"Unknown augmentation op {op!r}; valid ops are {sorted(_ALL_OPS)}.")

    def _cutout_size(self, height: int, width: int) -> tuple[int, int]:
        return _round_half_up(height * self.cutout_ratio), _round_half_up(width * self.cutout_ratio)

    # ------------------------------------------------------------------ application

    def apply(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply previously drawn parameters to a batch.

        Calling this on the real and on the synthetic batch with the same ``params`` gives image ``i`` of both
        batches the same transform (the *siamese* property). The result is differentiable w.r.t. ``x``.

        Args:
            x (`torch.Tensor`): images of shape `(n, C, H, W)`, any floating dtype and device.
            params (`AugmentParams`): parameters for ``n`` images, from :meth:`sample` or :meth:`AugmentParams.select`.

        Returns:
            `torch.Tensor`: augmented images, same shape, dtype and device as ``x``.

        Raises:
            ValueError: if ``x`` is not 4-D or ``len(params) != x.shape[0]``.
        """
        if x.dim() != 4:
            raise ValueError(f"Expected images of shape (n, C, H, W), got {tuple(x.shape)}.")
        if len(params) != x.shape[0]:
            raise ValueError(f"Augmentation parameters are for {len(params)} images but the batch has {x.shape[0]}.")
        for op in params.ops:
            if op not in _ALL_OPS:
                raise ValueError(f"Unknown augmentation op {op!r}; valid ops are {sorted(_ALL_OPS)}.")
            # A plain (blocking) copy: non_blocking would be unsafe for a CUDA generator feeding CPU images.
            x = getattr(self, f"_apply_{op}")(x, params.values[op].to(x.device))
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Sample fresh parameters for ``x`` and apply them (``apply(x, sample(...))``).

        Args:
            x (`torch.Tensor`): images of shape `(n, C, H, W)`.
            generator (`torch.Generator`): source of randomness.

        Returns:
            `torch.Tensor`: augmented images.
        """
        if not self.enabled:
            return x
        return self.apply(x, self.sample(x.shape[0], tuple(x.shape[-2:]), generator))

    # Each op takes the images and its own (already device-moved) parameter tensor.

    @staticmethod
    def _per_image(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # (n,) -> (n, 1, 1, 1) in the images' dtype so it broadcasts without promoting e.g. bf16 images to fp32.
        return value.to(x.dtype).view(-1, 1, 1, 1)

    def _apply_brightness(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return x + self._per_image(offset, x)

    def _apply_saturation(self, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        # (x - m) * s + m == lerp(m, x, s): one fused kernel instead of three temporaries.
        return torch.lerp(x.mean(dim=1, keepdim=True), x, self._per_image(factor, x))

    def _apply_contrast(self, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        return torch.lerp(x.mean(dim=(1, 2, 3), keepdim=True), x, self._per_image(factor, x))

    def _apply_flip(self, x: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        return torch.where(flags.view(-1, 1, 1, 1), x.flip(3), x)

    def _apply_crop(self, x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # Pad one zero pixel on each side and clamp source indices into the padded frame: every out-of-range read
        # lands on the zero border, which is exactly zero padding (same trick as the reference). A single gather
        # on the flattened spatial dims keeps it one kernel and differentiable w.r.t. x.
        x_pad = F.pad(x, (1, 1, 1, 1))
        rows = (torch.arange(h, device=x.device) + shifts[:, :1] + 1).clamp_(0, h + 1)  # (n, h)
        cols = (torch.arange(w, device=x.device) + shifts[:, 1:] + 1).clamp_(0, w + 1)  # (n, w)
        index = (rows.unsqueeze(2) * (w + 2) + cols.unsqueeze(1)).view(n, 1, h * w).expand(n, c, h * w)
        return x_pad.flatten(2).gather(2, index).view(n, c, h, w)

    def _apply_cutout(self, x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        size_h, size_w = self._cutout_size(h, w)
        top = centres[:, :1] - size_h // 2  # (n, 1)
        left = centres[:, 1:] - size_w // 2
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        in_rows = (rows >= top) & (rows < top + size_h)  # (n, h)
        in_cols = (cols >= left) & (cols < left + size_w)  # (n, w)
        # Multiply by a mask (rather than in-place zeroing) so gradients still flow to the kept pixels.
        keep = ~(in_rows.unsqueeze(2) & in_cols.unsqueeze(1))
        return x * keep.unsqueeze(1).to(x.dtype)

    @staticmethod
    def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    def _apply_scale(self, x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        factors = factors.to(x.dtype)
        zeros = torch.zeros_like(factors[:, 0])
        sx, sy = factors.unbind(1)
        theta = torch.stack([sx, zeros, zeros, zeros, sy, zeros], dim=1).view(-1, 2, 3)
        return self._affine(x, theta)

    def _apply_rotate(self, x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
        # Compute the trig in at least fp32 so low-precision images still get an accurate rotation matrix.
        angle = degrees.to(torch.promote_types(x.dtype, torch.float32)) * (math.pi / 180.0)
        cos, sin = angle.cos(), angle.sin()
        zeros = torch.zeros_like(angle)
        theta = torch.stack([cos, -sin, zeros, sin, cos, zeros], dim=1).view(-1, 2, 3).to(x.dtype)
        return self._affine(x, theta)


@dataclass(frozen=True)
class CutMix:
    """CutMix (Yun et al., ICCV 2019) on a batch: one box, pasted into every image from another image of the batch.

    The box covers `1 - lam` of the area with `lam ~ Beta(alpha, alpha)`, its centre uniform over the image and its
    sides clipped at the border (as the paper's code and RDED's/SRe2L's students); `kept` is then the share of each
    image that is its own, by which hard or soft labels are mixed. Not differentiable through the box, and not
    siamese: it is for training students, not for matching.

    Args:
        images (`torch.Tensor` of shape `(B, C, H, W)`): The batch (unchanged).
        alpha (`float`): The Beta concentration (1.0: `lam` uniform in `[0, 1]`, the papers' setting).
        generator (`torch.Generator`): The only source of randomness.
    """

    mixed: torch.Tensor
    partner: torch.LongTensor  # row i's box comes from row partner[i]
    kept: float

    @classmethod
    def apply(cls, images: torch.Tensor, alpha: float, generator: torch.Generator) -> CutMix:
        if images.ndim != 4:
            raise ValueError(f"CutMix mixes image batches (B, C, H, W), got shape {tuple(images.shape)}.")
        height, width = images.shape[-2:]
        partner = torch.randperm(images.shape[0], generator=generator)
        # Beta(alpha, alpha) as X / (X + Y) with X, Y ~ Gamma(alpha): torch's Beta sampler takes no generator.
        gammas = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
        lam = float(gammas[0] / gammas.sum().clamp_min(torch.finfo(gammas.dtype).tiny))
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        centre_y, centre_x = (int(v) for v in torch.randint(0, 1 << 30, (2,), generator=generator))
        centre_y, centre_x = centre_y % height, centre_x % width
        top, bottom = max(centre_y - cut_h // 2, 0), min(centre_y + cut_h // 2, height)
        left, right = max(centre_x - cut_w // 2, 0), min(centre_x + cut_w // 2, width)
        mixed = images.clone()
        mixed[:, :, top:bottom, left:right] = images[partner.to(images.device), :, top:bottom, left:right]
        kept = 1.0 - (bottom - top) * (right - left) / (height * width)
        return cls(mixed, partner, kept)

    def mix(self, targets: torch.Tensor) -> torch.Tensor:
        """Per-row targets (probabilities, one-hot rows) mixed as the pixels were: `kept * t + (1 - kept) *
        t[partner]`."""
        return self.kept * targets + (1.0 - self.kept) * targets[self.partner.to(targets.device)]
