"""ZCA whitening of images, as KIP, FRePo, RFAD and MTT preprocess CIFAR.

After the per-channel normalisation, every image is flattened to `x` (`D = C * H * W` values) and mapped to

    z = (x - m) W,    W = U diag((s + r)^(-1/2)) U^T,    r = regularization * tr(Cov) / D,

where `m` and `Cov = U diag(s) U^T` are the mean and covariance of the training split's flattened images. `W` is
symmetric, so whitening keeps the images' geometry (each pixel is decorrelated from the others, which sharpens edges)
and is undone exactly by `x = z U diag((s + r)^(1/2)) U^T + m`. The regulariser (KIP and FRePo: 0.1) keeps the
low-variance directions from being blown up into noise.

A set distilled in the whitened space only means something with the same transform: [`ZCAWhitening`] is saved with
the run (`zca.safetensors`) and applied to every real split that evaluates or trains beside it.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..checkpointing import save_tensors

#: KIP's and FRePo's regularisation (`zca_reg`), relative to the mean eigenvalue of the covariance.
DEFAULT_ZCA_REGULARIZATION = 0.1


@dataclass
class ZCAWhitening:
    """A fitted ZCA whitening transform of `(C, H, W)` images.

    Args:
        mean (`torch.Tensor` of shape `(D,)`): Mean of the flattened training images.
        eigenvectors (`torch.Tensor` of shape `(D, D)`): `U`, the covariance's eigenvectors (columns).
        eigenvalues (`torch.Tensor` of shape `(D,)`): `s + r`, the regularised eigenvalues.
        image_shape (`tuple[int, int, int]`): `(C, H, W)`.
        regularization (`float`): The relative regulariser the transform was fitted with.
    """

    mean: torch.Tensor
    eigenvectors: torch.Tensor
    eigenvalues: torch.Tensor
    image_shape: tuple[int, int, int]
    regularization: float

    def __post_init__(self):
        self.image_shape = tuple(int(v) for v in self.image_shape)
        dim = self.mean.numel()
        if self.eigenvectors.shape != (dim, dim) or self.eigenvalues.shape != (dim,):
            raise ValueError(
                f"A ZCA transform of {dim} values needs ({dim}, {dim}) eigenvectors and ({dim},) eigenvalues, got "
                f"{tuple(self.eigenvectors.shape)} and {tuple(self.eigenvalues.shape)}."
            )
        # The two matrices are built once (float32, as the images are).
        self._whitening = self._matrix(-0.5)
        self._unwhitening = self._matrix(0.5)

    def _matrix(self, power: float) -> torch.Tensor:
        u = self.eigenvectors.double()
        return ((u * self.eigenvalues.double().pow(power)) @ u.T).float()

    @classmethod
    @torch.no_grad()
    def fit(
        cls,
        images: torch.Tensor,
        regularization: float = DEFAULT_ZCA_REGULARIZATION,
        batch_size: int = 4096,
    ) -> "ZCAWhitening":
        """Fits the transform to `images` `(N, C, H, W)` (the normalised training split).

        The covariance is accumulated in float64 over batches of `batch_size` images, so memory stays at one
        `(D, D)` matrix beside the images (CIFAR-10: 3,072 x 3,072).
        """
        if images.ndim != 4 or len(images) < 2:
            raise ValueError(f"ZCA needs at least 2 images of shape (N, C, H, W), got {tuple(images.shape)}.")
        if not regularization > 0:
            raise ValueError(
                f"zca_regularization must be > 0 (KIP and FRePo use {DEFAULT_ZCA_REGULARIZATION}), got "
                f"{regularization}: without it the least-varying directions are amplified into noise."
            )
        flat = images.reshape(len(images), -1)
        total = torch.zeros(flat.shape[1], dtype=torch.float64)
        second_moment = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64)
        for batch in flat.split(batch_size):
            batch = batch.double()
            total += batch.sum(0)
            second_moment += batch.T @ batch
        mean = total / len(flat)
        covariance = second_moment / len(flat) - torch.outer(mean, mean)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        eigenvalues = eigenvalues.clamp_min(0) + regularization * torch.trace(covariance) / len(covariance)
        return cls(mean.float(), eigenvectors.float(), eigenvalues.float(), tuple(images.shape[1:]), regularization)

    def _check(self, images: torch.Tensor) -> None:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"This ZCA transform was fitted on images of shape {self.image_shape}, got {tuple(images.shape[1:])}: "
                "prepare the split with the set's image size and channels."
            )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Whitens `images` `(N, C, H, W)` (normalised like the training split). Differentiable."""
        self._check(images)
        whitening, mean = self._whitening.to(images.device), self.mean.to(images.device)
        return ((images.reshape(len(images), -1) - mean) @ whitening).reshape(images.shape)

    @torch.no_grad()
    def whiten_(self, images: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Whitens `images` in place, `batch_size` rows at a time, so a second copy of a large split (CIFAR-10:
        614 MB) is never held; returns `images`."""
        self._check(images)
        for rows in images.split(batch_size):
            rows.copy_(self(rows))
        return images

    def inverse(self, whitened: torch.Tensor) -> torch.Tensor:
        """Undoes [`__call__`]: back to the per-channel normalised images."""
        self._check(whitened)
        unwhitening, mean = self._unwhitening.to(whitened.device), self.mean.to(whitened.device)
        return (whitened.reshape(len(whitened), -1) @ unwhitening + mean).reshape(whitened.shape)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the transform as safetensors (atomically), the shape and regulariser in the metadata."""
        tensors = {"mean": self.mean, "eigenvectors": self.eigenvectors, "eigenvalues": self.eigenvalues}
        metadata = {
            "image_shape": ",".join(map(str, self.image_shape)),
            "regularization": repr(float(self.regularization)),
        }
        save_tensors({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, path, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ZCAWhitening":
        """Reads a transform written by [`save`]."""
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        try:
            shape = tuple(int(v) for v in metadata["image_shape"].split(","))
            regularization = float(metadata["regularization"])
        except KeyError as error:
            raise ValueError(
                f"{Path(path)} is not a ZCA transform written by hf_distill (no {error} metadata)."
            ) from None
        return cls(tensors["mean"], tensors["eigenvectors"], tensors["eigenvalues"], shape, regularization)
