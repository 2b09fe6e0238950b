"""Embedding-space distances between real and synthesized audio (spec §8.2).

Two numbers per embedding type, exactly as the original ``reconstruction_metric_fn``:

* ``mean_frame_distance``: per song, the mean over frames of ||E_target - E_pred||_2, the two
  embedding sequences truncated to the shorter one. The caller averages it over songs.
* ``frechet_distance``: the Frechet distance between Gaussians fitted to *all frames of all
  songs* of the targets and of the predictions. ``StreamingGaussian`` accumulates those
  Gaussians one song (batch of frames) at a time without keeping the frames.

Not in the original: ``frechet_distance_infinity``, the Frechet distance with its small-sample
bias extrapolated away (FD-infinity, Chong & Forsyth 2020, "Effectively Unbiased FID and
Inception Score and where to find them"; fadtk's FAD-inf). The plain FD of n samples per side
overestimates the true distance by about c / n, so comparing rows with different frame counts,
or a per-minute slice with the whole song, compares biases as much as distances.

All statistics are kept in float64: the covariance of a few thousand 128- to 512-d frames is
summed from many batches, and float32 loses digits there.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.linalg

# Above this dimension only the diagonal of the covariance is kept (the original's
# StreamingMultivariateGaussian): a full covariance would be dim^2 doubles and its matrix square
# root O(dim^3), and VGGish (128), TRILL (512) and musicnn (200) are all below it.
FULL_COVARIANCE_MAX_DIM = 1024

# Safeguards of the original frechet_distance (spec §8.2).
_SQRTM_RETRY_EPSILON = 1e-7
_MAX_IMAGINARY_DIAGONAL = 3e-3

# FD-infinity defaults. Chong & Forsyth fit 15 subset sizes from 5000 to 50000 samples of
# 2048-d Inception features, i.e. the smallest subset is about 2.4x the dimension: below ~2x the
# bias is no longer linear in 1/n. The largest subset must be at least twice the smallest, or
# the fit extrapolates from a sliver of 1/n and its intercept is noise.
FD_INFINITY_POINTS = 15
FD_INFINITY_MIN_PER_DIM = 2
_FD_INFINITY_MIN_SPAN = 2.0


class FrechetError(ValueError):
    """Statistics that cannot give a Frechet distance (shapes, NaNs, complex square root)."""


@dataclasses.dataclass
class StreamingGaussian:
    """Running mean and covariance (ddof = 0) of vectors that arrive in batches.

    Batches are merged with the pairwise update of Chan, Golub and LeVeque (1979): each batch's
    own mean and centred scatter matrix are computed first and then combined with the running
    ones, so no sum of squares of raw (uncentred) values is ever formed and the result does not
    suffer the cancellation of E[x x^T] - E[x] E[x]^T.

    Attributes:
      dim: size of the vectors.
      diagonal: keep only per-dimension variances. Defaults to ``dim > 1024``, as the original.
    """

    dim: int
    diagonal: bool | None = None
    count: int = dataclasses.field(default=0, init=False)
    _mean: np.ndarray = dataclasses.field(init=False, repr=False)
    # Centred scatter: sum over seen vectors of (x - mean)(x - mean)^T, or its diagonal.
    _scatter: np.ndarray = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"StreamingGaussian dim must be positive, got {self.dim}")
        if self.diagonal is None:
            self.diagonal = self.dim > FULL_COVARIANCE_MAX_DIM
        self._mean = np.zeros(self.dim, np.float64)
        shape = (self.dim,) if self.diagonal else (self.dim, self.dim)
        self._scatter = np.zeros(shape, np.float64)

    def update(self, vectors: np.ndarray) -> None:  # vectors: [num_vectors, dim]
        """Adds a batch of vectors (any number, including zero)."""
        x = np.asarray(vectors, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape [n, {self.dim}], got {x.shape}")
        n_batch = x.shape[0]
        if n_batch == 0:
            return
        if not np.all(np.isfinite(x)):
            raise FrechetError("embedding batch holds NaN or infinite values")
        batch_mean = x.mean(axis=0)
        centred = x - batch_mean
        if self.diagonal:
            batch_scatter = np.sum(centred * centred, axis=0)
        else:
            batch_scatter = centred.T @ centred
        n_total = self.count + n_batch
        delta = batch_mean - self._mean
        weight = self.count * n_batch / n_total
        if self.diagonal:
            self._scatter += batch_scatter + delta * delta * weight
        else:
            self._scatter += batch_scatter + np.outer(delta, delta) * weight
        self._mean += delta * (n_batch / n_total)
        self.count = n_total

    @property
    def mean(self) -> np.ndarray:  # [dim]
        self._check_nonempty()
        return self._mean.copy()

    @property
    def covariance(self) -> np.ndarray:  # [dim, dim], or [dim] when diagonal
        """Population covariance (ddof = 0); a vector of variances when ``diagonal``."""
        self._check_nonempty()
        return self._scatter / self.count

    def _check_nonempty(self) -> None:
        if self.count == 0:
            raise FrechetError("StreamingGaussian has seen no vectors yet")


def frechet_distance(
    mu1: np.ndarray,  # [dim]
    sigma1: np.ndarray,  # [dim, dim], or [dim] variances for a diagonal covariance
    mu2: np.ndarray,  # [dim]
    sigma2: np.ndarray,  # [dim, dim], or [dim]
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (spec §8.2).

    FD = ||mu1 - mu2||^2 + tr sigma1 + tr sigma2 - 2 tr sqrt(sigma1 sigma2).

    For full covariances the square root is ``scipy.linalg.sqrtm`` with the original's
    safeguards: if it is not finite, retry with 1e-7 I added to both covariances; raise
    ``FrechetError`` if the imaginary part of its diagonal exceeds 3e-3; otherwise keep the real
    part. Diagonal covariances (1-D ``sigma``) use the exact closed form
    sum((sqrt(s1) - sqrt(s2))^2), which needs no matrix square root.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.asarray(sigma1, np.float64)
    sigma2 = np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise FrechetError(f"means must be vectors of one shape, got {mu1.shape} and {mu2.shape}")
    if sigma1.shape != sigma2.shape:
        raise FrechetError(f"covariance shapes differ: {sigma1.shape} and {sigma2.shape}")
    dim = mu1.shape[0]
    if sigma1.shape not in ((dim,), (dim, dim)):
        raise FrechetError(f"covariance shape {sigma1.shape} does not match mean dim {dim}")
    mean_term = float(np.sum(np.square(mu1 - mu2)))
    if sigma1.ndim == 1:
        # Diagonal matrices commute, so tr sqrt(S1 S2) = sum sqrt(s1 s2).
        root1 = np.sqrt(np.maximum(sigma1, 0.0))
        root2 = np.sqrt(np.maximum(sigma2, 0.0))
        return mean_term + float(np.sum(np.square(root1 - root2)))

    # Covariances of fewer frames than dimensions are singular, and sqrtm warns about every
    # one; the checks below (finite, imaginary part) are what decides whether the root is usable.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.all(np.isfinite(covmean)):
            # Near-singular products can make sqrtm blow up: retry slightly regularised.
            offset = np.eye(dim) * _SQRTM_RETRY_EPSILON
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if not np.all(np.isfinite(covmean)):
        raise FrechetError("matrix square root of sigma1 @ sigma2 is not finite")
    trace_covmean = None
    if np.iscomplexobj(covmean):
        max_imaginary = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if max_imaginary > _MAX_IMAGINARY_DIAGONAL:
            if not (_is_psd(sigma1) and _is_psd(sigma2)):
                raise FrechetError(
                    f"matrix square root has an imaginary diagonal component of "
                    f"{max_imaginary:.3g} (> {_MAX_IMAGINARY_DIAGONAL}); the covariances are not "
                    "valid (not positive semi-definite)"
                )
            # Valid but near-singular covariances (few frames, collapsed samples) can defeat
            # sqrtm of the non-symmetric product; the original raised here. The symmetric form
            # tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2) is exact for PSD matrices and stable.
            trace_covmean = _trace_sqrt_product_psd(sigma1, sigma2)
        covmean = covmean.real
    if trace_covmean is None:
        trace_covmean = float(np.trace(covmean))
    return mean_term + float(np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)


def _is_psd(sigma: np.ndarray) -> bool:
    """Symmetric with no eigenvalue below -1e-8 of the largest magnitude."""
    if not np.allclose(sigma, sigma.T, atol=1e-10 * max(1.0, float(np.max(np.abs(sigma))))):
        return False
    eigenvalues = np.linalg.eigvalsh(sigma)
    return bool(eigenvalues[0] >= -1e-8 * max(1e-30, float(np.max(np.abs(eigenvalues)))))


def _trace_sqrt_product_psd(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(sigma1 @ sigma2) for PSD matrices, via eigh of sigma1^1/2 sigma2 sigma1^1/2."""
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    inner = root1 @ sigma2 @ root1
    return float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None))))


