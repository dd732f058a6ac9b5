#!/usr/bin/env python3
"""Make the small NIfTI / PNG / JPEG / TIFF fixtures that medseg-io's tests
read, and record what nibabel, SimpleITK and Pillow report about them.

    .venv/bin/python tools/make_nifti_fixtures.py          # make fixtures + JSON
    .venv/bin/python tools/make_nifti_fixtures.py --check  # also convert each
        fixture with medseg (cargo run -p medseg-io --example nifti_roundtrip)
        and check in nibabel that the result has the same affine, codes and values

Output: crates/medseg-io/tests/fixtures/*.{nii,nii.gz,png,jpg,tif} and
reference.json. The JSON gives, per file, the array shape medseg should read
(channel-first [C, (D,) H, W]), the values in that array's C order (the
NIfTI file's Fortran order), nibabel's affine, zooms, qform/sform codes and
on-disk dtype, and for the SimpleITK file its spacing/origin/direction (LPS).
"""

import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "crates", "medseg-io", "tests", "fixtures")


def ensure(pkgs):
    missing = []
    for mod, pip in pkgs:
        try:
            __import__(mod)
        except ImportError:
            missing.append(pip)
    if missing:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *missing])


ensure([("numpy", "numpy"), ("nibabel", "nibabel"), ("SimpleITK", "SimpleITK"), ("PIL", "pillow")])

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from PIL import Image  # noqa: E402

rng = np.random.default_rng(20261121)


def rot(axis, t):
    c, s = np.cos(t), np.sin(t)
    r = np.eye(3)
    a, b = {0: (1, 2), 1: (2, 0), 2: (0, 1)}[axis]
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def affine_from(rotation, zooms, offset):
    a = np.eye(4)
    a[:3, :3] = rotation @ np.diag(zooms)
    a[:3, 3] = offset
    return a


def patch_scaling(path_nii, slope, inter):
    """Set scl_slope/scl_inter of an uncompressed little-endian NIfTI-1 file."""
    with open(path_nii, "r+b") as f:
        f.seek(112)
        f.write(struct.pack("<ff", slope, inter))


def gzip_file(src, dst):
    with open(src, "rb") as f, gzip.open(dst, "wb", compresslevel=6) as g:
        g.write(f.read())
    os.remove(src)


