"""Image <-> network-input geometry: the knee reference frame and the global-stage letterbox.

Both are similarity transforms given as 2x3 affine matrices that map image pixels to
target pixels (``[x', y'] = A @ [x, y] + t``), with one pair of point maps (forward,
inverse) and one resampler, so images and points can never be mapped differently.

Pixel convention (image and targets alike): the centre of the top-left pixel is (0, 0),
x is the column and y the row. A target pixel takes the image value at the image point
it maps from (bilinear by default); beyond the image the value is ``fill``.

Shape legend: points are (..., 2) as (x, y); images (H, W) or (C, H, W); K landmarks.
``*_px`` are image pixels, ``*_crop`` local-crop pixels, ``*_target`` letterbox pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .errors import GeometryError, SchemaError
from .heatmaps import image_size

__all__ = ["FrameSpec", "ReferenceFrame", "Letterbox", "mirror_landmarks"]

_MIN_REF_DISTANCE_PX = 1.0  # reference points closer than this cannot define a frame
# No bicubic: torch's kernel (a = -0.75) does not reproduce linear ramps, so it shifts
# edges by up to ~0.1 px and would break the exact point <-> image correspondence.
_MODES = {0: "nearest", 1: "bilinear"}


@dataclass(frozen=True)
class FrameSpec:
    """Where the local crop puts the two reference points.

    Args:
        crop_size: (h, w) of the local crop.
        ref_canonical_px: ((x0, y0), (x1, y1)), crop pixels of reference points 0 and 1
            (for a right knee; left knees are mirrored onto the same positions).

    Plain JSON values, so ``FrameSpec(**metadata["frame"])`` restores a stored spec.
    """

    crop_size: tuple[int, int]
    ref_canonical_px: tuple[tuple[float, float], tuple[float, float]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_size", image_size(self.crop_size, "crop_size"))
        ref = np.asarray(self.ref_canonical_px, dtype=np.float64)
        if ref.shape != (2, 2) or not np.isfinite(ref).all():
            raise ValueError(
                f"ref_canonical_px must be two finite (x, y) points, got {self.ref_canonical_px!r}"
            )
        if np.hypot(*(ref[1] - ref[0])) < _MIN_REF_DISTANCE_PX:
            raise ValueError("ref_canonical_px: the two canonical points coincide")
        object.__setattr__(self, "ref_canonical_px", tuple(tuple(float(v) for v in p) for p in ref))

    @property
    def mirror_is_flip(self) -> bool:
        """Both canonical points lie on the crop's vertical centre line.

        Then a knee's crop as the other side (the same reference points, mirrored) is its
        crop flipped left to right: the flip fixes both canonical points, and two
        similarities that both mirror and agree on two points are the same map.
        """
        centre = (self.crop_size[1] - 1) / 2.0
        return all(x == centre for x, _ in self.ref_canonical_px)


@dataclass(frozen=True, eq=False)
class ReferenceFrame:
    """Similarity transform from image pixels to the local crop of one knee.

    Reference point i maps exactly onto ``spec.ref_canonical_px[i]``. For a left knee
    (``side="L"``) the map includes a horizontal mirror, so the crop shows it as a right
    knee; the local stage only ever sees right knees. Landmark names are anatomical
    (lateral/medial), and a mirrored left knee is anatomically a right knee, so every
    landmark keeps its index through the crop: map local-stage outputs back with
    ``to_image`` alone, never with a pair swap (see ``mirror_landmarks`` for when to swap).

    Attributes:
        matrix: (2, 3) float64, image px -> crop px.
        inverse_matrix: (2, 3) float64, crop px -> image px.
        spec: the FrameSpec.
        side: "R" or "L".
    """

    matrix: np.ndarray
    spec: FrameSpec
    side: str
    inverse_matrix: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inverse_matrix", _invert(self.matrix))

    @classmethod
    def from_reference_points(cls, ref_px, spec: FrameSpec, side: str) -> ReferenceFrame:
        """Frame through two reference points.

        Args:
            ref_px: (2, 2) reference points 0 and 1 in image pixels, as (x, y).
            spec: crop size and canonical positions.
            side: "R" or "L" (the knee's laterality; "L" mirrors).

        Raises:
            GeometryError: the points are NaN/infinite or closer than 1 px.
            ValueError: ref_px is not (2, 2) or side is not "R"/"L".
        """
        if side not in ("R", "L"):
            raise ValueError(f"side must be 'R' or 'L', got {side!r}")
        ref = np.asarray(ref_px, dtype=np.float64)
        if ref.shape != (2, 2):
            raise ValueError(f"ref_px must have shape (2, 2), got {ref.shape}")
        if not np.isfinite(ref).all():
            raise GeometryError("reference points are not finite (NaN or infinite)")
        distance = float(np.hypot(*(ref[1] - ref[0])))
        if distance < _MIN_REF_DISTANCE_PX:
            raise GeometryError(f"reference points coincide ({distance:.3g} px apart, need 1 px)")
        # Complex form: crop = a * z + b (right) or a * conj(z) + b (left, mirrored).
        mirror = side == "L"
        z0, z1 = (complex(x, -y if mirror else y) for x, y in ref)
        c0, c1 = (complex(x, y) for x, y in spec.ref_canonical_px)
        a = (c1 - c0) / (z1 - z0)
        b = c0 - a * z0
        sign = -1.0 if mirror else 1.0  # mirroring negates the y column
        matrix = np.array([[a.real, -a.imag * sign, b.real], [a.imag, a.real * sign, b.imag]])
        return cls(matrix=matrix, spec=spec, side=side)

    @property
    def mirrored(self) -> bool:
        return self.side == "L"

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel (uniform; convert sigmas and errors with it)."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def to_crop(self, points_px):
        """Image px (..., 2) -> crop px (..., 2); numpy (float64) or torch in and out."""
        return _map_points(self.matrix, points_px)

    def to_image(self, points_crop):
        """Crop px (..., 2) -> image px (..., 2); numpy (float64) or torch in and out."""
        return _map_points(self.inverse_matrix, points_crop)

    def warp(self, image, order: int = 1, fill: float = 0.0, antialias: bool = True):
        """Resample the crop: image (H, W) or (C, H, W) -> crop (h, w) or (C, h, w).

        Args:
            image: numpy or torch (any device), float.
            order: 0 nearest (label maps), 1 bilinear.
            fill: value of crop pixels that fall outside the image.
            antialias: Gaussian prefilter when shrinking (sigma = (1/scale - 1)/2 image
                px), so noise does not alias into the crop.
        """
        blur = (1.0 / self.scale - 1.0) / 2.0 if antialias and order > 0 else 0.0
        return _resample(image, self.inverse_matrix, self.spec.crop_size, order, fill, blur)


def mirror_landmarks(points, permutation):
    """Swap mirror-partner landmarks: points (..., K, 2) -> points[..., permutation, :].

    ``permutation[k]`` is k's partner across the knee's midline, or k itself (the
    schema's ``mirror_permutation``); it is its own inverse. Use it where an image is
    flipped but its side label is kept, e.g. flip augmentation in training: the flipped
    knee's lateral half now lies where the medial half was, so after flipping the
    coordinates (x -> W - 1 - x) each landmark takes its partner's index. Do NOT use it
    with ReferenceFrame: its mirror turns a left knee into an anatomical right knee, and
    anatomical names survive that unchanged.

    Raises:
        SchemaError: permutation is not an involutive permutation of range(K).
        ValueError: points are not (..., K, 2).
    """
    perm = np.asarray(permutation)
    K = perm.shape[0] if perm.ndim == 1 else -1
    if (
        perm.ndim != 1
        or perm.dtype.kind not in "iu"
        or not np.array_equal(np.sort(perm), np.arange(K))
        or not np.array_equal(perm[perm], np.arange(K))
    ):
        raise SchemaError("landmark permutation must be a self-inverse permutation of 0..K-1")
    if not isinstance(points, torch.Tensor):
        points = np.asarray(points)
    if points.ndim < 2 or tuple(points.shape[-2:]) != (K, 2):
        raise ValueError(f"points must be (..., {K}, 2) for this permutation, got {points.shape}")
    if isinstance(points, torch.Tensor):
        return points[..., torch.as_tensor(perm, device=points.device), :]
    return points[..., perm, :]


@dataclass(frozen=True)
class Letterbox:
    """Fit an image into the global-stage input: uniform scale, centred, padded.

    Attributes:
        image_shape: (H, W) of the image.
        target_shape: (h, w) of the network input.
        scale: target px per image px (the same along x and y).
        pad: (x, y) target px of blank border left of and above the image (fractional).
    """

    image_shape: tuple[int, int]
    target_shape: tuple[int, int]
    scale: float
    pad: tuple[float, float]

    @classmethod
    def fit(cls, image_shape, target) -> Letterbox:
        """Largest uniform scale that fits image_shape (H, W) into target (h, w)."""
        (H, W), (h, w) = image_size(image_shape, "image_shape"), image_size(target, "target")
        scale = min(h / H, w / W)
        return cls((H, W), (h, w), scale, ((w - W * scale) / 2.0, (h - H * scale) / 2.0))

    @property
    def matrix(self) -> np.ndarray:
        """(2, 3) image px -> target px. The image's outer edge (-0.5) maps to pad - 0.5."""
        s, (px, py) = self.scale, self.pad
        return np.array([[s, 0.0, 0.5 * s - 0.5 + px], [0.0, s, 0.5 * s - 0.5 + py]])

    def to_target(self, points_px):
        """Image px (..., 2) -> target px (..., 2); numpy (float64) or torch in and out."""
        return _map_points(self.matrix, points_px)

    def to_image(self, points_target):
        """Target px (..., 2) -> image px (..., 2); numpy (float64) or torch in and out."""
        return _map_points(_invert(self.matrix), points_target)

    def apply(self, image, order: int = 1, fill: float = 0.0, antialias: bool = True):
        """Image (H, W) or (C, H, W) -> target (h, w) or (C, h, w); see ReferenceFrame.warp."""
        shape = tuple(image.shape[-2:])
        if shape != self.image_shape:
            raise ValueError(f"image is {shape}, this letterbox was fitted to {self.image_shape}")
        blur = (1.0 / self.scale - 1.0) / 2.0 if antialias and order > 0 else 0.0
        return _resample(image, _invert(self.matrix), self.target_shape, order, fill, blur)


# -- shared machinery -------------------------------------------------------------------


def _invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine map."""
    linear = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear, -linear @ matrix[:, 2:]], axis=1)


def _map_points(matrix: np.ndarray, points):
    """Apply a (2, 3) affine map to points (..., 2); numpy -> float64, torch keeps dtype."""
    if points.shape[-1] != 2:
        raise ValueError(f"points must be (..., 2) as (x, y), got {tuple(points.shape)}")
    if isinstance(points, torch.Tensor):
        dtype = points.dtype if points.is_floating_point() else torch.float64
        m = torch.as_tensor(matrix, dtype=dtype, device=points.device)
        return points.to(dtype) @ m[:, :2].T + m[:, 2]
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def _resample(image, target_to_image: np.ndarray, out_shape, order: int, fill: float, blur: float):
    """Sample image (..., H, W) at the image points of every target pixel -> (..., h, w).

    target_to_image: (2, 3) target px -> image px. blur: sigma of a Gaussian prefilter in
    image px (0: none), applied only to the part of the image the target sees.
    """
    if order not in _MODES:
        raise ValueError(f"order must be 0 (nearest) or 1 (bilinear), got {order!r}")
    from_numpy = not isinstance(image, torch.Tensor)
    img = torch.from_numpy(np.ascontiguousarray(image)) if from_numpy else image
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (C, H, W), got {tuple(img.shape)}")
    if not img.is_floating_point():
        img = img.float()
    H, W = img.shape[-2:]
    h, w = out_shape
    x = img.reshape(-1, 1, H, W)  # channels as batch
    matrix = target_to_image.copy()
    if blur > 0:
        x, matrix = _prefilter(x, matrix, (h, w), blur, fill)
        H, W = x.shape[-2:]
    elif fill != 0.0:
        x = x - fill  # zero padding then means fill
    # Image point of each target pixel centre, in grid_sample's align_corners=False units.
    m = torch.as_tensor(matrix, dtype=img.dtype, device=img.device)
    u = torch.arange(w, dtype=img.dtype, device=img.device)
    v = torch.arange(h, dtype=img.dtype, device=img.device)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    src = torch.stack([uu, vv], dim=-1) @ m[:, :2].T + m[:, 2]  # (h, w, 2) image px
    grid = (2.0 * src + 1.0) / torch.as_tensor([W, H], dtype=img.dtype, device=img.device) - 1.0
    grid = grid.expand(x.shape[0], h, w, 2)
    out = F.grid_sample(x, grid, mode=_MODES[order], padding_mode="zeros", align_corners=False)
    out = (out + fill).reshape(*img.shape[:-2], h, w)
    return out.numpy() if from_numpy else out


def _prefilter(x: torch.Tensor, target_to_image: np.ndarray, out_shape, sigma: float, fill: float):
    """Low-pass the part of x (B, 1, H, W), less ``fill``, that the target's pixels sample.

    A Gaussian of ``sigma`` image px, done cheaply: a k x k box average first (k about
    half the shrink factor; pixel k*j + (k-1)/2 becomes pixel j) and the residual Gaussian
    at the reduced size, so a 2000 px radiograph is not blurred at full resolution.
    Returns the filtered sub-image and the target -> sub-image matrix (2, 3).
    """
    H, W = x.shape[-2:]
    h, w = out_shape
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])
    src = corners @ target_to_image[:, :2].T + target_to_image[:, 2]
    k = max(1, math.floor(sigma + 0.5))
    residual = math.sqrt(max(sigma**2 - (k * k - 1) / 12.0, 0.0)) / k  # in sub-image px
    radius = math.ceil(3.0 * residual)
    margin = k * (radius + 2)  # bilinear reads 1 px beyond the sampled area; 1 px spare
    # The box grid starts on a multiple of k, so the result does not depend on the region.
    x0 = int(np.clip(math.floor(src[:, 0].min()) - margin, 0, W - 1)) // k * k
    x1 = int(np.clip(math.ceil(src[:, 0].max()) + margin, 0, W - 1))
    y0 = int(np.clip(math.floor(src[:, 1].min()) - margin, 0, H - 1)) // k * k
    y1 = int(np.clip(math.ceil(src[:, 1].max()) + margin, 0, H - 1))
    sub = x[..., y0 : y1 + 1, x0 : x1 + 1]  # only the part sampled: a knee crop is a fraction of the image
    if fill != 0.0:  # (x - 0.0 is x, bit for bit: no copy of a whole radiograph for nothing)
        sub = sub - fill
    matrix = target_to_image.copy()
    matrix[:, 2] -= (x0, y0)
    if k > 1:
        sub = F.avg_pool2d(sub, k, stride=k, ceil_mode=True)
        matrix = matrix / k
        matrix[:, 2] -= (k - 1) / (2.0 * k)
    if radius > 0:
        taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (taps / residual) ** 2)
        kernel = kernel / kernel.sum()
        # Edge pixels are replicated so the blur does not darken the image border.
        sub = F.pad(sub, (radius, radius, 0, 0), mode="replicate")
        sub = F.conv2d(sub, kernel.view(1, 1, 1, -1))
        sub = F.pad(sub, (0, 0, radius, radius), mode="replicate")
        sub = F.conv2d(sub, kernel.view(1, 1, -1, 1))
    return sub, matrix
