"""Image folders: one sub-folder per class, every image resized to one size."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnkit import memory
from cnnkit.data.images import PLAIN, image_to_raw, is_grayscale, open_image
from cnnkit.errors import ParameterError


def load_folder_raw(
    data_dir: str | os.PathLike[str] | None,
    size: tuple[int, int] = (32, 32),
    channels: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read ``data_dir/<class>/<image>`` into raw float32 (N, C, H, W) images on 0..1.

    Parameters
    ----------
    data_dir : path-like
        The folder whose sub-folders are the classes, in sorted name order (class index
        ``k`` is the ``k``-th name). Files directly inside ``data_dir`` (a README, a
        licence) and names starting with ``.`` (``.DS_Store``) are ignored; every other
        file inside a class folder must be an image pillow can read.
    size : (H, W)
        Every image is resized to this with bilinear interpolation (aspect ratio not kept).
    channels : {1, 3}, optional
        Force grayscale or RGB. By default the images decide: 1 channel when every image is
        grayscale (a one-channel mode, or RGB whose three channels are equal everywhere),
        otherwise 3 and grayscale images are repeated over R, G, B.

    Returns
    -------
    x, y, class_names
    """
    if data_dir is None:
        raise ParameterError(
            "folder needs data_dir: a folder with one sub-folder per class", "data_dir"
        )
    base = Path(data_dir)
    if not base.is_dir():
        raise ValueError(f"folder: {base} is not a folder")
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(
            f"folder: {base} has no class sub-folders (expected {base}/<class>/<image>)"
        )
    images, labels = [], []
    decoded = 0
    for index, cls in enumerate(classes):
        files = sorted(
            p for p in (base / cls).iterdir() if p.is_file() and not p.name.startswith(".")
        )
        if not files:
            raise ValueError(f"folder: class folder {base / cls} has no images")
        for path in files:
            image = open_image(path)
            decoded += image.width * image.height * len(image.getbands())
            memory.check(
                decoded, f"folder: {len(images) + 1:,} decoded images", "use fewer or smaller ones"
            )
            images.append(image)
            labels.append(index)
    if channels is None:
        channels = 1 if all(is_grayscale(im) for im in images) else 3
    elif int(channels) not in (1, 3):
        raise ValueError(f"folder: channels must be 1 or 3, got {channels}")
    shape = (int(channels), int(size[0]), int(size[1]))
    x = np.stack([image_to_raw(im, shape, PLAIN) for im in images])
    return x, np.asarray(labels, dtype=np.int64), classes
