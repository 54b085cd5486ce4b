"""Video backbones for ``fustal.extract``: clips ``[B, 3, L, S, S]`` (normalised RGB) ->
features ``[B, D]`` (the classifier's input).

The ResNet-18 family of Tran et al. (2018) is implemented here in plain PyTorch (``r3d_18``: 3D
convolutions, ``mc3_18``: 3D in the first stage and 2D after, ``r2plus1d_18``: (2+1)D), with
torchvision's parameter names, so that torchvision's Kinetics-400 weights load into it without
torchvision. ``s3d``, ``mvit_v2_s`` and ``swin3d_t`` come from torchvision (``pip install
'fustal[video]'``), imported only when chosen. Pretrained weights are downloaded on first use into
torch's hub cache (``~/.cache/torch/hub/checkpoints``); ``weights=none`` builds the network with
random weights drawn from a seed, so that the same seed gives the same network again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fustal.errors import FustalError

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
HUB = "https://download.pytorch.org/models"


@dataclass(frozen=True)
class Backbone:
    """A backbone's output size and the input it was trained on: frames resized to
    ``resize_size`` (``(H, W)``, or ``(S,)``: shorter side ``S``), centre-cropped to
    ``crop_size``, normalised with ``mean`` / ``std``. Clips need at least ``min_window`` frames
    and ``min_crop`` pixels; ``fixed``: exactly ``min_window`` frames of ``crop_size`` pixels.
    ``url``: its Kinetics-400 weights (None: torchvision's)."""

    name: str
    dim: int
    crop_size: int
    resize_size: tuple[int, ...]
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    min_window: int = 1
    min_crop: int = 1
    fixed: bool = False
    url: str | None = None

    def resize_for(self, crop_size: int) -> tuple[int, ...]:
        """``resize_size`` scaled for a crop of ``crop_size`` pixels."""
        return tuple(round(s * crop_size / self.crop_size) for s in self.resize_size)

    def check_input(self, window: int, crop_size: int) -> None:
        """Clips of ``window`` frames of ``crop_size`` pixels fit the network."""
        if self.fixed and (window, crop_size) != (self.min_window, self.crop_size):
            raise FustalError(
                f"backbone {self.name}: takes clips of exactly {self.min_window} frames of"
                f" {self.crop_size} pixels, got window={window}, crop_size={crop_size}"
            )
        if window < self.min_window or crop_size < self.min_crop:
            raise FustalError(
                f"backbone {self.name}: needs clips of at least {self.min_window} frames of"
                f" {self.min_crop} pixels, got window={window}, crop_size={crop_size}"
            )


BACKBONES = {
    b.name: b
    for b in (
        Backbone("r3d_18", 512, 112, (128, 171), url=f"{HUB}/r3d_18-b3b3357e.pth"),
        Backbone("mc3_18", 512, 112, (128, 171), url=f"{HUB}/mc3_18-a90a0ba3.pth"),
        Backbone("r2plus1d_18", 512, 112, (128, 171), url=f"{HUB}/r2plus1d_18-91a641e6.pth"),
        Backbone("s3d", 1024, 224, (256, 256), min_window=14, min_crop=224),
        Backbone("mvit_v2_s", 768, 224, (256,), (0.45,) * 3, (0.225,) * 3, 16, 224, fixed=True),
        Backbone("swin3d_t", 768, 224, (256,), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    )
}
# ResNet-18 variants: the convolution of each of the four stages
VARIANTS = {
    "r3d_18": ("3d", "3d", "3d", "3d"),
    "mc3_18": ("3d", "2d", "2d", "2d"),
    "r2plus1d_18": ("2+1d", "2+1d", "2+1d", "2+1d"),
}


def conv3x3(kind: str, cin: int, cout: int, mid: int, stride: int) -> nn.Module:
    """A 3x3x3 convolution (``3d``), its spatial part only (``2d``), or factorised into a
    spatial 1x3x3 and a temporal 3x1x1 one through ``mid`` channels (``2+1d``)."""
    if kind == "3d":
        return nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
    spatial_out = cout if kind == "2d" else mid
    spatial = nn.Conv3d(
        cin, spatial_out, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False
    )
    if kind == "2d":
        return spatial
    temporal = nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False)
    return nn.Sequential(spatial, nn.BatchNorm3d(mid), nn.ReLU(inplace=True), temporal)


class Block(nn.Module):
    """Residual block: two 3x3x3-type convolutions; a strided 1x1x1 projection of the input when
    the shape changes (temporal stride 1 for the ``2d`` kind)."""

    def __init__(self, kind: str, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        # (2+1)d: as many parameters as the 3x3x3 convolution it replaces
        mid = (cin * cout * 27) // (cin * 9 + 3 * cout)
        self.conv1 = nn.Sequential(
            conv3x3(kind, cin, cout, mid, stride), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)
        )
        self.conv2 = nn.Sequential(conv3x3(kind, cout, cout, mid, 1), nn.BatchNorm3d(cout))
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            strides = (1 if kind == "2d" else stride, stride, stride)
            self.downsample = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride=strides, bias=False), nn.BatchNorm3d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + shortcut)


