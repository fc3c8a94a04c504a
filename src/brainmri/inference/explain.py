"""Grad-CAM heatmaps and overlays, computed with pytorch-grad-cam.

Grad-CAM weights the last convolutional feature maps by the gradient of one class's logit,
showing which regions of the slice drove that score. It is a visual aid for research, not a
segmentation and not evidence for a diagnosis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from brainmri.errors import BrainMRIError


def target_layer(model: nn.Module, image_size: int) -> nn.Module:
    """The layer Grad-CAM reads: the last block of the backbone's last convolutional stage.

    ResNets use ``backbone.layer4[-1]``; for other families the last module (in execution
    order) that outputs a feature map larger than 1x1, found with one dry run.
    """
    backbone = getattr(model, "backbone", model)
    if hasattr(backbone, "layer4"):
        return cast(nn.Sequential, backbone.layer4)[-1]
    order: list[nn.Module] = []

    def remember(module: nn.Module, _inputs: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] > 1 and output.shape[-2] > 1:
            order.append(module)

    handles = [m.register_forward_hook(remember) for m in backbone.modules() if m is not backbone]
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, 1, image_size, image_size, device=device))
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise BrainMRIError("Grad-CAM needs a convolutional backbone; this architecture has no spatial feature maps")
    return order[-1]


#: Explanation methods of pytorch-grad-cam that can be asked for by name.
METHODS = ("gradcam", "gradcam++", "layercam", "hirescam")
#: The stages of a ResNet whose last block a map can be read from (layer4: 4x4 at 128 px).
LAYERS = ("layer4", "layer3", "layer2")


@dataclass(frozen=True)
class Explainer:
    """How a map is made: the method, the stage it reads, and the factor by which the input is
    enlarged first (a larger input gives a finer map; the map is brought back to the input's
    size). Written ``method@layer`` or ``method@layer x2``."""

    method: str = "gradcam"
    layer: str = "layer4"
    scale: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BrainMRIError(f"unknown explanation method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.layer not in LAYERS:
            raise BrainMRIError(f"unknown explanation layer {self.layer!r}; choose one of {', '.join(LAYERS)}")
        if self.scale not in (1, 2, 3):
            raise BrainMRIError(f"explanation input scale must be 1, 2 or 3, got {self.scale}")

    @property
    def name(self) -> str:
        return f"{self.method}@{self.layer}" + (f" x{self.scale}" if self.scale != 1 else "")

    @classmethod
    def parse(cls, text: str) -> Explainer:
        """``gradcam@layer4``, ``layercam@layer3 x2`` -> an Explainer (one clear line if not)."""
        head, _, scale = text.strip().partition(" x")
        method, _, layer = head.partition("@")
        try:
            return cls(method, layer or "layer4", int(scale) if scale else 1)
        except ValueError:
            example = "'gradcam@layer4' or 'layercam@layer3 x2'"
            raise BrainMRIError(f"cannot read explanation {text!r}; write e.g. {example}") from None


#: What predict --explain and the web app draw when a model card names nothing else: the
#: candidate that scored best on the boxes' ``select`` half (docs/results/localisation).
DEFAULT_EXPLAINER = Explainer("gradcam", "layer4")


def stage_layer(model: nn.Module, layer: str, image_size: int) -> nn.Module:
    """The last block of a ResNet stage (``layer4`` ...); other families: :func:`target_layer`."""
    backbone = getattr(model, "backbone", model)
    if hasattr(backbone, layer):
        return getattr(backbone, layer)[-1]
    return target_layer(model, image_size)


def saliency(
    model: nn.Module, x: torch.Tensor, class_indices: Sequence[int], explainer: Explainer = DEFAULT_EXPLAINER
) -> np.ndarray:
    """Maps of a batch (N, 1, H, W) for one class each -> float32 (N, H, W) in [0, 1]."""
    return saliency_many(model, x, class_indices, [explainer])[explainer.name]


_ORDER = {"layer2": 0, "layer3": 1, "layer4": 2}


def saliency_many(
    model: nn.Module, x: torch.Tensor, class_indices: Sequence[int], explainers: Sequence[Explainer]
) -> dict[str, np.ndarray]:
    """The maps of several explainers from one forward and backward pass per input scale.

    Each map is what pytorch-grad-cam's class of that method computes for that one layer (its
    ``get_cam_image``, then its clipping and min-max scaling; tests/test_explain.py checks
    equality), but the activations and gradients of every layer asked for are captured in the
    same pass with its ``ActivationsAndGradients``: scoring seven explainers costs two passes,
    not seven.
    """
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
    from pytorch_grad_cam.utils.image import scale_cam_image

    kind = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM, "hirescam": HiResCAM}
    size = x.shape[-1]
    out: dict[str, np.ndarray] = {}
    for scale in sorted({e.scale for e in explainers}):
        group = [e for e in explainers if e.scale == scale]
        xin = x.float() if scale == 1 else F.interpolate(x.float(), scale_factor=scale, mode="bilinear",
                                                          align_corners=False)  # fmt: skip
        names = sorted({e.layer for e in group}, key=lambda n: _ORDER.get(n, 0))  # hooks fire in forward order
        layers = [stage_layer(model, n, size) for n in names]
        capture = ActivationsAndGradients(model, layers, reshape_transform=None, detach=True)
        try:
            model.requires_grad_(True)  # gradients must reach the layers' outputs
            with torch.enable_grad():
                logits = capture(xin)
                model.zero_grad(set_to_none=True)
                logits[torch.arange(len(class_indices)), torch.as_tensor(list(class_indices))].sum().backward()
            acts = [a.numpy() for a in capture.activations]
            grads = [g.numpy() for g in capture.gradients]
        finally:
            capture.release()
            model.zero_grad(set_to_none=True)
            model.requires_grad_(False)
        for ex in group:
            i = names.index(ex.layer)
            with kind[ex.method](model=model, target_layers=[layers[i]]) as method:
                method.activations_and_grads.release()  # its formulas only: the pass above captured the tensors
                cam = np.maximum(method.get_cam_image(xin, layers[i], None, acts[i], grads[i], False), 0)
            heat = scale_cam_image(scale_cam_image(cam, (xin.shape[-1], xin.shape[-2])))
            heat_t = torch.from_numpy(np.asarray(heat, dtype=np.float32))
            if scale != 1:  # back to the input's size, averaging the finer map's pixels
                heat_t = F.adaptive_avg_pool2d(heat_t[:, None], size)[:, 0]
            out[ex.name] = np.clip(np.nan_to_num(heat_t.numpy()), 0.0, 1.0)
    return out


def saliency_in_batches(
    model: nn.Module,
    images: torch.Tensor,
    class_indices: Sequence[int],
    explainers: Sequence[Explainer],
    batch_size: int,
    device: torch.device | str | None = None,
) -> dict[str, np.ndarray]:
    """:func:`saliency_many` over uint8 slices (N, 1, H, W), ``batch_size`` at a time: in eval
    mode each map depends on its own slice only, and one pass over a batch costs far less than a
    pass per slice, while the batch bounds the memory of the backward pass."""
    from brainmri.io.preprocess import to_input

    parts: dict[str, list[np.ndarray]] = {e.name: [] for e in explainers}
    for i in range(0, len(images), batch_size):
        x = to_input(images[i : i + batch_size])
        x = x if device is None else x.to(device)
        maps = saliency_many(model, x, class_indices[i : i + batch_size], explainers)
        for name, m in maps.items():
            parts[name].append(m)
    return {name: np.concatenate(p) for name, p in parts.items()}


def grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, class_index: int) -> np.ndarray:
    """Grad-CAM of one input (1, 1, H, W) for ``class_index`` -> float32 (H, W) in [0, 1]."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.requires_grad_(True)  # gradients must reach the target layer's output
    with GradCAM(model=model, target_layers=[layer]) as cam, torch.enable_grad():
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(class_index)])[0]
    model.zero_grad(set_to_none=True)
    return np.clip(np.nan_to_num(heat.astype(np.float32)), 0.0, 1.0)


def overlay(gray: np.ndarray, heat: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """Blend the heatmap (jet colour map) over the grayscale slice -> uint8 (H, W, 3)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.repeat(gray[:, :, None].astype(np.float32) / 255.0, 3, axis=2)
    return show_cam_on_image(rgb, heat, use_rgb=True, image_weight=image_weight)


def panel(
    gray: np.ndarray, over: np.ndarray, title: str, scale: int | None = None, method: str = "Grad-CAM"
) -> Image.Image:
    """Slice and overlay side by side with a title; drawn with matplotlib's object API
    (no pyplot state), so it is safe in server threads."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.4), dpi=100 if scale is None else scale)
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    axes[0].imshow(gray, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("input slice", fontsize=9)
    axes[1].imshow(over)
    axes[1].set_title(f"{method} overlay", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.01, "Research software, not a medical device.", ha="center", fontsize=7, color="gray")
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[:, :, :3].copy())
