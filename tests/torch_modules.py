"""The authors' torch modules, rebuilt for the tests (facts from their sources, written anew).

- torchvision's ResNet (v1.5: stride on the bottleneck's 3x3; `BasicBlock` for 18/34);
- CosPlace's / EigenPlaces' `GeoLocalizationNet`: `backbone` = ResNet children up to layer4,
  `aggregation` = Sequential(L2Norm, GeM, Flatten, Linear, L2Norm).

torchvision itself is not used: its wheels need a CUDA build of torch's operators.
"""

from __future__ import annotations

import numpy as np

BLOCKS = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


def build_resnet(torch, depth: int, seed: int = 0):
    """torchvision's `resnet{depth}()` with random weights and random BatchNorm statistics."""
    nn = torch.nn
    kind, blocks = BLOCKS[depth]
    expansion = 4 if kind == "bottleneck" else 1

    class Block(nn.Module):
        def __init__(self, inplanes, planes, stride, downsample):
            super().__init__()
            if kind == "basic":
                self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(planes)
                self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(planes)
            else:
                self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(planes)
                self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(planes)
                self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
                self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            if kind == "basic":
                out = self.bn2(self.conv2(out))
            else:
                out = self.relu(self.bn2(self.conv2(out)))
                out = self.bn3(self.conv3(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            return self.relu(out + identity)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            for stage, (planes, count) in enumerate(
                zip((64, 128, 256, 512), blocks, strict=True), 1
            ):
                setattr(
                    self, f"layer{stage}", self._make_layer(planes, count, 1 if stage == 1 else 2)
                )
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512 * expansion, 1000)

        def _make_layer(self, planes, count, stride):
            downsample = None
            if stride != 1 or self.inplanes != planes * expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * expansion, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * expansion),
                )
            layers = [Block(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * expansion
            layers += [Block(self.inplanes, planes, 1, None) for _ in range(1, count)]
            return nn.Sequential(*layers)

    torch.manual_seed(seed)
    model = ResNet()
    with torch.no_grad():  # trained-looking statistics, so that a wrong BatchNorm shows
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def resnet_features(torch, resnet):
    """`nn.Sequential(*list(resnet.children())[:-2])`: the backbone CosPlace keeps."""
    return torch.nn.Sequential(*list(resnet.children())[:-2])


def build_geolocalization_net(torch, depth: int, fc_output_dim: int, seed: int = 0):
    """CosPlace's / EigenPlaces' GeoLocalizationNet on a ResNet, in eval mode."""
    nn, F = torch.nn, torch.nn.functional

    class L2Norm(nn.Module):
        def forward(self, x):
            return F.normalize(x, p=2.0, dim=1)

    class GeM(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.ones(1) * 3)

        def forward(self, x):
            return F.avg_pool2d(x.clamp(min=1e-6).pow(self.p), (x.size(-2), x.size(-1))).pow(
                1.0 / self.p
            )

    class GeoLocalizationNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = resnet_features(torch, build_resnet(torch, depth, seed))
            channels = 512 * (4 if BLOCKS[depth][0] == "bottleneck" else 1)
            self.aggregation = nn.Sequential(
                L2Norm(), GeM(), nn.Flatten(), nn.Linear(channels, fc_output_dim), L2Norm()
            )

        def forward(self, x):
            return self.aggregation(self.backbone(x))

    torch.manual_seed(seed + 1)
    net = GeoLocalizationNet()
    with torch.no_grad():
        net.aggregation[1].p.fill_(2.5)  # a trained-looking exponent, not the initial 3
    return net.eval()


def torch_forward(torch, module, images_rgb255: np.ndarray) -> np.ndarray:
    """`module` on RGB 0-255 NHWC images after torchvision's ToTensor + ImageNet Normalize."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    pixels = ((images_rgb255 / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    with torch.inference_mode():
        out = module(torch.from_numpy(pixels)).numpy()
    return out.transpose(0, 2, 3, 1) if out.ndim == 4 else out
