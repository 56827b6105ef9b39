"""The loader's fast paths give the same tensors as the plain ones (issue #12).

- JPEG/PNG decoding through TorchCodec equals Pillow's pixels; every case it does not take goes to Pillow.
- The chains with MONAI metadata tracking off (as the bundles run them) equal the chains with it on.
- Keeping a grey image as one channel until the end equals loading three channels first.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import CenterSpatialCropd, Compose, EnsureTyped, NormalizeIntensityd, RandFlipd
from PIL import Image

from pgnm_monai.data import io as image_io
from pgnm_monai.data import load_datalist
from pgnm_monai.data.utils import shared_data_dir
from pgnm_monai.transforms import (
    LoadMedicalImaged,
    RandResizedCropd,
    ResizeShortSided,
    ToChannels,
    eval_transforms,
    meta_tracking,
    train_transforms,
)


def _pil_pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Small grey/RGB JPEGs and PNGs, plus the kinds the fast path must leave to Pillow."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rgb = (rng.random((37, 53, 3)) * 255).astype(np.uint8)
    files = {}
    for name, im in {
        "grey": Image.fromarray(rgb[..., 0]),
        "rgb": Image.fromarray(rgb),
    }.items():
        for ext in ("jpg", "png"):
            files[f"{name}.{ext}"] = d / f"{name}.{ext}"
            im.save(files[f"{name}.{ext}"], quality=90) if ext == "jpg" else im.save(files[f"{name}.{ext}"])
    for name, im in {
        "palette.png": Image.fromarray(rgb).convert("P"),
        "rgba.png": Image.fromarray(np.dstack([rgb, rgb[..., :1]])),
        "grey16.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 200),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "bitmap.bmp": Image.fromarray(rgb),
    }.items():
        im.save(d / name)
        files[name] = d / name
    full = files["rgb.jpg"].read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 3])
    files["truncated.jpg"] = d / "truncated.jpg"
    return files


@pytest.mark.parametrize("name", ["grey.jpg", "grey.png", "rgb.jpg", "rgb.png"])
def test_fast_decode_equals_pillow(image_files, name):
    fast = image_io._decode_8bit(str(image_files[name]))
    assert fast is not None and fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, _pil_pixels(image_files[name]))


@pytest.mark.parametrize("name", ["palette.png", "rgba.png", "grey16.png", "cmyk.jpg", "bitmap.bmp", "truncated.jpg"])
def test_other_images_go_through_pillow(image_files, name):
    assert image_io._decode_8bit(str(image_files[name])) is None
    if name == "truncated.jpg":  # Pillow names the file
        with pytest.raises(ValueError, match="truncated.jpg"):
            image_io.read_image(str(image_files[name]))
    else:  # Pillow's pixels (converted to RGB where the mode needs it) over the type's full range
        out = image_io.read_image(str(image_files[name]))
        if name == "grey16.png":
            with Image.open(image_files[name]) as im:
                expected = np.asarray(im)[None].astype(np.float32) / 65535.0
        else:
            expected = np.moveaxis(_pil_pixels(image_files[name]), -1, 0).astype(np.float32) / 255.0
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, expected)


def test_fast_decode_equals_pillow_on_mednist():
    import io
    import tarfile

    tarball = shared_data_dir() / "mednist" / "MedNIST.tar.gz"
    if not tarball.exists():
        pytest.skip(f"MedNIST is not available at {tarball} (set PGNM_SHARED_DATA to the shared data folder)")
    with tarfile.open(tarball, "r:gz") as tar:
        members = [m for m in tar if m.isfile() and m.name.endswith(".jpeg")][::997][:40]
        blobs = [(m.name, tar.extractfile(m).read()) for m in members]
    assert len(blobs) >= 10
    for name, blob in blobs:
        fast = image_io.decode_jpeg(blob, mode="UNCHANGED")
        with Image.open(io.BytesIO(blob)) as im:
            np.testing.assert_array_equal(fast[0].numpy(), np.asarray(im), err_msg=name)


def _reference_chain(train: bool, size: int, channels: int) -> Compose:
    """The chains as they were before the fast path: three channels loaded first, metadata tracked."""
    load = LoadMedicalImaged("image", channels)
    if train:
        middle = [RandResizedCropd("image", size), RandFlipd(keys="image", prob=0.5, spatial_axis=1)]
    else:
        middle = [ResizeShortSided("image", round(size * 256 / 224)), CenterSpatialCropd("image", (size, size))]
    tail = [
        NormalizeIntensityd(keys="image", subtrahend=0.3162, divisor=0.3213),
        EnsureTyped(keys="image", data_type="tensor", dtype=torch.float32, track_meta=False),
    ]
    return Compose([load, *middle, *tail])


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("channels", [1, 3])
def test_chains_equal_the_reference_with_and_without_metadata(train, channels):
    items = load_datalist("embedded", split="train").items[:12]
    make = train_transforms if train else eval_transforms
    outputs = []
    for chain, tracked in (
        (_reference_chain(train, 32, channels), True),
        (make(image_size=32, channels=channels), True),
        (make(image_size=32, channels=channels), False),
    ):
        chain.set_random_state(seed=5)
        with meta_tracking(tracked):
            outputs.append([chain(dict(it))["image"] for it in items])
    for ref, tracked, untracked in zip(*outputs, strict=True):
        assert type(untracked) is torch.Tensor and untracked.shape == (channels, 32, 32)
        assert torch.equal(ref, tracked) and torch.equal(ref, untracked)


def test_meta_tracking_restores_the_previous_setting():
    assert get_track_meta()
    with pytest.raises(RuntimeError), meta_tracking(False):
        assert not get_track_meta()
        raise RuntimeError
    assert get_track_meta()
    set_track_meta(True)


def test_to_channels_matches_loading_with_channels(image_files):
    for name in ("grey.png", "rgb.png"):
        stored = torch.from_numpy(image_io.read_image(str(image_files[name])))
        for channels in (1, 3):
            expected = image_io.to_channels(stored.numpy(), channels)
            assert torch.equal(ToChannels(channels)(stored), torch.from_numpy(expected))
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        ToChannels(2)


def test_a_failed_bundle_run_restores_metadata_tracking(tmp_path):
    """The bundles switch MONAI's metadata tracking off at initialize; a run that fails after that restores it."""
    from pgnm_monai.experiments.runner import run_bundle

    with pytest.raises(ValueError, match="arm"):
        run_bundle("pgnm_pretrain", "train", bundle_root=str(tmp_path), arm="bogus", network="small", image_size=32)
    assert get_track_meta()


