"""The authors' torch modules, rebuilt (facts from their sources, written anew): the references
the tests check importers and layers against, and what `sare-tf bench models` times beside
sare_tf. Every builder takes the `torch` module as its first argument: importing this module
needs no torch (it is a test / benchmark extra).

- torchvision's ResNet (v1.5: stride on the bottleneck's 3x3; `BasicBlock` for 18/34);
- CosPlace's / EigenPlaces' `GeoLocalizationNet`: `backbone` = ResNet children up to layer4,
  `aggregation` = Sequential(L2Norm, GeM, Flatten, Linear, L2Norm);
- pytorch-NetVlad's model: `vgg16().features[:-2]` (conv5_3 before its ReLU) and its `NetVLAD`
  module (per-location L2, 1x1 conv + softmax, residuals summed one cluster at a time,
  intra-normalisation, L2); sare_tf's `tiny` backbone written in torch; the joint Gaussian SARE
  loss (the paper's eq. 5 summed over the negatives).

torchvision itself is not used (its wheels need a CUDA build of torch's operators); attention
uses torch's `scaled_dot_product_attention`, as the DINOv2 code does.
"""

from __future__ import annotations

import math

import numpy as np

BLOCKS = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


def randomize_batch_norm(torch, model):
    """Gives every BatchNorm2d of `model` trained-looking statistics (so a wrong BatchNorm shows)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model


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
    return randomize_batch_norm(torch, ResNet()).eval()


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


def build_dinov2_vit(torch, dim: int = 384, depth: int = 2, heads: int = 6, grid: int = 37, seed=0):
    """A DINOv2 ViT/14 in torch as the authors define it (patch conv, [CLS], position embeddings
    of a `grid`-square grid resized by torch's bicubic with the 0.1 offset, pre-norm blocks with
    LayerScale, exact GELU). `depth` blocks, random weights; `forward` returns the tokens before
    the final norm and `norm` is the final LayerNorm."""
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = nn.Module()
            self.attn.qkv = nn.Linear(dim, 3 * dim)
            self.attn.proj = nn.Linear(dim, dim)
            self.ls1 = nn.Module()
            self.ls1.gamma = nn.Parameter(torch.rand(dim) * 0.5 + 0.1)
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Module()
            self.mlp.fc1 = nn.Linear(dim, 4 * dim)
            self.mlp.fc2 = nn.Linear(4 * dim, dim)
            self.ls2 = nn.Module()
            self.ls2.gamma = nn.Parameter(torch.rand(dim) * 0.5 + 0.1)

        def forward(self, x):
            batch, tokens, _ = x.shape
            qkv = self.attn.qkv(self.norm1(x)).reshape(batch, tokens, 3, heads, dim // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            out = (
                F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, dim)
            )
            x = x + self.attn.proj(out) * self.ls1.gamma
            return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x)))) * self.ls2.gamma

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Module()
            self.patch_embed.proj = nn.Conv2d(3, dim, 14, 14)
            self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid * grid, dim))
            self.mask_token = nn.Parameter(torch.zeros(1, dim))
            self.blocks = nn.ModuleList([Block() for _ in range(depth)])
            self.norm = nn.LayerNorm(dim, eps=1e-6)

        def forward(self, images):
            batch, _, height, width = images.shape
            x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
            x = torch.cat((self.cls_token.expand(batch, -1, -1), x), dim=1)
            h0, w0 = height // 14, width // 14
            if (h0, w0) == (grid, grid) and height == width:
                return self._blocks(x + self.pos_embed)
            patch_pos = F.interpolate(
                self.pos_embed[:, 1:].reshape(1, grid, grid, dim).permute(0, 3, 1, 2),
                scale_factor=((h0 + 0.1) / grid, (w0 + 0.1) / grid),
                mode="bicubic",
                antialias=False,
            )
            assert patch_pos.shape[-2:] == (h0, w0)
            pos = torch.cat(
                (self.pos_embed[:, :1], patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)), 1
            )
            return self._blocks(x + pos)

        def _blocks(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    torch.manual_seed(seed)
    return ViT().eval()


def build_boq(torch, in_channels, proj_channels, num_queries, num_layers, row_dim, seed=0):
    """BoQ's aggregator with the authors' module names (`proj_c`, `norm_input`, `boqs.{i}`
    with `encoder` (torch's TransformerEncoderLayer), `queries`, `self_attn`, `norm_q`,
    `cross_attn`, `norm_out`; `fc`), built from torch's own attention modules; `forward` returns
    the descriptor only."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            heads = proj_channels // 64
            self.encoder = nn.TransformerEncoderLayer(
                d_model=proj_channels, nhead=heads, dim_feedforward=4 * proj_channels,
                batch_first=True, dropout=0.0,
            )  # fmt: skip
            self.queries = nn.Parameter(torch.randn(1, num_queries, proj_channels))
            self.self_attn = nn.MultiheadAttention(proj_channels, num_heads=heads, batch_first=True)
            self.norm_q = nn.LayerNorm(proj_channels)
            self.cross_attn = nn.MultiheadAttention(
                proj_channels, num_heads=heads, batch_first=True
            )
            self.norm_out = nn.LayerNorm(proj_channels)

        def forward(self, x):
            x = self.encoder(x)
            q = self.queries.repeat(x.size(0), 1, 1)
            q = self.norm_q(q + self.self_attn(q, q, q)[0])
            return x, self.norm_out(self.cross_attn(q, x, x)[0])

    class BoQ(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj_c = nn.Conv2d(in_channels, proj_channels, kernel_size=3, padding=1)
            self.norm_input = nn.LayerNorm(proj_channels)
            self.boqs = nn.ModuleList([Block() for _ in range(num_layers)])
            self.fc = nn.Linear(num_layers * num_queries, row_dim)

        def forward(self, x):
            x = self.norm_input(self.proj_c(x).flatten(2).permute(0, 2, 1))
            outs = []
            for block in self.boqs:
                x, out = block(x)
                outs.append(out)
            out = self.fc(torch.cat(outs, dim=1).permute(0, 2, 1)).flatten(1)
            return torch.nn.functional.normalize(out, p=2, dim=-1)

    torch.manual_seed(seed)
    boq = BoQ()
    with torch.no_grad():  # trained-looking norms, so that a swapped gamma / beta shows
        for module in boq.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
            if isinstance(module, nn.MultiheadAttention):
                module.in_proj_bias.uniform_(-0.2, 0.2)
    return boq.eval()


def calibrate_batchnorm(torch, module, images_rgb255):
    """BatchNorm statistics measured on these images (cumulative average, as after training):
    random statistics let a deep random ResNet map every image to nearly one feature map."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.reset_running_stats()
            layer.momentum = None
    module.train()
    with torch.no_grad():
        torch_forward_train(torch, module, images_rgb255)
    return module.eval()


def torch_forward_train(torch, module, images_rgb255):
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    pixels = ((images_rgb255 / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    return module(torch.from_numpy(pixels))


def log_optimal_transport(torch, log_a, log_b, costs, iterations=3):
    """Sinkhorn in log space, as MegaLoc's aggregator runs it (3 iterations)."""
    u, v = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for _ in range(iterations):
        u = log_a - torch.logsumexp(costs + v.unsqueeze(1), dim=2)
        v = log_b - torch.logsumexp(costs + u.unsqueeze(2), dim=1)
    return costs + u.unsqueeze(2) + v.unsqueeze(1)


def matching_probs(torch, scores, dust_bin):
    """Log assignment probabilities of `[B, m, n]` scores plus a dust bin row."""
    batch, m, n = scores.shape
    augmented = torch.cat([scores, dust_bin.expand(batch, 1, n)], dim=1)
    norm = -torch.tensor(math.log(n + m))
    log_a = norm.expand(m + 1).clone()
    log_a[-1] = log_a[-1] + math.log(n - m)
    log_b = norm.expand(n)
    return (
        log_optimal_transport(torch, log_a.expand(batch, -1), log_b.expand(batch, -1), augmented)
        - norm
    )


def build_megaloc(
    torch, vit, num_clusters=8, cluster_dim=16, token_dim=12, mlp_dim=32, feat_dim=40, seed=0
):
    """MegaLoc's `MegaLoc` module layout (`backbone` = a DINOv2 ViT whose final norm is applied,
    `aggregator.agg` = the optimal-transport aggregator, `aggregator.linear`), written from the
    paper and MegaLoc's MIT-licensed definition; `forward` returns the L2-normalised descriptor."""
    nn, F = torch.nn, torch.nn.functional
    channels = vit.norm.normalized_shape[0]

    class Agg(nn.Module):
        def __init__(self):
            super().__init__()
            self.token_features = nn.Sequential(
                nn.Linear(channels, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, token_dim)
            )
            self.cluster_features = nn.Sequential(
                nn.Conv2d(channels, mlp_dim, 1),
                nn.Dropout(0.3),
                nn.ReLU(),
                nn.Conv2d(mlp_dim, cluster_dim, 1),
            )
            self.score = nn.Sequential(
                nn.Conv2d(channels, mlp_dim, 1),
                nn.Dropout(0.3),
                nn.ReLU(),
                nn.Conv2d(mlp_dim, num_clusters, 1),
            )
            self.dust_bin = nn.Parameter(torch.tensor(1.3))

        def forward(self, features, token):
            f = self.cluster_features(features).flatten(2)
            p = torch.exp(matching_probs(torch, self.score(features).flatten(2), self.dust_bin))
            p = p[:, :-1, :]
            v = (f.unsqueeze(2) * p.unsqueeze(1)).sum(dim=-1)  # [B, cluster_dim, K]
            out = torch.cat(
                [F.normalize(self.token_features(token), dim=-1), F.normalize(v, dim=1).flatten(1)],
                -1,
            )
            return F.normalize(out, dim=-1)

    class MegaLoc(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = vit
            self.aggregator = nn.Module()
            self.aggregator.agg = Agg()
            self.aggregator.linear = nn.Linear(token_dim + num_clusters * cluster_dim, feat_dim)

        def forward(self, images):
            batch, _, height, width = images.shape
            tokens = self.backbone.norm(self.backbone(images))
            patches = (
                tokens[:, 1:].reshape(batch, height // 14, width // 14, -1).permute(0, 3, 1, 2)
            )
            out = self.aggregator.linear(self.aggregator.agg(patches, tokens[:, 0]))
            return F.normalize(out, dim=-1)

    torch.manual_seed(seed)
    model = MegaLoc().eval()
    del model.backbone.mask_token  # MegaLoc's own DINOv2 has none
    return model


# torchvision's VGG16 configuration ("M" = 2x2 max-pool); `features[:-2]` ends at conv5_3.
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# sare_tf's `tiny` backbone: (filters per block), two 3x3 convs each, pool after blocks 1-3.
TINY_FILTERS = (32, 64, 96, 128)


def build_vgg16_conv5_3(torch, config=VGG16_LAYERS):
    """`torchvision.models.vgg16().features[:-2]`: up to conv5_3, without its ReLU and pool
    (`config`: the channels and "M" pools, VGG16's by default; the tests use smaller ones)."""
    nn = torch.nn
    layers, channels = [], 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers[:-1])


def vgg16_trainable_from_conv5(torch, features) -> None:
    """Freezes everything before conv5_1, as pytorch-NetVlad's `--trainable` default does."""
    convs = [layer for layer in features if isinstance(layer, torch.nn.Conv2d)]
    for conv in convs[:10]:
        conv.requires_grad_(False)


def build_tiny(torch, group_norm_groups: int = 8, epsilon: float = 1e-3):
    """sare_tf's `tiny` backbone in torch: bias-free convs, GroupNorm (Keras' epsilon), ReLU;
    the last conv's norm has no offset (kept at zero, not trained), as in sare_tf."""
    nn = torch.nn
    layers, channels = [], 3
    for block, filters in enumerate(TINY_FILTERS, start=1):
        for conv in (1, 2):
            last = block == len(TINY_FILTERS) and conv == 2
            norm = nn.GroupNorm(group_norm_groups, filters, eps=epsilon)
            if last:
                norm.bias.requires_grad_(False)
            layers += [nn.Conv2d(channels, filters, 3, padding=1, bias=False), norm]
            if not last:
                layers.append(nn.ReLU(inplace=True))
            channels = filters
        if block < len(TINY_FILTERS):
            layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


def build_netvlad(torch, num_clusters: int, dim: int, seed: int = 0):
    """pytorch-NetVlad's `NetVLAD(num_clusters, dim, vladv2=False)` with random centroids."""
    nn, F = torch.nn, torch.nn.functional

    class NetVLAD(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_clusters = num_clusters
            self.conv = nn.Conv2d(dim, num_clusters, kernel_size=(1, 1), bias=False)
            self.centroids = nn.Parameter(torch.rand(num_clusters, dim))

        def forward(self, x):
            batch, channels = x.shape[:2]
            x = F.normalize(x, p=2, dim=1)
            soft_assign = F.softmax(self.conv(x).view(batch, self.num_clusters, -1), dim=1)
            x_flatten = x.view(batch, channels, -1)
            vlad = torch.zeros(
                [batch, self.num_clusters, channels], dtype=x.dtype, layout=x.layout,
                device=x.device,
            )  # fmt: skip
            for k in range(self.num_clusters):  # the authors' loop: memory over speed
                residual = x_flatten.unsqueeze(0).permute(1, 0, 2, 3) - self.centroids[
                    k : k + 1, :
                ].expand(x_flatten.size(-1), -1, -1).permute(1, 2, 0).unsqueeze(0)
                residual = residual * soft_assign[:, k : k + 1, :].unsqueeze(2)
                vlad[:, k : k + 1, :] = residual.sum(dim=-1)
            vlad = F.normalize(vlad, p=2, dim=2)
            return F.normalize(vlad.view(batch, -1), p=2, dim=1)

    torch.manual_seed(seed)
    module = NetVLAD()
    with torch.no_grad():
        centroids = F.normalize(torch.randn(num_clusters, dim), dim=1)
        module.centroids.copy_(centroids)
        module.conv.weight.copy_(10.0 * centroids[:, :, None, None])
    return module


def build_embedding(torch, backbone: str, num_clusters: int, seed: int = 0):
    """`(features, pool)` of backbone "vgg16" or "tiny" + NetVLAD(num_clusters), as
    `Sequential(features, pool)`'s two halves (channels_last is the caller's choice)."""
    torch.manual_seed(seed)
    if backbone == "vgg16":
        features, dim = build_vgg16_conv5_3(torch), 512
    elif backbone == "tiny":
        features, dim = build_tiny(torch), TINY_FILTERS[-1]
    else:
        raise ValueError(
            f"The PyTorch reference has backbones 'vgg16' and 'tiny'. Received: backbone={backbone!r}"
        )
    return features, build_netvlad(torch, num_clusters, dim, seed + 1)


def imagenet_normalize(torch, images_rgb255):
    """torchvision's ToTensor + ImageNet Normalize on NCHW RGB 0-255 float tensors."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255.0
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255.0
    return (images_rgb255 - mean) / std


def sare_joint_loss(torch, descriptors):
    """Joint Gaussian SARE of `[B, 2 + N, D]` (query, positive, negatives), mean over tuples:
    `log(1 + sum_i exp(|q-p|^2 - |q-n_i|^2))`, written as a logsumexp with a 0 for the 1."""
    query, positive, negatives = descriptors[:, :1], descriptors[:, 1:2], descriptors[:, 2:]
    d_positive = ((query - positive) ** 2).sum(-1)  # [B, 1]
    d_negatives = ((query - negatives) ** 2).sum(-1)  # [B, N]
    logits = torch.cat([torch.zeros_like(d_positive), d_positive - d_negatives], dim=1)
    return torch.logsumexp(logits, dim=1).mean()