def gaussian_frechet_distance(first: StreamingGaussian, second: StreamingGaussian) -> float:
    """``frechet_distance`` between two accumulated Gaussians of the same dim and kind."""
    if first.dim != second.dim or first.diagonal != second.diagonal:
        raise FrechetError(
            f"cannot compare Gaussians of dim {first.dim} (diagonal={first.diagonal}) and "
            f"dim {second.dim} (diagonal={second.diagonal})"
        )
    return frechet_distance(first.mean, first.covariance, second.mean, second.covariance)


def mean_frame_distance(
    target_embeddings: np.ndarray,  # [target_frames, dim]
    predicted_embeddings: np.ndarray,  # [predicted_frames, dim]
) -> float:
    """Mean over frames of ||E_target - E_pred||_2, truncated to the shorter sequence (§8.2)."""
    target = np.asarray(target_embeddings, np.float64)
    predicted = np.asarray(predicted_embeddings, np.float64)
    if target.ndim != 2 or predicted.ndim != 2 or target.shape[1] != predicted.shape[1]:
        raise ValueError(
            f"expected [frames, dim] embeddings of one dim, got {target.shape} and "
            f"{predicted.shape}"
        )
    num_frames = min(target.shape[0], predicted.shape[0])
    if num_frames == 0:
        raise ValueError("cannot compare embedding sequences with zero frames")
    difference = target[:num_frames] - predicted[:num_frames]
    return float(np.mean(np.linalg.norm(difference, axis=-1)))