def nib_record(path, rgb=False):
    img = nib.load(path)
    hdr = img.header
    if rgb:
        raw = np.asanyarray(img.dataobj)
        planes = np.stack([raw["R"], raw["G"], raw["B"]], axis=-1).astype(np.float64)
        data = planes  # (i, j, k, 3): channel last, read as channel first
    else:
        data = img.get_fdata()
    shape = data.shape
    nx = shape[0]
    ny = shape[1] if len(shape) > 1 else 1
    nz = shape[2] if len(shape) > 2 else 1
    extra = int(np.prod(shape[3:])) if len(shape) > 3 else 1
    arr_shape = [extra, ny, nx] if nz == 1 else [extra, nz, ny, nx]
    values = data.reshape(nx, ny, nz, extra, order="F").flatten(order="F")
    return {
        "file": os.path.basename(path),
        "nibabel_shape": list(shape),
        "array_shape": arr_shape,
        "dtype": "rgb24" if rgb else str(hdr.get_data_dtype().newbyteorder("=")),
        "affine": img.affine.tolist(),
        "zooms": [float(z) for z in hdr.get_zooms()],
        "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]),
        "values": [float(v) for v in values],
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


def make_nifti():
    records = []

    def save(img, name, **kw):
        p = os.path.join(OUT, name)
        img.to_filename(p)
        records.append(nib_record(p, **kw))

    # big-endian int16, both forms set (nibabel default: sform aligned)
    d = rng.integers(-1000, 2000, size=(7, 6, 5)).astype(">i2")
    hdr = nib.Nifti1Header(endianness=">")
    hdr.set_data_dtype(">i2")
    img = nib.Nifti1Image(d, affine_from(np.eye(3), [0.8, 0.9, 2.5], [-10, 20, 30]), hdr)
    img.set_qform(img.affine, code=1)
    save(img, "be_int16.nii")
    assert open(os.path.join(OUT, "be_int16.nii"), "rb").read(4) == struct.pack(">i", 348)
    assert records[-1]["dtype"] == "int16"

    # scaled int16 (.nii.gz): raw ints with slope 0.5 and intercept -10
    d = rng.integers(-300, 300, size=(6, 5, 4)).astype(np.int16)
    img = nib.Nifti1Image(d, affine_from(np.eye(3), [1.0, 1.0, 3.0], [0, 0, 0]))
    tmp = os.path.join(OUT, "scaled_int16.nii")
    img.to_filename(tmp)
    patch_scaling(tmp, 0.5, -10.0)
    gzip_file(tmp, tmp + ".gz")
    records.append(nib_record(tmp + ".gz"))
    assert records[-1]["dtype"] == "int16"
    assert records[-1]["min"] < -10, "scaling was not applied by nibabel"

    # float64 with an sform only
    d = rng.normal(size=(5, 4, 3)) * 100
    a = affine_from(rot(2, 0.4), [1.5, 1.25, 4.0], [5.5, -3.25, 7.0])
    img = nib.Nifti1Image(d.astype(np.float64), a)
    img.set_qform(None, code=0)
    img.set_sform(a, code=2)
    save(img, "sform_only_f64.nii")

    # qform only, rotated, uint8
    d = rng.integers(0, 256, size=(6, 5, 4)).astype(np.uint8)
    a = affine_from(rot(0, -0.7) @ rot(2, 0.2), [0.7, 0.7, 1.8], [12.0, -8.0, 3.0])
    img = nib.Nifti1Image(d, None)
    img.set_qform(a, code=1)
    img.set_sform(None, code=0)
    save(img, "qform_only_u8.nii")

    # qform and sform disagree: the sform wins (sform_code > 0)
    d = rng.integers(0, 1000, size=(4, 4, 3)).astype(np.uint16)
    img = nib.Nifti1Image(d, None)
    img.set_qform(affine_from(np.eye(3), [2.0, 2.0, 2.0], [1, 2, 3]), code=1)
    img.set_sform(affine_from(rot(1, 0.3), [1.0, 1.1, 1.2], [-4, -5, -6]), code=1)
    save(img, "both_forms_u16.nii")

    # 4D float32, 3 time points -> channels
    d = rng.normal(size=(5, 4, 3, 3)).astype(np.float32)
    img = nib.Nifti1Image(d, affine_from(np.diag([-1.0, 1.0, 1.0]), [2.0, 2.0, 2.0], [30, -20, 10]))
    save(img, "four_d_f32.nii.gz")

    # a header extension (vox_offset beyond 352), int32
    d = rng.integers(-100000, 100000, size=(4, 3, 3)).astype(np.int32)
    img = nib.Nifti1Image(d, np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"medseg fixture: extension to skip " * 3))
    save(img, "extension_i32.nii")
    assert records[-1]["file"] == "extension_i32.nii"
    raw = open(os.path.join(OUT, "extension_i32.nii"), "rb").read()
    assert struct.unpack("<f", raw[108:112])[0] > 352 and raw[348] == 1, "no extension written"

    # NIfTI-2, int8 and uint32, oblique sform
    d = rng.integers(-128, 128, size=(5, 4, 3)).astype(np.int8)
    a = affine_from(rot(1, 0.25) @ rot(0, 0.1), [0.5, 0.6, 0.7], [1.0, 2.0, 3.0])
    save(nib.Nifti2Image(d, a), "nifti2_i8.nii")
    d = rng.integers(0, 70000, size=(3, 3, 2)).astype(np.uint32)
    save(nib.Nifti2Image(d, np.eye(4)), "nifti2_u32.nii.gz")

    # RGB24
    d = np.zeros((4, 3, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    for c in "RGB":
        d[c] = rng.integers(0, 256, size=d.shape)
    save(nib.Nifti1Image(d, np.eye(4)), "rgb24.nii", rgb=True)

    # 2D NIfTI (nz == 1) with a label-like uint8 content
    d = rng.integers(0, 4, size=(6, 5)).astype(np.uint8)
    save(nib.Nifti1Image(d, affine_from(np.eye(3), [0.5, 0.75, 1.0], [0, 0, 0])), "label_2d_u8.nii.gz")

    # non-integer label (bad label) and float data
    d = np.full((3, 3, 3), 1.5, dtype=np.float32)
    save(nib.Nifti1Image(d, np.eye(4)), "nonint_label_f32.nii")

    # SimpleITK: oblique int16 volume and a uint8 label
    arr = rng.integers(-500, 500, size=(4, 5, 6)).astype(np.int16)  # (z, y, x)
    im = sitk.GetImageFromArray(arr)
    im.SetSpacing((0.9, 1.1, 2.2))
    im.SetOrigin((-12.5, 40.0, 7.25))
    im.SetDirection(tuple((rot(2, 0.35) @ rot(0, -0.2)).flatten()))
    p = os.path.join(OUT, "sitk_oblique_i16.nii.gz")
    sitk.WriteImage(im, p)
    rec = nib_record(p)
    back = sitk.ReadImage(p)
    rec["sitk"] = {
        "spacing": list(back.GetSpacing()),
        "origin": list(back.GetOrigin()),
        "direction": list(back.GetDirection()),
        "values": [float(v) for v in sitk.GetArrayFromImage(back).flatten()],
    }
    records.append(rec)
    return records


def make_raster():
    records = []
    g8 = rng.integers(0, 256, size=(5, 7)).astype(np.uint8)
    g16 = rng.integers(0, 65536, size=(4, 6)).astype(np.uint16)
    rgb = rng.integers(0, 256, size=(4, 5, 3)).astype(np.uint8)
    lab = rng.integers(0, 5, size=(6, 4)).astype(np.uint8)
    Image.fromarray(g8).save(os.path.join(OUT, "grey8.png"))
    Image.fromarray(g16).save(os.path.join(OUT, "grey16.png"))
    Image.fromarray(rgb).save(os.path.join(OUT, "rgb.png"))
    Image.fromarray(lab).save(os.path.join(OUT, "label.png"))
    Image.fromarray(g8).save(os.path.join(OUT, "grey8.tif"))
    Image.fromarray(rgb).save(os.path.join(OUT, "rgb.tif"))
    smooth = (np.add.outer(np.arange(8) * 10, np.arange(8) * 5)).astype(np.uint8)
    Image.fromarray(smooth).save(os.path.join(OUT, "grey.jpg"), quality=100)
    for name in ["grey8.png", "grey16.png", "rgb.png", "label.png", "grey8.tif", "rgb.tif", "grey.jpg"]:
        a = np.asarray(Image.open(os.path.join(OUT, name))).astype(np.float64)
        if a.ndim == 2:
            a = a[None]
        else:
            a = np.moveaxis(a, -1, 0)
        records.append({"file": name, "array_shape": list(a.shape), "values": [float(v) for v in a.flatten()]})
    return records


def check_medseg_roundtrip(records):
    """Convert each NIfTI fixture with medseg and compare in nibabel."""
    cmd = ["cargo", "build", "-q", "-p", "medseg-io", "--example", "nifti_roundtrip"]
    subprocess.check_call(cmd, cwd=ROOT)
    exe = os.path.join(ROOT, "target", "debug", "examples", "nifti_roundtrip")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for rec in records:
            name = rec["file"]
            if not (name.endswith(".nii") or name.endswith(".nii.gz")) or name == "rgb24.nii":
                continue
            src = os.path.join(OUT, name)
            dst = os.path.join(tmp, "out_" + name)
            subprocess.check_call([exe, src, dst])
            a, b = nib.load(src), nib.load(dst)
            ok_aff = np.allclose(a.affine, b.affine, atol=1e-5)
            ok_codes = (int(a.header["qform_code"]), int(a.header["sform_code"])) == (
                int(b.header["qform_code"]),
                int(b.header["sform_code"]),
            )
            ok_q = np.allclose(a.header.get_qform(), b.header.get_qform(), atol=1e-5)
            ok_vals = np.allclose(a.get_fdata(), b.get_fdata().reshape(a.shape), atol=1e-5)
            ok_sitk = True
            try:
                sa, sb = sitk.ReadImage(src), sitk.ReadImage(dst)
                ok_sitk = np.allclose(sa.GetOrigin(), sb.GetOrigin(), atol=1e-4) and np.allclose(
                    sa.GetDirection(), sb.GetDirection(), atol=1e-5
                )
            except RuntimeError:
                pass  # SimpleITK refuses some of nibabel's test files (e.g. int8 NIfTI-2)
            ok = ok_aff and ok_codes and ok_q and ok_vals and ok_sitk
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name}: affine {ok_aff}, codes {ok_codes}, qform {ok_q}, values {ok_vals}, sitk {ok_sitk}")
            # without a reference header: both forms from medseg's geometry, codes 1
            fresh = os.path.join(tmp, "fresh_" + name)
            subprocess.check_call([exe, src, fresh, "--fresh"])
            c = nib.load(fresh)
            ok_f = (
                np.allclose(a.affine, c.affine, atol=1e-5)
                and np.allclose(c.header.get_qform(), c.affine, atol=1e-5)
                and (int(c.header["qform_code"]), int(c.header["sform_code"])) == (1, 1)
                and np.allclose(a.get_fdata(), c.get_fdata().reshape(a.shape), atol=1e-5)
            )
            failures += not ok_f
            print(f"{'ok  ' if ok_f else 'FAIL'} {name} written without reference: affine, qform == sform, values")
    print(f"medseg-written files checked in nibabel: {'all ok' if failures == 0 else f'{failures} failed'}")
    return failures == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="also check medseg-written files in nibabel")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    nifti = make_nifti()
    raster = make_raster()
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump({"nifti": nifti, "raster": raster, "nibabel": nib.__version__, "simpleitk": sitk.Version.VersionString()}, f, indent=1)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(nifti)} NIfTI and {len(raster)} raster fixtures to {OUT} ({total / 1024:.0f} KiB)")
    if args.check and not check_medseg_roundtrip(nifti):
        sys.exit(1)


if __name__ == "__main__":
    main()
