"""Image files to arrays: the one pipeline shared by the ``folder`` loader and ``predict``.

A *preprocess* dict (stored on :class:`~cnnkit.data.dataset.Dataset` and, by the trainer, in
the model file) records how a data set's raw arrays relate to image files, so a user's image
goes through the same steps the training images went through:

``invert``      ``"never"``, ``"always"`` or ``"auto"``: the built-in sets have bright content
                on a dark background (digits, MNIST, shapes), and Fashion-MNIST too. With
                ``"auto"`` an image whose border is bright (mean of the outermost ring of
                pixels above 0.5 on the 0..1 scale) is inverted, so a digit drawn in black on
                white paper becomes white on black like the training data.
``fit``         ``"stretch"`` (resize the whole image) or ``"content"``: crop a square around
                the bright content (pixels above a tenth of the maximum, after inversion), centred
                on its bounding box, with ``margin`` (a fraction of the side) of background
                around it. The UCI digits fill their 8x8 box in height (every image has ink
                in its first and last row), MNIST digits sit in a 20x20 box inside 28x28
                (margin 4/28), Fashion-MNIST items fill the box (margin 0).
``native_size`` [H, W] the data set's own resolution, or null. The image is first reduced
                to it with ``resample`` (``"box"`` averages whole areas, which is what the
                digits' 4x4 block counting is) and only then resized to the model's input
                size with bilinear interpolation: the same path a data set loaded with
                ``size=`` took.
``pixel_max``   the raw scale: 0..255 pixels become ``value / 255 * pixel_max`` (16 for the
                digits, 1 for everything else).

Images with an alpha channel are composited over white first (a drawing on a transparent
canvas is dark ink on nothing; over white it becomes dark on light, which ``auto`` inverts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnkit.data.dataset import normalize
from cnnkit.data.names import check_name
from cnnkit.io import open_image

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

#: The neutral pipeline: no inversion, stretch to size, bilinear, 0..1 scale.
PLAIN: dict[str, Any] = {
    "invert": "never",
    "fit": "stretch",
    "margin": 0.0,
    "native_size": None,
    "resample": "bilinear",
    "pixel_max": 1.0,
}

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "La"}


def make_preprocess(**changes: Any) -> dict[str, Any]:
    """Return :data:`PLAIN` updated with ``changes`` (unknown keys are an error)."""
    unknown = set(changes) - set(PLAIN)
    if unknown:
        raise ValueError(f"unknown preprocess keys: {', '.join(sorted(unknown))}")
    out = dict(PLAIN)
    out.update(changes)
    return out


def builtin_preprocess(name: str) -> dict[str, Any]:
    """The image-file preprocessing of a data set (see :mod:`cnnkit.data.images`).

    ``digits``: invert when the border is bright, crop a square around the digit, box-average
    to 8x8, scale to 0..16. ``mnist``: same, digit in a 20x20 box inside 28x28, 0..1 scale.
    ``fashion-mnist``: same with the item filling 28x28. ``shapes``: invert when the border is
    bright, stretch to 32x32 (bars are placed anywhere, so no crop). ``folder``/``npz``: plain
    (no inversion, stretch, 0..1).
    """
    name = check_name(name)
    if name == "digits":
        return make_preprocess(
            invert="auto", fit="content", native_size=[8, 8], resample="box", pixel_max=16.0
        )
    if name == "mnist":
        return make_preprocess(
            invert="auto", fit="content", margin=4 / 28, native_size=[28, 28], resample="box"
        )
    if name == "fashion-mnist":
        return make_preprocess(invert="auto", fit="content", native_size=[28, 28], resample="box")
    if name == "shapes":
        return make_preprocess(invert="auto")
    return make_preprocess()


def _resample(name: str) -> int:
    from PIL import Image

    filters = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR}
    if name not in filters:
        raise ValueError(f"resample must be one of {', '.join(filters)}, got {name!r}")
    return filters[name]


def is_grayscale(image: PILImage) -> bool:
    """True when ``image`` has one colour channel, or three equal ones after RGB conversion."""
    if image.mode in _GRAY_MODES:
        return True
    rgb = np.asarray(flatten_alpha(image).convert("RGB"))
    return bool(
        np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    )


def flatten_alpha(image: PILImage) -> PILImage:
    """Composite an image with transparency over white; others are returned unchanged."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image


