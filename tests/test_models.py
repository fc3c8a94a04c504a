"""Models: the paper's depths with the paper's head, weights from the torch hub cache, local
files or nothing, fine-tuning modes, other torchvision families."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from brainmri.errors import BrainMRIError
from brainmri.models.build import build_model, count_parameters, weights_cache_path


def _head_layers(model: nn.Module) -> list[str]:
    return [type(m).__name__ for m in model.head]


@pytest.mark.parametrize("arch", ["resnet50", "resnet101", "resnet152"])
def test_paper_depths_have_the_paper_head_and_expected_size(arch):
    model = build_model(arch, weights="none")
    assert _head_layers(model) == ["Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert [m.p for m in model.head if isinstance(m, nn.Dropout)] == [0.2, 0.2]
    assert (model.head[1].in_features, model.head[1].out_features) == (2048, 128)
    assert (model.head[4].in_features, model.head[4].out_features) == (128, 4)
    assert isinstance(model.backbone.fc, nn.Identity)
    # torchvision's model minus its 1000-way fc, plus the head (2048*128+128 + 128*4+4).
    reference = torchvision.models.get_model(arch, weights=None)
    expected = count_parameters(reference) - (2048 * 1000 + 1000) + (2048 * 128 + 128) + (128 * 4 + 4)
    assert count_parameters(model) == expected


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME and hub dir, restored afterwards, with downloads failing as offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path


def test_imagenet_weights_load_from_the_torch_hub_cache(torch_home):
    path = weights_cache_path("resnet50")
    assert str(path).startswith(str(torch_home))
    path.parent.mkdir(parents=True)
    torch.manual_seed(3)
    state = torchvision.models.get_model("resnet50").state_dict()
    torch.save(state, path)
    model = build_model("resnet50", weights="imagenet")
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.backbone.layer4[2].bn3.running_mean, state["layer4.2.bn3.running_mean"])
    # The card records the exact weights: torchvision's enum and the SHA-256 of the file loaded.
    import hashlib

    from brainmri.models.build import weights_record

    record = weights_record("resnet50", "imagenet")
    assert record["enum"] == "ResNet50_Weights.IMAGENET1K_V2" and record["file"] == str(path)
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_imagenet_weights_offline_fail_in_one_line_with_the_alternatives(torch_home):
    with pytest.raises(BrainMRIError) as err:
        build_model("resnet50", weights="imagenet")
    message = str(err.value)
    assert "\n" not in message
    assert str(weights_cache_path("resnet50")) in message
    assert "--weights none" in message and "--weights PATH" in message
    assert "--preset scratch" in message  # the recipe that learns from scratch


def test_local_weights_state_dict_and_checkpoint(tmp_path, tiny_checkpoint):
    torch.manual_seed(5)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, tmp_path / "r18.pth")
    model = build_model("resnet18", weights=str(tmp_path / "r18.pth"))
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])

    ckpt = torch.load(tiny_checkpoint, weights_only=True)["model_state"]
    model = build_model("resnet18", weights=str(tiny_checkpoint))
    assert torch.equal(model.backbone.layer1[0].conv1.weight, ckpt["backbone.layer1.0.conv1.weight"])

    with pytest.raises(BrainMRIError, match="do not fit"):
        build_model("resnet50", weights=str(tmp_path / "r18.pth"))
    # Another depth shares many tensors of the same shape; it must not load half of them silently.
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pth")
    with pytest.raises(BrainMRIError, match="do not fit resnet18: 0 of 120 tensors .* 96 unexpected"):
        build_model("resnet18", weights=str(tmp_path / "r34.pth"))
    with pytest.raises(BrainMRIError, match="do not fit resnet34"):
        build_model("resnet34", weights=str(tmp_path / "r18.pth"))
    with pytest.raises(BrainMRIError, match="brainmri resnet18 checkpoint; it cannot initialise resnet34"):
        build_model("resnet34", weights=str(tiny_checkpoint))
    with pytest.raises(BrainMRIError, match="not found"):
        build_model("resnet18", weights=str(tmp_path / "missing.pth"))


def test_finetune_modes_choose_what_trains():
    def trainable(model):  # "head" or "backbone.<stage>" of every trainable parameter
        return {
            ".".join(n.split(".")[: 1 if n.startswith("head") else 2])
            for n, p in model.named_parameters()
            if p.requires_grad
        }

    assert trainable(build_model("resnet18", "none", finetune="head")) == {"head"}
    assert trainable(build_model("resnet18", "none", finetune="last")) == {"head", "backbone.layer4"}
    full = build_model("resnet18", "none", finetune="full")
    assert count_parameters(full, trainable_only=True) == count_parameters(full)
    with pytest.raises(BrainMRIError, match="fine-tuning mode"):
        build_model("resnet18", "none", finetune="some")


@pytest.mark.parametrize("arch", ["efficientnet_b0", "densenet121", "convnext_tiny", "alexnet"])
def test_other_torchvision_families_get_the_same_head(arch):
    model = build_model(arch, weights="none", finetune="last")
    assert _head_layers(model) == ["Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert model.head[4].out_features == 4
    trainable = count_parameters(model, trainable_only=True)
    assert count_parameters(model.head) < trainable < count_parameters(model)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 4)


def test_unknown_architecture_is_a_user_error():
    with pytest.raises(BrainMRIError, match="unknown architecture 'resnet51'"):
        build_model("resnet51", weights="none")


def test_frozen_batchnorm_keeps_its_running_statistics():
    from brainmri.models.build import train_mode

    x = torch.rand(4, 1, 64, 64)
    for mode, frozen_stats_move in (("full", True), ("last", False), ("head", False)):
        model = train_mode(build_model("resnet18", weights="none", finetune=mode))
        before = model.backbone.bn1.running_mean.clone()
        last_stage = model.backbone.layer4[1].bn2.running_mean.clone()
        model(x)
        assert (not torch.equal(before, model.backbone.bn1.running_mean)) == frozen_stats_move, mode
        assert (not torch.equal(last_stage, model.backbone.layer4[1].bn2.running_mean)) == (mode != "head"), mode
        assert model.head.training  # dropout in the head still trains


def test_a_loaded_checkpoint_is_folded_and_channels_last_and_predicts_as_trained(tiny_checkpoint, tmp_path):
    """Models loaded for inference have batch-norm folded into their convolutions and are in the
    channels-last memory format (oneDNN's convolutions are faster on it), which changes the
    probabilities only by float rounding; the checkpoint keeps the unfolded state dict, and a
    loaded model is never saved as a checkpoint without its BatchNorm layers."""
    from brainmri.inference.forward import probabilities
    from brainmri.models.checkpoint import load_model, read_checkpoint, save_checkpoint
    from brainmri.models.folding import FoldedBatchNorm

    model, card = load_model(tiny_checkpoint)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # every one of a ResNet folds
    assert sum(isinstance(m, FoldedBatchNorm) for m in model.modules()) == 20  # resnet18: 17 + 3 downsample
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    saved = read_checkpoint(tiny_checkpoint)["model_state"]
    trained = build_model(card["arch"], weights="none", num_classes=len(card["classes"])).eval()
    trained.load_state_dict(saved)  # the checkpoint as training wrote it: BatchNorm, NCHW
    assert all(m.weight.is_contiguous() for m in trained.modules() if isinstance(m, nn.Conv2d))
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 1, card["image_size"], card["image_size"]), dtype=torch.uint8)
    torch.testing.assert_close(
        torch.from_numpy(probabilities(model, images, flip=True)),
        torch.from_numpy(probabilities(trained, images, flip=True)),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(BrainMRIError, match="loaded for inference"):
        save_checkpoint(tmp_path / "again.pt", model, card)
    assert not (tmp_path / "again.pt").exists()


def test_batch_norm_folds_only_where_a_convolution_feeds_it_alone():
    """Folding absorbs a BatchNorm into the convolution whose output goes to it and nowhere
    else, with the same outputs; a BatchNorm after anything else, or one that normalises by the
    batch's own statistics, stays; a model in training mode is refused."""
    from brainmri.models.folding import FoldedBatchNorm, fold_batch_norm, is_folded

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),  # folds
        nn.Conv2d(4, 4, 3), nn.ReLU(), nn.BatchNorm2d(4),  # a ReLU between: stays
        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False),  # batch statistics: stays
    )  # fmt: skip
    with torch.no_grad():
        for _ in range(3):  # running statistics other than the initial 0 and 1
            net(torch.randn(8, 1, 12, 12) * 3 + 1)
    with pytest.raises(BrainMRIError, match="eval mode"):
        fold_batch_norm(net)
    net.eval()
    x = torch.randn(5, 1, 12, 12)
    expected = net(x)
    assert not is_folded(net) and fold_batch_norm(net) is net and is_folded(net)
    assert [type(m).__name__ for m in net] == ["Conv2d", "FoldedBatchNorm", "ReLU", "Conv2d", "ReLU", "BatchNorm2d",
                                               "Conv2d", "BatchNorm2d"]  # fmt: skip
    assert net[0].bias is not None and isinstance(net[1], FoldedBatchNorm)
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)

    resnet = build_model("resnet50", weights="none")
    with torch.no_grad():
        resnet(torch.rand(4, 1, 64, 64))  # training mode: the running statistics move
    resnet.eval()
    images = torch.rand(3, 1, 64, 64)
    expected = resnet(images)
    fold_batch_norm(resnet)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in resnet.modules())  # stem, 48 in blocks, 4 downsample
    assert sum(isinstance(m, FoldedBatchNorm) for m in resnet.modules()) == 53
    torch.testing.assert_close(resnet(images), expected, rtol=1e-4, atol=1e-5)
