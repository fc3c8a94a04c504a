"""ResNet (and other torchvision) backbones topped with the paper's classification head.

The paper's head: global average pooling, Dropout(0.2), Dense(128, ReLU), Dropout(0.2),
Dense(4). torchvision backbones already end in global average pooling; we replace their
final Linear layer with the head.
"""

from __future__ import annotations

import os
import re
import urllib.error
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from brainmri.config import FINETUNE_MODES
from brainmri.errors import BrainMRIError
from brainmri.files import brief
from brainmri.labels import CLASSES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAPER_ARCHS = ("resnet50", "resnet101", "resnet152")
#: torchvision families whose constructor takes ``zero_init_residual``.
RESIDUAL_FAMILY = re.compile(r"^(resnet|resnext|wide_resnet)\d")


class InputAdapter(nn.Module):
    """Grayscale [0, 1] input -> 3-channel input normalised as the backbone's weights expect.

    Living inside the model, it travels with checkpoints and ONNX exports, so no caller can
    forget or duplicate it.
    """

    mean: torch.Tensor  # buffers (1, 3, 1, 1)
    std: torch.Tensor

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std


def paper_head(
    in_features: int, num_classes: int = len(CLASSES), hidden: int = 128, dropout: float = 0.2
) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


class Classifier(nn.Module):
    """InputAdapter -> backbone (its last Linear removed) -> paper head. Outputs logits."""

    def __init__(self, backbone: nn.Module, in_features: int, num_classes: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.adapter = InputAdapter(mean, std)
        self.backbone = backbone
        self.head = paper_head(in_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features (N, in_features): the penultimate layer, before the head,
        on which the input check (:mod:`brainmri.inference.input_check`) measures how unlike the training
        images a slice is."""
        return self.backbone(self.adapter(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def available_archs() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _strip_last_linear(model: nn.Module) -> int:
    """Replace the backbone's final Linear layer by Identity; return its input width."""
    for attr in ("fc", "classifier", "heads", "head"):
        if not hasattr(model, attr):
            continue
        block = getattr(model, attr)
        if isinstance(block, nn.Linear):
            setattr(model, attr, nn.Identity())
            return block.in_features
        if isinstance(block, nn.Sequential):
            for idx in range(len(block) - 1, -1, -1):
                layer = block[idx]
                if isinstance(layer, nn.Linear):
                    width = layer.in_features
                    block[idx] = nn.Identity()
                    # Dropout after the removed Linear would be dead weight: drop trailing layers.
                    for later in range(len(block) - 1, idx, -1):
                        del block[later]
                    return width
    raise BrainMRIError(f"architecture {type(model).__name__} has no final Linear layer to replace")


def weights_cache_path(arch: str) -> Path:
    """Where torch hub keeps torchvision's ImageNet weights for ``arch``."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    name = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def weights_record(arch: str, weights: str) -> dict:
    """Which weights initialised a model, exactly: torchvision's weights enum (e.g.
    ``ResNet50_Weights.IMAGENET1K_V2``) and the SHA-256 of the file that was loaded, since a
    cached or local file can be anything. Recorded in every model card."""
    from brainmri.files import file_sha256

    def sha256(path: Path) -> str | None:
        return file_sha256(path) if path.is_file() else None

    if weights in ("none", "", None):
        return {"kind": "random initialisation", "enum": None, "file": None, "sha256": None}
    if weights == "imagenet":
        enum = torchvision.models.get_model_weights(arch).DEFAULT
        cache = weights_cache_path(arch)
        return {"kind": "torchvision ImageNet", "enum": str(enum), "url": enum.url, "file": str(cache),
                "sha256": sha256(cache)}  # fmt: skip
    return {"kind": "local file", "enum": None, "file": str(Path(weights).resolve()), "sha256": sha256(Path(weights))}


def imagenet_state_dict(arch: str) -> dict:
    """torchvision's published ImageNet weights, from the torch hub cache or downloaded into it."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    cache = weights_cache_path(arch)
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        if cache.exists():
            raise BrainMRIError(f"cannot read cached ImageNet weights {cache}: {exc}") from None
        raise BrainMRIError(
            f"ImageNet weights for {arch} are not cached at {cache} and cannot be downloaded "
            f"({getattr(exc, 'reason', exc)}); put the file there, or use --weights none "
            "(train from scratch; 'brainmri reproduce --preset scratch' or 'train --config configs/scratch.yaml' "
            "is the recipe that learns from scratch) or --weights PATH (a local state dict or checkpoint)"
        ) from None


def _load_local_weights(path: Path, backbone: nn.Module, arch: str, head_keys: set[str]) -> None:
    """Load a local state dict or brainmri checkpoint into the (headless) backbone.

    Every backbone tensor must come from the file, with its shape: a partly loaded network
    (another depth of ResNet, say) would train as a silent mixture of pretrained and random
    layers. The only keys allowed to be left over are those of the original classifier layer
    (``head_keys``), which the paper's head replaces.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes about old pickle protocols
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BrainMRIError(f"weights file not found: {path}") from None
    except Exception as exc:
        raise BrainMRIError(f"cannot read weights file {path}: {str(exc).splitlines()[0]}") from None
    if isinstance(obj, dict) and obj.get("format") == "brainmri-checkpoint":
        card_arch = (obj.get("card") or {}).get("arch") if isinstance(obj.get("card"), dict) else None
        if card_arch != arch:
            raise BrainMRIError(f"{path} is a brainmri {card_arch} checkpoint; it cannot initialise {arch}")
        state = {k[len("backbone.") :]: v for k, v in obj["model_state"].items() if k.startswith("backbone.")}
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        raise BrainMRIError(f"{path} is neither a torchvision state dict nor a brainmri checkpoint")
    own = backbone.state_dict()
    missing = [k for k in own if k not in state or state[k].shape != own[k].shape]
    unexpected = [k for k in state if k not in own and k not in head_keys]
    if missing or unexpected:
        raise BrainMRIError(
            f"weights in {path} do not fit {arch}: {len(missing)} of {len(own)} tensors missing or of another "
            f"shape, {len(unexpected)} unexpected (e.g. {(missing + unexpected)[0]}); is it another architecture?"
        )
    backbone.load_state_dict({k: state[k] for k in own})


def build_model(
    arch: str = "resnet50",
    weights: str = "imagenet",
    num_classes: int = len(CLASSES),
    finetune: str = "full",
    zero_init_residual: bool = False,
) -> nn.Module:
    """Build a classifier: ``weights`` is ``imagenet``, ``none`` or a path to a local file.

    ``finetune`` chooses what trains: ``full`` (the paper), ``head`` (frozen backbone) or
    ``last`` (the last stage of the backbone and the head). ``zero_init_residual`` starts
    every residual branch of a ResNet at zero, so that a deep network from scratch begins as
    a shallow one (Goyal et al., 2017); pretrained weights overwrite it.
    """
    if arch not in available_archs():
        raise BrainMRIError(
            f"unknown architecture {brief(repr(arch))}; use a torchvision classification model, "
            f"e.g. {', '.join(PAPER_ARCHS)}"
        )
    if finetune not in FINETUNE_MODES:
        raise BrainMRIError(f"unknown fine-tuning mode {finetune!r}; choose one of {', '.join(FINETUNE_MODES)}")
    kwargs = {}
    if zero_init_residual:
        if not RESIDUAL_FAMILY.match(arch):
            raise BrainMRIError(f"--zero-init-residual is for ResNets (resnet*, resnext*, wide_resnet*), not {arch}")
        kwargs["zero_init_residual"] = True
    backbone = torchvision.models.get_model(arch, weights=None, **kwargs)
    if weights == "imagenet":
        backbone.load_state_dict(imagenet_state_dict(arch))
    with_head = set(backbone.state_dict())
    width = _strip_last_linear(backbone)
    if weights not in ("imagenet", "none", "", None):
        _load_local_weights(Path(weights), backbone, arch, head_keys=with_head - set(backbone.state_dict()))
    model = Classifier(backbone, width, num_classes)
    set_finetune(model, finetune)
    return model


def train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, except BatchNorm layers whose parameters are all frozen
    (``--finetune head|last``): their running statistics stay the pretrained ones, as freezing
    promises; in training mode every forward pass would overwrite them."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
    return model


def set_finetune(model: Classifier, mode: str) -> None:
    """Freeze the parts of the backbone that ``mode`` does not train."""
    params = list(model.backbone.named_parameters())
    for _, p in params:
        p.requires_grad = mode == "full"
    if mode == "last":
        for module in last_stage(model.backbone):
            for p in module.parameters():
                p.requires_grad = True
    for p in model.head.parameters():
        p.requires_grad = True


def last_stage(backbone: nn.Module) -> list[nn.Module]:
    """The modules that ``finetune='last'`` trains: ResNet's ``layer4``, and the same idea for
    other families.

    Wrappers that hold nearly all parameters (``features``, AlexNet's ``classifier``) are
    entered; then modules are taken from the end until one holds a real share (5 %) of the
    parameters, so that a trailing norm layer (DenseNet's ``norm5``) does not count as a stage.
    Modules that run after an entered wrapper (ConvNeXt's final LayerNorm) train as well.
    """

    def size(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    chosen: list[nn.Module] = []
    module = backbone
    while True:
        kids = [c for c in module.children() if size(c) > 0]
        if not kids:
            return [*chosen, module]
        big = max(kids, key=size)
        if size(big) >= 0.9 * size(module) and any(True for _ in big.children()):
            chosen += kids[kids.index(big) + 1 :]
            module = big
            continue
        for kid in reversed(kids):
            chosen.append(kid)
            if size(kid) >= 0.05 * size(module):
                return chosen
        return chosen


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
