"""Grad-CAM heatmaps and overlays, computed with pytorch-grad-cam.

Grad-CAM weights the last convolutional feature maps by the gradient of one class's logit,
showing which regions of the slice drove that score. It is a visual aid for research, not a
segmentation and not evidence for a diagnosis.
"""

from __future__ import annotations

import numpy as np
import torch
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
        return backbone.layer4[-1]
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


def panel(gray: np.ndarray, over: np.ndarray, title: str, scale: int | None = None) -> Image.Image:
    """Slice and overlay side by side with a title; drawn with matplotlib's object API
    (no pyplot state), so it is safe in server threads."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.4), dpi=100 if scale is None else scale)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    axes[0].imshow(gray, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("input slice", fontsize=9)
    axes[1].imshow(over)
    axes[1].set_title("Grad-CAM overlay", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.01, "Research software, not a medical device.", ha="center", fontsize=7, color="gray")
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy())
