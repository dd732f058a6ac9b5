#!/usr/bin/env python3
"""Reference fixtures for the medseg-nets U^2-Net (crates/medseg-nets/src/u2net.rs)
and CS-Net (crates/medseg-nets/src/csnet.rs).

PyTorch transcriptions, with the references' module names so that state
dicts load by name:

* U^2-Net (Qin et al., "U^2-Net: Going Deeper with Nested U-Structure for
  Salient Object Detection", Pattern Recognition 2020): the authors' code,
  github.com/xuebinqin/U-2-Net, model/u2net.py (classes REBNCONV, RSU7, RSU6,
  RSU5, RSU4, RSU4F, U2NET, U2NETP), as JMedSeg's model/U2Net.py ports it.
  The RSU blocks are written once below, parameterised by their height
  (RSU-L: L-2 ceil-mode 2x2 poolings; RSU-4F: dilations 1, 2, 4, 8 instead);
  the module names (rebnconvin, rebnconv1..L, pool1..L-2, rebnconv{L-1}d..1d)
  are the authors'. Upsampling is F.interpolate(bilinear, align_corners=False)
  as the authors' F.upsample. JMedSeg's U2NET(in_ch=3, n_classes=2) returns
  the fused output d0 without sigmoid (the authors' returns sigmoid(d0..d6)
  with out_ch=1): here the forward returns the logits d0, and the six side
  outputs d1..d6 (upsampled to the input size) are kept for the tests.
  Widths are configurable (encoder_mid_chns, encoder_out_chns, decoder_mid_chns,
  decoder_out_chns; finest stage first; decoders listed stage1d..stage5d).
* CS-Net (Mou et al., "CS-Net: Channel and Spatial Attention Network for
  Curvilinear Structure Segmentation", MICCAI 2019): JMedSeg's model/CSNet.py,
  a port of the authors' github.com/iMED-Lab/CS-Net, model/csnet.py. As JMedSeg
  (and unlike the authors' forward, which adds input_feature + attention and
  leaves attention_fuse unused), the attention is fused by the 1x1 convolution
  attention_fuse on cat(input_feature, attention). Differences mirrored in the
  Rust network: logits (no final sigmoid), PyTorch's default initialisation
  (not Kaiming normal), configurable widths (feature_chns, default
  [32, 64, 128, 256, 512]).

Writes under crates/medseg-nets/tests/fixtures/:
  u2net_tiny.weights.safetensors / csnet_tiny.weights.safetensors
      randomised state dicts of tiny configurations (float16-representable
      values as F16)
  u2net_tiny.io.safetensors / csnet_tiny.io.safetensors
      `eval`, `train` (logits for the tiny input), `eval_odd` (eval logits of an
      odd-sized input), for U^2-Net also `eval_odd_side1..6` (its side outputs),
      and `after_train.<bn>.running_*`
  u2net_csnet_reference.json
      configs, input shapes, parameter counts (tiny and default)
The inputs are `pattern(shape)` (fixture_utils; exact in float16). The outputs
are computed in float64 (weights and inputs are exact in float16) and stored as
float32, so that they are the exact reference: train-mode BatchNorm over the
2x2 maps of the deepest levels amplifies float32 rounding to ~1e-4.

`ZOO` maps registry names to constructors of the zoo configurations
(configs/zoo/u2net.toml, u2netp.toml, csnet.toml); importing this module has
no side effects.

Run from the repository root with its virtual environment:
    .venv/bin/python tools/make_u2net_csnet_fixtures.py
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# U^2-Net
# ---------------------------------------------------------------------------
class REBNCONV(nn.Module):
    def __init__(self, in_ch=3, out_ch=3, dirate=1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=1 * dirate, dilation=1 * dirate)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


def _upsample_like(src, tar):
    return F.interpolate(src, size=tar.shape[2:], mode="bilinear", align_corners=False)


class RSU(nn.Module):
    """RSU-L (dilated=False: RSU7, RSU6, RSU5, RSU4) or RSU-4F (dilated=True,
    height 4), the authors' module names."""

    def __init__(self, height, in_ch, mid_ch, out_ch, dilated=False):
        super().__init__()
        self.height, self.dilated = height, dilated
        dil = (lambda i: 2 ** (i - 1)) if dilated else (lambda i: 2 if i == height else 1)
        self.rebnconvin = REBNCONV(in_ch, out_ch, dirate=1)
        for i in range(1, height + 1):
            setattr(self, f"rebnconv{i}", REBNCONV(out_ch if i == 1 else mid_ch, mid_ch, dirate=dil(i)))
            if not dilated and 1 <= i <= height - 2:
                setattr(self, f"pool{i}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
        for i in range(height - 1, 0, -1):
            setattr(self, f"rebnconv{i}d",
                    REBNCONV(mid_ch * 2, out_ch if i == 1 else mid_ch, dirate=dil(i) if dilated else 1))

    def forward(self, x):
        L = self.height
        hxin = self.rebnconvin(x)
        hs = [self.rebnconv1(hxin)]
        for i in range(2, L):
            h = hs[-1] if self.dilated else getattr(self, f"pool{i - 1}")(hs[-1])
            hs.append(getattr(self, f"rebnconv{i}")(h))
        top = getattr(self, f"rebnconv{L}")(hs[-1])
        d = getattr(self, f"rebnconv{L - 1}d")(torch.cat((top, hs[L - 2]), 1))
        for i in range(L - 2, 0, -1):
            up = d if self.dilated else _upsample_like(d, hs[i - 1])
            d = getattr(self, f"rebnconv{i}d")(torch.cat((up, hs[i - 1]), 1))
        return d + hxin


U2NET_WIDTHS = dict(encoder_mid_chns=[32, 32, 64, 128, 256, 256], encoder_out_chns=[64, 128, 256, 512, 512, 512],
                    decoder_mid_chns=[16, 32, 64, 128, 256], decoder_out_chns=[64, 64, 128, 256, 512])
U2NETP_WIDTHS = dict(encoder_mid_chns=[16] * 6, encoder_out_chns=[64] * 6,
                     decoder_mid_chns=[16] * 5, decoder_out_chns=[64] * 5)
HEIGHTS = [7, 6, 5, 4, 4, 4]  # stage1..6; stages 5 and 6 (and 5d) are RSU-4F


class U2NetRef(nn.Module):
    """U2NET / U2NETP with the authors' stage names; forward returns the fused
    logits d0 (with `return_sides`, also [d1..d6])."""

    def __init__(self, in_ch, n_classes, encoder_mid_chns, encoder_out_chns, decoder_mid_chns, decoder_out_chns):
        super().__init__()
        em, eo, dm, do = encoder_mid_chns, encoder_out_chns, decoder_mid_chns, decoder_out_chns
        cin = in_ch
        for s in range(1, 7):
            setattr(self, f"stage{s}", RSU(HEIGHTS[s - 1], cin, em[s - 1], eo[s - 1], dilated=s >= 5))
            if s < 6:
                setattr(self, f"pool{s}{s + 1}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            cin = eo[s - 1]
        below = eo[5]
        for s in range(5, 0, -1):
            setattr(self, f"stage{s}d", RSU(HEIGHTS[s - 1], below + eo[s - 1], dm[s - 1], do[s - 1], dilated=s == 5))
            below = do[s - 1]
        for s in range(1, 6):
            setattr(self, f"side{s}", nn.Conv2d(do[s - 1], n_classes, 3, padding=1))
        self.side6 = nn.Conv2d(eo[5], n_classes, 3, padding=1)
        self.outconv = nn.Conv2d(6 * n_classes, n_classes, 1)
        self.return_sides = False

    def forward(self, x):
        hx = x
        enc = []
        for s in range(1, 7):
            h = getattr(self, f"stage{s}")(hx)
            enc.append(h)
            if s < 6:
                hx = getattr(self, f"pool{s}{s + 1}")(h)
        d = enc[5]
        dec = {}
        for s in range(5, 0, -1):
            d = getattr(self, f"stage{s}d")(torch.cat((_upsample_like(d, enc[s - 1]), enc[s - 1]), 1))
            dec[s] = d
        d1 = self.side1(dec[1])
        sides = [d1] + [_upsample_like(getattr(self, f"side{s}")(dec[s]), d1) for s in range(2, 6)]
        sides.append(_upsample_like(self.side6(enc[5]), d1))
        d0 = self.outconv(torch.cat(sides, 1))
        return (d0, sides) if self.return_sides else d0


def u2net(in_ch, n_classes, small=False):
    return U2NetRef(in_ch, n_classes, **(U2NETP_WIDTHS if small else U2NET_WIDTHS))


# ---------------------------------------------------------------------------
# CS-Net
# ---------------------------------------------------------------------------
class ResEncoder(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=False)
        self.conv1x1 = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x):
        residual = self.conv1x1(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = out + residual
        return self.relu(out)


class Decoder(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True))

    def forward(self, x):
        return self.conv(x)


class SpatialAttentionBlock(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.query = nn.Sequential(nn.Conv2d(in_channels, in_channels // 8, kernel_size=(1, 3), padding=(0, 1)),
                                   nn.BatchNorm2d(in_channels // 8), nn.ReLU(inplace=True))
        self.key = nn.Sequential(nn.Conv2d(in_channels, in_channels // 8, kernel_size=(3, 1), padding=(1, 0)),
                                 nn.BatchNorm2d(in_channels // 8), nn.ReLU(inplace=True))
        self.value = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        B, C, H, W = x.size()
        proj_query = self.query(x).view(B, -1, W * H).permute(0, 2, 1)
        proj_key = self.key(x).view(B, -1, W * H)
        affinity = self.softmax(torch.matmul(proj_query, proj_key))
        proj_value = self.value(x).view(B, -1, H * W)
        weights = torch.matmul(proj_value, affinity.permute(0, 2, 1)).view(B, C, H, W)
        return self.gamma * weights + x


class ChannelAttentionBlock(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        B, C, H, W = x.size()
        proj_query = x.view(B, C, -1)
        proj_key = x.view(B, C, -1).permute(0, 2, 1)
        affinity = torch.matmul(proj_query, proj_key)
        affinity_new = torch.max(affinity, -1, keepdim=True)[0].expand_as(affinity) - affinity
        affinity_new = self.softmax(affinity_new)
        weights = torch.matmul(affinity_new, x.view(B, C, -1)).view(B, C, H, W)
        return self.gamma * weights + x


class AffinityAttention(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.sab = SpatialAttentionBlock(in_channels)
        self.cab = ChannelAttentionBlock(in_channels)

    def forward(self, x):
        return self.sab(x) + self.cab(x)


class CSNetRef(nn.Module):
    def __init__(self, classes, channels, feature_chns=(32, 64, 128, 256, 512)):
        super().__init__()
        f = feature_chns
        self.enc_input = ResEncoder(channels, f[0])
        self.encoder1 = ResEncoder(f[0], f[1])
        self.encoder2 = ResEncoder(f[1], f[2])
        self.encoder3 = ResEncoder(f[2], f[3])
        self.encoder4 = ResEncoder(f[3], f[4])
        self.downsample = nn.MaxPool2d(kernel_size=2, stride=2)
        self.affinity_attention = AffinityAttention(f[4])
        self.attention_fuse = nn.Conv2d(f[4] * 2, f[4], kernel_size=1)
        # each decoder takes the skip and the deconvolution's output (2 * f[k - 1]
        # channels: 512, 256, 128, 64 by default, the reference's in_channels)
        self.decoder4 = Decoder(2 * f[3], f[3])
        self.decoder3 = Decoder(2 * f[2], f[2])
        self.decoder2 = Decoder(2 * f[1], f[1])
        self.decoder1 = Decoder(2 * f[0], f[0])
        self.deconv4 = nn.ConvTranspose2d(f[4], f[3], kernel_size=2, stride=2)
        self.deconv3 = nn.ConvTranspose2d(f[3], f[2], kernel_size=2, stride=2)
        self.deconv2 = nn.ConvTranspose2d(f[2], f[1], kernel_size=2, stride=2)
        self.deconv1 = nn.ConvTranspose2d(f[1], f[0], kernel_size=2, stride=2)
        self.final = nn.Conv2d(f[0], classes, kernel_size=1)

    def forward(self, x):
        enc_input = self.enc_input(x)
        enc1 = self.encoder1(self.downsample(enc_input))
        enc2 = self.encoder2(self.downsample(enc1))
        enc3 = self.encoder3(self.downsample(enc2))
        input_feature = self.encoder4(self.downsample(enc3))
        attention = self.affinity_attention(input_feature)
        attention_fuse = self.attention_fuse(torch.cat((input_feature, attention), dim=1))
        dec4 = self.decoder4(torch.cat((enc3, self.deconv4(attention_fuse)), dim=1))
        dec3 = self.decoder3(torch.cat((enc2, self.deconv3(dec4)), dim=1))
        dec2 = self.decoder2(torch.cat((enc1, self.deconv2(dec3)), dim=1))
        dec1 = self.decoder1(torch.cat((enc_input, self.deconv1(dec2)), dim=1))
        return self.final(dec1)  # logits (the reference applies a sigmoid)


# The zoo configurations (configs/zoo/*.toml: defaults, in_chns = 1, class_num = 4).
ZOO = {
    "U2Net": lambda in_chns, class_num: u2net(in_chns, class_num),
    "U2NetP": lambda in_chns, class_num: u2net(in_chns, class_num, small=True),
    "CSNet": lambda in_chns, class_num: CSNetRef(class_num, in_chns),
}

U2_TINY = {"in_chns": 2, "class_num": 3, "encoder_mid_chns": [3, 4, 4, 4, 4, 4],
           "encoder_out_chns": [4, 6, 6, 8, 8, 8], "decoder_mid_chns": [3, 4, 4, 4, 4],
           "decoder_out_chns": [4, 4, 6, 6, 8]}
U2_SHAPE = [2, 2, 40, 36]  # every RSU level at least 2x2 (ceil-mode poolings of odd sizes)
U2_ODD = [1, 2, 37, 29]
CS_TINY = {"in_chns": 2, "class_num": 3, "feature_chns": [4, 8, 8, 16, 16]}
CS_SHAPE = [2, 2, 32, 48]
CS_ODD = [1, 2, 16, 80]  # another accepted size (multiples of 16)


def main():
    from fixture_utils import (OUT, calibrate, n_params, pattern, randomise, running_stats, save_json,
                               save_safetensors, state_dict_f16)
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2020)
    ref = {"torch_version": torch.__version__}

    # U^2-Net
    cfg = {k: v for k, v in U2_TINY.items() if k not in ("in_chns", "class_num")}
    net = U2NetRef(U2_TINY["in_chns"], U2_TINY["class_num"], **cfg)
    randomise(net, gen)
    x = torch.from_numpy(pattern(U2_SHAPE))
    calibrate(net, x)
    sd = state_dict_f16(net)
    net = net.double()  # exact reference (train-mode BatchNorm on 2x2 maps is ill-conditioned)
    net.return_sides = True
    net.eval()
    with torch.no_grad():
        y, _ = net(x.double())
        y_odd, sides = net(torch.from_numpy(pattern(U2_ODD)).double())
    io = {"eval": y.numpy(), "eval_odd": y_odd.numpy()}
    io.update({f"eval_odd_side{i + 1}": s.numpy() for i, s in enumerate(sides)})
    net.train()
    with torch.no_grad():
        yt, _ = net(x.double())
    io["train"] = yt.numpy()
    io.update(running_stats(net))
    save_safetensors(os.path.join(OUT, "u2net_tiny.weights.safetensors"), sd)
    save_safetensors(os.path.join(OUT, "u2net_tiny.io.safetensors"), io)
    print("u2net tiny", n_params(net), "params, max |eval|", float(y.abs().max()), "max |train|",
          float(yt.abs().max()), "max |eval - train|", float((y - yt).abs().max()))
    d_u2, d_u2p = u2net(3, 2), u2net(3, 2, small=True)
    a_u2, a_u2p = u2net(3, 1), u2net(3, 1, small=True)
    ref["u2net"] = {
        "reference": "xuebinqin/U-2-Net model/u2net.py (U2NET, U2NETP) as ported by JMedSeg model/U2Net.py; "
                     "fused logits d0, side outputs d1..d6",
        "tiny": {"config": U2_TINY, "input_shape": U2_SHAPE, "odd_input_shape": U2_ODD,
                 "num_parameters": n_params(net), "num_tensors": len(sd)},
        "default": {"config": {"in_chns": 3, "class_num": 2}, "num_parameters": n_params(d_u2),
                    "num_parameters_out_ch_1": n_params(a_u2)},
        "small_default": {"config": {"in_chns": 3, "class_num": 2}, "num_parameters": n_params(d_u2p),
                          "num_parameters_out_ch_1": n_params(a_u2p)},
    }
    print("U2NET(3, 2)", n_params(d_u2), "U2NET(3, 1)", n_params(a_u2),
          "U2NETP(3, 2)", n_params(d_u2p), "U2NETP(3, 1)", n_params(a_u2p))

    # CS-Net
    net = CSNetRef(CS_TINY["class_num"], CS_TINY["in_chns"], CS_TINY["feature_chns"])
    randomise(net, gen)
    x = torch.from_numpy(pattern(CS_SHAPE))
    calibrate(net, x)
    sd = state_dict_f16(net)
    net = net.double()  # exact reference
    net.eval()
    with torch.no_grad():
        y = net(x.double())
        y_odd = net(torch.from_numpy(pattern(CS_ODD)).double())
    io = {"eval": y.numpy(), "eval_odd": y_odd.numpy()}
    net.train()
    with torch.no_grad():
        yt = net(x.double())
    io["train"] = yt.numpy()
    io.update(running_stats(net))
    save_safetensors(os.path.join(OUT, "csnet_tiny.weights.safetensors"), sd)
    save_safetensors(os.path.join(OUT, "csnet_tiny.io.safetensors"), io)
    print("csnet tiny", n_params(net), "params, max |eval|", float(y.abs().max()), "max |train|",
          float(yt.abs().max()), "max |eval - train|", float((y - yt).abs().max()),
          "gammas", float(net.affinity_attention.sab.gamma.detach()), float(net.affinity_attention.cab.gamma.detach()))
    d_cs = CSNetRef(2, 3)
    ref["csnet"] = {
        "reference": "iMED-Lab/CS-Net model/csnet.py as ported by JMedSeg model/CSNet.py "
                     "(attention fused by attention_fuse); logits",
        "tiny": {"config": CS_TINY, "input_shape": CS_SHAPE, "odd_input_shape": CS_ODD,
                 "num_parameters": n_params(net), "num_tensors": len(sd)},
        "default": {"config": {"in_chns": 3, "class_num": 2}, "num_parameters": n_params(d_cs)},
    }
    print("CSNet(2, 3)", n_params(d_cs))
    save_json(os.path.join(OUT, "u2net_csnet_reference.json"), ref)


if __name__ == "__main__":
    main()
