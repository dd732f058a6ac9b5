"""Reference fixtures of the transformer hybrids (UNETR) from MONAI itself.

Instantiates `monai.networks.nets.UNETR` (MONAI 1.6.1, PyTorch 2.x):

* the default configuration (3D, 96^3, feature_size 16, hidden 768,
  mlp 3072, 12 heads) with 1 input and 14 classes, and its 2D twin with 2
  classes: parameter counts (whole network and ViT);
* two small configurations (2D 32x32 and 3D 16^3) with randomised weights
  rounded to float16: the state dict, an input and MONAI's output, for the
  1e-4 parity test in crates/medseg-nets/tests/zoo_tf.rs.

Run with the project's development venv, which has torch and monai:

    .venv/bin/pip install torch monai einops && .venv/bin/python tools/make_zoo_tf_fixtures.py

Writes under crates/medseg-nets/tests/fixtures/: zoo_tf_reference.json,
unetr_tiny2d.{weights,io}.safetensors, unetr_tiny3d.{weights,io}.safetensors.
"""
import os

from fixture_utils import OUT, half, n_params, randomise, save_json, save_safetensors

import monai  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.networks.nets import UNETR  # noqa: E402


def pattern(shape):
    """((i * 7919) mod 1021 - 510) / 256, exact in float16."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.int64)
    return (((i * 7919) % 1021 - 510) / 256.0).astype(np.float32).reshape(shape)


def tiny(case, cfg, input_shape, seed):
    dims = cfg["dimension"]
    net = UNETR(
        in_channels=cfg["in_chns"],
        out_channels=cfg["class_num"],
        img_size=tuple(cfg["img_size"]),
        feature_size=cfg["feature_size"],
        hidden_size=cfg["hidden_size"],
        mlp_dim=cfg["mlp_dim"],
        num_heads=cfg["num_heads"],
        spatial_dims=dims,
    )
    gen = torch.Generator().manual_seed(seed)
    randomise(net, gen)
    net.eval()
    x = pattern(input_shape)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy()
    sd = {k: half(v.detach().numpy().copy()) for k, v in net.state_dict().items()}
    save_safetensors(os.path.join(OUT, f"{case}.weights.safetensors"), sd)
    save_safetensors(os.path.join(OUT, f"{case}.io.safetensors"), {"input": half(x), "eval": y})
    return {"config": cfg, "input_shape": list(input_shape), "num_parameters": n_params(net),
            "output_abs_max": float(np.abs(y).max())}


def main():
    torch.manual_seed(0)
    d3 = UNETR(1, 14, img_size=(96, 96, 96))
    d2 = UNETR(1, 2, img_size=(96, 96), spatial_dims=2)
    ref = {
        "source": f"monai.networks.nets.UNETR, MONAI {monai.__version__}, torch {torch.__version__}",
        "unetr_default": {
            "config": {"dimension": 3, "in_chns": 1, "class_num": 14},
            "num_parameters": n_params(d3),
            "num_parameters_vit": n_params(d3.vit),
        },
        "unetr_default_2d": {
            "config": {"dimension": 2, "in_chns": 1, "class_num": 2},
            "num_parameters": n_params(d2),
        },
        "unetr_tiny2d": tiny(
            "unetr_tiny2d",
            {"dimension": 2, "in_chns": 1, "class_num": 3, "img_size": [32, 32], "feature_size": 4,
             "hidden_size": 16, "mlp_dim": 8, "num_heads": 2},
            (2, 1, 32, 32), 1),
        "unetr_tiny3d": tiny(
            "unetr_tiny3d",
            {"dimension": 3, "in_chns": 2, "class_num": 2, "img_size": [16, 32, 16], "feature_size": 2,
             "hidden_size": 12, "mlp_dim": 6, "num_heads": 3},
            (1, 2, 16, 32, 16), 2),
    }
    save_json(os.path.join(OUT, "zoo_tf_reference.json"), ref, trailing_newline=True)
    print(ref)


# The zoo configuration (configs/zoo/unetr.toml) for tools/torch_zoo_bench.py.
ZOO = {"UNETR2D": lambda in_chns, class_num: UNETR(in_chns, class_num, img_size=(96, 96), spatial_dims=2)}


if __name__ == "__main__":
    main()