@dataclasses.dataclass(frozen=True)
class FrechetInfinity:
    """FD-infinity and the fit behind it: ``distances[i]`` is the FD of random subsets of
    ``subset_sizes[i]`` vectors per side; ``value`` and ``slope`` fit FD = value + slope / n."""

    value: float
    slope: float
    subset_sizes: tuple[int, ...]
    distances: tuple[float, ...]


def frechet_distance_infinity(
    first: np.ndarray,  # [n1, dim] e.g. embedding frames of the real audio
    second: np.ndarray,  # [n2, dim] e.g. embedding frames of the synthesized audio
    *,
    seed: int,
    num_points: int = FD_INFINITY_POINTS,
    min_subset: int | None = None,
    diagonal: bool | None = None,
) -> FrechetInfinity:
    """The Frechet distance extrapolated to infinitely many samples (FD-infinity).

    For ``num_points`` subset sizes n evenly spaced from ``min_subset`` to min(n1, n2), draws n
    vectors from each side without replacement and computes their FD; a least-squares line
    FD = FD_inf + slope / n gives the intercept FD_inf (Chong & Forsyth 2020, §3.2). A random
    subset of an i.i.d. sample is an i.i.d. sample, so the fit sees the bias of an n-sample FD
    with both sides subsampled alike. Subsets are drawn from ``np.random.default_rng(seed)``:
    the same inputs and seed give the same value.

    When both sets have the same length, both sides take the *same* indices. Evaluation frames
    are paired (frame i of a song's real audio and of its synthesis cover the same time):
    independent subsets would break the pairing, so that a set compared with itself, FD 0 at
    every size, would extrapolate to a negative distance. For unpaired (independent) sets the
    shared indices are as random as independent ones.

    Args:
      first, second: the two sets of vectors.
      seed: the subsets' random seed.
      num_points: number of subset sizes.
      min_subset: the smallest subset; default ``2 * dim`` (see FD_INFINITY_MIN_PER_DIM).
      diagonal: fit diagonal covariances; default ``dim > 1024`` as ``StreamingGaussian``.

    Raises:
      FrechetError: mismatched shapes, non-finite values, fewer than two subset sizes, or too
        few vectors: the smaller set must hold at least twice ``min_subset`` (the message says
        how many there are and how many are needed).
    """
    x = np.asarray(first, np.float64)
    y = np.asarray(second, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise FrechetError(f"expected two [n, dim] arrays of one dim, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise FrechetError("vectors hold NaN or infinite values")
    if num_points < 2:
        raise FrechetError(f"FD-infinity needs at least 2 subset sizes, got num_points={num_points}")
    dim = x.shape[1]
    if min_subset is None:
        min_subset = FD_INFINITY_MIN_PER_DIM * dim
    min_subset = max(int(min_subset), 2)
    available = min(len(x), len(y))
    needed = int(np.ceil(_FD_INFINITY_MIN_SPAN * min_subset))
    if available < needed:
        raise FrechetError(
            f"too few vectors for FD-infinity: {available} per side (of {len(x)} and {len(y)}), "
            f"need at least {needed} ({_FD_INFINITY_MIN_SPAN:g} x the smallest subset of "
            f"{min_subset} = {FD_INFINITY_MIN_PER_DIM} x dim {dim}); evaluate more or longer songs")
    sizes = tuple(int(n) for n in np.unique(
        np.linspace(min_subset, available, num_points).round().astype(int)))
    rng = np.random.default_rng(seed)
    paired = len(x) == len(y)
    distances = []
    for n in sizes:
        stats = []
        indices = rng.choice(len(x), size=n, replace=False)
        for data in (x, y):
            if not paired:
                indices = rng.choice(len(data), size=n, replace=False)
            gaussian = StreamingGaussian(dim, diagonal=diagonal)
            gaussian.update(data[indices])
            stats.append(gaussian)
        distances.append(gaussian_frechet_distance(*stats))
    slope, intercept = np.polyfit(1.0 / np.asarray(sizes, np.float64), distances, 1)
    return FrechetInfinity(value=float(intercept), slope=float(slope), subset_sizes=sizes,
                           distances=tuple(float(d) for d in distances))