def image_to_array(image: PILImage, channels: int) -> np.ndarray:
    """Pixels of a pillow image as float32 (C, H, W) on the 0..1 scale (8-bit depth)."""
    if channels not in (1, 3):
        raise ValueError(f"images need 1 (grayscale) or 3 (RGB) channels, got {channels}")
    image = flatten_alpha(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F") and channels == 1:
        # 16-bit / float images: scale by the type's range rather than letting convert("L")
        # clip everything above 255 to white.
        raw = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I") and raw.max() > 255 else 255.0
        if image.mode == "F":
            top = 1.0 if raw.max() <= 1.0 else 255.0
        return np.clip(raw / top, 0.0, 1.0).astype(np.float32)[None]
    arr = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    return arr[None] if channels == 1 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def resize_channels(x: np.ndarray, size: tuple[int, int], resample: str) -> np.ndarray:
    """Resize each channel of float images (..., H, W) to ``size`` = (H, W) with pillow.

    Works in pillow's 32-bit float mode, so values are not rounded to 8 bits.
    """
    from PIL import Image

    height, width = int(size[0]), int(size[1])
    if x.shape[-2:] == (height, width):
        return np.asarray(x, dtype=np.float32)
    flt = _resample(resample)
    flat = np.asarray(x, dtype=np.float32).reshape(-1, *x.shape[-2:])
    out = np.empty((flat.shape[0], height, width), dtype=np.float32)
    for i, plane in enumerate(flat):
        out[i] = np.asarray(Image.fromarray(plane).resize((width, height), flt))
    return out.reshape(*x.shape[:-2], height, width)


def border_mean(x: np.ndarray) -> float:
    """Mean of the outermost ring of pixels of (C, H, W) images (all channels)."""
    ring = np.concatenate(
        [x[:, 0, :].ravel(), x[:, -1, :].ravel(), x[:, 1:-1, 0].ravel(), x[:, 1:-1, -1].ravel()]
    )
    return float(ring.mean())


def fit_content(x: np.ndarray, margin: float) -> np.ndarray:
    """Crop (C, H, W) images to a square around their bright content, padding with 0.

    The content is every pixel whose channel mean exceeds a tenth of the image's maximum
    (low enough to keep the faint outer strokes of a digit, high enough to ignore paper
    texture and JPEG noise once the background is dark); the
    square's side is ``max(h, w) / (1 - 2 * margin)`` for a ``h x w`` bounding box and it is
    centred on the box. An image without content is returned unchanged.
    """
    gray = x.mean(axis=0)
    peak = float(gray.max())
    if peak <= 0:
        return x
    content = gray > 0.1 * peak
    rows = np.flatnonzero(content.any(axis=1))
    cols = np.flatnonzero(content.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(bottom - top, right - left) / (1.0 - 2.0 * margin)
    side = max(int(round(side)), 1)
    row0 = int(round((top + bottom - side) / 2))
    col0 = int(round((left + right - side) / 2))
    out = np.zeros((x.shape[0], side, side), dtype=np.float32)
    # intersection of the square with the image, in both coordinate systems
    r_lo, r_hi = max(row0, 0), min(row0 + side, x.shape[1])
    c_lo, c_hi = max(col0, 0), min(col0 + side, x.shape[2])
    out[:, r_lo - row0 : r_hi - row0, c_lo - col0 : c_hi - col0] = x[:, r_lo:r_hi, c_lo:c_hi]
    return out


def image_to_raw(
    image: PILImage, input_shape: tuple[int, int, int], preprocess: Mapping[str, Any] | None = None
) -> np.ndarray:
    """Turn an open pillow image into a raw (C, H, W) float32 array on a data set's scale.

    The steps, in order: composite over white, grayscale or RGB, 0..1 scale, inversion,
    content fit, reduction to ``native_size``, resize to (H, W), times ``pixel_max``.
    """
    prep = make_preprocess(**dict(preprocess or {}))
    channels, height, width = (int(v) for v in input_shape)
    x = image_to_array(image, channels)
    invert = prep["invert"]
    if invert not in ("never", "always", "auto"):
        raise ValueError(f"invert must be never, always or auto, got {invert!r}")
    if invert == "always" or (invert == "auto" and border_mean(x) > 0.5):
        x = 1.0 - x
    if prep["fit"] == "content":
        x = fit_content(x, float(prep["margin"]))
    elif prep["fit"] != "stretch":
        raise ValueError(f"fit must be stretch or content, got {prep['fit']!r}")
    if prep["native_size"] is not None:
        x = resize_channels(x, tuple(prep["native_size"]), prep["resample"])
        x = resize_channels(x, (height, width), "bilinear")
    else:
        x = resize_channels(x, (height, width), prep["resample"])
    return (x * np.float32(prep["pixel_max"])).astype(np.float32)


def image_file_to_raw(
    path: str | os.PathLike[str],
    input_shape: tuple[int, int, int],
    preprocess: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Read an image file as a raw (C, H, W) float32 array on a data set's pixel scale.

    This is :func:`load_image_for_model` without the normalisation; the ``folder`` loader
    runs the same :func:`image_to_raw` on every training image, so both share one pipeline.
    """
    return image_to_raw(open_image(path), input_shape, preprocess)


def load_image_for_model(
    path: str | os.PathLike[str],
    input_shape: tuple[int, int, int],
    mean: np.ndarray,
    std: np.ndarray,
    *,
    preprocess: Mapping[str, Any] | str | None = None,
) -> np.ndarray:
    """Load an image file and preprocess it exactly as a data set's training images were.

    Parameters
    ----------
    path : path-like
        Any image pillow reads (PNG, JPEG, BMP, GIF, TIFF, ...).
    input_shape : (C, H, W)
        The model's input: C = 1 converts to grayscale (ITU-R 601 luma, pillow's ``"L"``),
        C = 3 to RGB; the image is resized to H x W.
    mean, std : array_like
        The per-channel statistics stored with the model (``Dataset.mean``/``Dataset.std``).
    preprocess : dict or str, optional
        ``Dataset.preprocess`` as stored with the model, or the name of a built-in data set
        (``"digits"``, ``"mnist"``, ``"fashion-mnist"``, ``"shapes"``). Without it the plain
        pipeline is used (no inversion, stretch to size, 0..1 scale), which is what the
        ``folder`` loader does. See the module docstring for every step.

    Returns
    -------
    numpy.ndarray
        float32, shape (1, C, H, W), ready for the model's forward pass.

    Notes
    -----
    For the digits the result is ``(v - mean) / std`` with ``v = 16 * box_average(ink)`` on
    the 8x8 grid, ``ink`` being the 0..1 grayscale image, inverted when its border is bright
    and cropped to a square around the digit; that mirrors how the UCI images were made
    (count of "on" pixels in each 4x4 block of a size-normalised 32x32 bitmap).
    """
    if isinstance(preprocess, str):
        preprocess = builtin_preprocess(preprocess)
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) of positive ints, got {input_shape!r}")
    raw = image_file_to_raw(path, shape, preprocess)
    return normalize(raw[None], mean, std)