class VideoResNet18(nn.Module):
    """ResNet-18 video backbone: ``[B, 3, L, H, W]`` -> ``[B, 512]`` (global average pool)."""

    def __init__(self, kinds: tuple[str, str, str, str]) -> None:
        super().__init__()
        if kinds[0] == "2+1d":
            self.stem = nn.Sequential(
                nn.Conv3d(3, 45, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
                nn.BatchNorm3d(45),
                nn.ReLU(inplace=True),
                nn.Conv3d(45, 64, (3, 1, 1), padding=(1, 0, 0), bias=False),
                nn.BatchNorm3d(64),
                nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv3d(3, 64, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
                nn.BatchNorm3d(64),
                nn.ReLU(inplace=True),
            )
        widths = (64, 128, 256, 512)
        cin = 64
        for i, (kind, cout) in enumerate(zip(kinds, widths, strict=True)):
            stride = 1 if i == 0 else 2
            self.add_module(
                f"layer{i + 1}",
                nn.Sequential(Block(kind, cin, cout, stride), Block(kind, cout, cout, 1)),
            )
            cin = cout
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(1, 5):
            x = self.get_submodule(f"layer{i}")(x)
        return x.mean(dim=(2, 3, 4))


def download_weights(backbone: Backbone) -> dict[str, torch.Tensor]:
    """The backbone's Kinetics-400 state dict, from torch's hub cache or downloaded into it."""
    assert backbone.url is not None
    try:
        return torch.hub.load_state_dict_from_url(backbone.url, progress=True, check_hash=True)
    except (OSError, RuntimeError) as err:  # no network (URLError is an OSError), bad hash
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FustalError(
            f"backbone {backbone.name}: cannot load its Kinetics-400 weights from {backbone.url}"
            f" ({reason}); put the file into {torch.hub.get_dir()}/checkpoints, or extract with"
            " weights=none (random weights)"
        ) from None


def resnet18(backbone: Backbone, pretrained: bool) -> nn.Module:
    model = VideoResNet18(VARIANTS[backbone.name])
    if pretrained:
        state = download_weights(backbone)
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    return model


def torchvision_models(name: str) -> Any:
    """``torchvision.models``, for the backbone ``name`` that needs it; a :class:`FustalError`
    when torchvision cannot be imported."""
    try:
        import torchvision.models
    except Exception as err:  # not installed, or a build that does not fit the installed torch
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FustalError(
            f"backbone {name}: needs torchvision (pip install 'fustal[video]', a build matching"
            f" your torch): {reason}; the r3d_18, mc3_18 and r2plus1d_18 backbones do not"
        ) from None
    return torchvision.models


def check_available(name: str) -> None:
    """The backbone ``name`` can be built here (torchvision imports, where it needs it)."""
    if BUILDERS[name] is from_torchvision:
        torchvision_models(name)


def from_torchvision(backbone: Backbone, pretrained: bool) -> nn.Module:
    """A torchvision video model with its classifier replaced by the identity."""
    models = torchvision_models(backbone.name)
    model = models.get_model(backbone.name, weights="DEFAULT" if pretrained else None)
    if backbone.name == "s3d":
        model.classifier = nn.Identity()  # the model averages what the classifier returns
    else:
        model.head = nn.Identity()
    return model


BUILDERS: dict[str, Callable[[Backbone, bool], nn.Module]] = {
    **dict.fromkeys(VARIANTS, resnet18),
    **dict.fromkeys(("s3d", "mvit_v2_s", "swin3d_t"), from_torchvision),
}


def build_backbone(name: str, pretrained: bool, seed: int) -> nn.Module:
    """The backbone ``name`` in eval mode: Kinetics-400 weights, or random ones drawn from
    ``seed`` (the global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BUILDERS[name](BACKBONES[name], pretrained)
    return model.eval()
