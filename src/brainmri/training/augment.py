"""Batch augmentation as in the paper: rotation, horizontal and vertical shift, zoom, shear;
and, beyond it, horizontal flips and random crops that cut the image's edges (``--crop``).

The parameters are drawn per image with the semantics of torchvision's
``transforms.v2.RandomAffine`` (degrees, translate, scale, shear), but the whole batch is
warped by one ``affine_grid``/``grid_sample`` call on the batch's device instead of one
call per image. That keeps augmentation far cheaper than the optimisation step on a CPU
and negligible on a GPU. :func:`affine_matrices` is tested against
``torchvision.transforms.v2.functional.affine`` image by image.

Without augmentation the augmenter is :func:`brainmri.io.preprocess.to_input`, so training
and inference see exactly the same conversion.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from brainmri.config import AugmentSettings
from brainmri.io.preprocess import to_input

Augmenter = Callable[..., torch.Tensor]


def sample_params(
    n: int, config: AugmentSettings, size: tuple[int, int], generator: torch.Generator | None = None
) -> dict:
    """Draw per-image affine parameters, like ``v2.RandomAffine(degrees, translate, scale, shear)``.

    ``size`` is (height, width); translations are in pixels, angles in degrees.
    """
    h, w = size

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, dtype=torch.float64) * (hi - lo) + lo

    params = {
        "angle": uniform(-config.rotation, config.rotation),
        "tx": uniform(-config.shift * w, config.shift * w),
        "ty": uniform(-config.shift * h, config.shift * h),
        "scale": uniform(1.0 - config.zoom, 1.0 + config.zoom),
        "shear": uniform(-config.shear, config.shear),
        "flip": torch.rand(n, generator=generator) < 0.5 if config.hflip else torch.zeros(n, dtype=torch.bool),
    }
    if config.crop < 1.0:  # drawn last, so that runs without crops keep their random stream
        side = uniform(config.crop, 1.0)  # the crop's side as a fraction of the image's
        zoom = 1.0 / side
        # The crop's centre may move as far as keeps it inside the image, so its edges cut the
        # image's borders; in output pixels that is zoom * (1 - side) / 2 of the size.
        reach = zoom * (1.0 - side) / 2
        params["scale"] = params["scale"] * zoom
        params["tx"] = params["tx"] + (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * reach * w
        params["ty"] = params["ty"] + (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * reach * h
    return params


def affine_matrices(params: dict, size: tuple[int, int]) -> torch.Tensor:
    """Inverse affine maps (N, 2, 3) in ``affine_grid``'s normalised coordinates.

    The pixel-space matrix is torchvision's ``_get_inverse_affine_matrix`` (centre of the
    image, x-shear only) written for a batch of parameter values.
    """
    h, w = size
    rot = torch.deg2rad(params["angle"])
    sx = torch.deg2rad(params["shear"])
    scale = params["scale"]
    tx, ty = params["tx"], params["ty"]
    # Rotation-shear matrix [[a, b], [c, d]] (sy = 0), then its inverse divided by scale.
    a = torch.cos(rot)
    b = -torch.cos(rot) * torch.tan(sx) - torch.sin(rot)
    c = torch.sin(rot)
    d = -torch.sin(rot) * torch.tan(sx) + torch.cos(rot)
    m00, m01, m10, m11 = d / scale, -b / scale, -c / scale, a / scale
    m02 = m00 * -tx + m01 * -ty
    m12 = m10 * -tx + m11 * -ty
    # Pixel coordinates centred on the image -> affine_grid's [-1, 1] (align_corners=False).
    theta = torch.stack(
        [
            torch.stack([m00, m01 * h / w, m02 * 2 / w], dim=1),
            torch.stack([m10 * w / h, m11, m12 * 2 / h], dim=1),
        ],
        dim=1,
    )
    theta[params["flip"], :, 0] *= -1  # mirror the output horizontally
    return theta.float()


def augment_batch(
    batch: torch.Tensor, config: AugmentSettings, generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 or float (N, 1, H, W) -> augmented float32 in [0, 1] on the batch's device.

    Pixels that come from outside the image are black (the MRI background).
    """
    x = to_input(batch)
    n, _, h, w = x.shape
    theta = affine_matrices(sample_params(n, config, (h, w), generator), (h, w)).to(x.device)
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def make_augmenter(config: AugmentSettings) -> Augmenter:
    """The training-time batch transform: ``f(uint8 batch, generator=None) -> float [0, 1]``.

    With ``config.augment`` false it only converts, as at inference. The warp is defined only
    within the fields' ranges (a NaN would silently train a NaN model): settings taken from a
    :class:`brainmri.config.TrainConfig` (``augment_section()``) come checked.
    """
    if not config.augment:
        return lambda batch, generator=None: to_input(batch)
    return lambda batch, generator=None: augment_batch(batch, config, generator)
