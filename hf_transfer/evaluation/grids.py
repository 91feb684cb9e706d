"""Sample grids as PNG files."""

import os

import numpy as np
import torch
from PIL import Image


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, num_columns: int = 10, scale: int = 4) -> str:
    """Write `images` (shape `(n, 1 or 3, h, w)`, values in [-1, 1]) as one PNG grid, upscaled by `scale`.

    Images fill the grid row by row; sampling ten per class in class order with `num_columns=10`
    puts one class per column. The file is written under a temporary name and then renamed.
    """
    images = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    count, channels, height, width = images.shape
    num_rows = -(-count // num_columns)
    pad = 1
    canvas = np.full(
        (num_rows * (height + pad) + pad, num_columns * (width + pad) + pad, channels), 255, dtype=np.uint8
    )
    for index in range(count):
        row, column = divmod(index, num_columns)
        top, left = pad + row * (height + pad), pad + column * (width + pad)
        canvas[top : top + height, left : left + width] = images[index].permute(1, 2, 0).numpy()
    picture = Image.fromarray(canvas[..., 0] if channels == 1 else canvas)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = path + ".tmp.png"
    picture.save(temporary)
    os.replace(temporary, path)
    return path
