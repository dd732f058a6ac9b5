"""Reference parameter counts of the transformer hybrids (issue 21, part B).

UNETR: closed-form count of MONAI's `monai.networks.nets.UNETR` default
configuration (img_size 96^3, feature_size 16, hidden 768, mlp 3072,
12 heads, 12 layers, patch 16, conv_block and res_block on, qkv_bias off,
instance norm without affine parameters, transposed convolutions and 3x3
convolutions without bias), module by module as MONAI builds them.
No PyTorch was reachable when this was written (its CPU wheels' index is
not a registry this machine may use), so the count is computed here rather
than by instantiating MONAI (to do: replace by MONAI's own count). Writes crates/medseg-nets/tests/fixtures/zoo_tf_reference.json.
"""
import json
import pathlib


def unetr_count(in_c, out_c, img=96, nd=3, f=16, h=768, mlp=3072, layers=12, patch=16, res=True, qkv_bias=False):
    k3 = 3 ** nd
    tokens = (img // patch) ** nd
    vit = in_c * h * patch ** nd + h + tokens * h
    block = (h * mlp + mlp + mlp * h + h) + 4 * h + h * 3 * h + (3 * h if qkv_bias else 0) + h * h + h
    vit += layers * block + 2 * h

    def conv_block(cin, cout):
        n = cin * cout * k3 + cout * cout * k3
        if res and cin != cout:
            n += cin * cout
        return n

    def up(cin, cout):
        return cin * cout * 2 ** nd

    n = vit + conv_block(in_c, f)
    for cout, nl in [(2 * f, 2), (4 * f, 1), (8 * f, 0)]:
        n += up(h, cout) + nl * (up(cout, cout) + conv_block(cout, cout))
    for cin, cout in [(h, 8 * f), (8 * f, 4 * f), (4 * f, 2 * f), (2 * f, f)]:
        n += up(cin, cout) + conv_block(2 * cout, cout)
    n += f * out_c + out_c
    return n, vit


def main():
    total, vit = unetr_count(1, 14)
    # the UNETR paper reports 92.58M for BTCV (1 in, 14 classes); this
    # closed form gives 92.78M: unverified against an instantiated MONAI
    total2d, _ = unetr_count(1, 2, img=96, nd=2)
    ref = {
        "source": "closed form of monai.networks.nets.UNETR (MONAI 1.3 module layout)",
        "unetr_default": {
            "config": {"dimension": 3, "in_chns": 1, "class_num": 14},
            "num_parameters": total,
            "num_parameters_vit": vit,
        },
        "unetr_default_2d": {
            "config": {"dimension": 2, "in_chns": 1, "class_num": 2},
            "num_parameters": total2d,
        },
    }
    out = pathlib.Path(__file__).resolve().parents[1] / "crates/medseg-nets/tests/fixtures/zoo_tf_reference.json"
    out.write_text(json.dumps(ref, indent=2) + "\n")
    print(json.dumps(ref, indent=2))


if __name__ == "__main__":
    main()