def test_to_channels_returns_a_contiguous_copy():
    grey = torch.rand(1, 5, 7)
    out = ToChannels(3)(grey)
    assert out.shape == (3, 5, 7) and out.is_contiguous() and torch.equal(out, grey.repeat(3, 1, 1))
    out[0] += 1.0  # each channel owns its memory: writing one changes neither the others nor the input
    assert torch.equal(out[1], grey[0]) and torch.equal(out[2], grey[0])


def test_integer_pixels_scale_as_the_plain_rule():
    """The unsigned fast path (one division, no clip) gives the bits of ``clip(astype(float32) / max, 0, 1)``."""
    rng = np.random.default_rng(1)
    for dtype, kind in ((np.uint8, "array"), (np.uint8, "natural"), (np.uint16, "natural"), (np.int16, "natural")):
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, size=(9, 11), endpoint=True).astype(dtype)
        arr.flat[:2] = (info.min, info.max)
        expected = np.clip(arr.astype(np.float32) / float(info.max), 0.0, 1.0)
        out = image_io.scale_intensity(arr, kind, "other")
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, expected, err_msg=f"{dtype.__name__} {kind}")


def test_resize_short_side_crop_box_follows_each_shape():
    """One transform fed images of changing shapes crops each one as a fresh transform does."""
    from pgnm_monai.transforms import ResizeShortSide

    shared = ResizeShortSide(20, crop_size=16)
    rng = torch.Generator().manual_seed(0)
    for shape in [(1, 30, 45), (1, 45, 30), (3, 30, 45), (1, 17, 17), (1, 30, 45)]:
        img = torch.rand(shape, generator=rng)
        expected = CenterSpatialCropd("image", (16, 16))({"image": ResizeShortSide(20)(img)})["image"]
        assert torch.equal(shared(img), expected)
