"""Small datasets of one's own under a data root, made from sklearn's digits: PNG files, a
CSV or Parquet manifest naming them, tabular manifests, and an image-folder tree."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

__all__ = ["digit_pixels", "write_pngs", "write_csv", "write_parquet", "write_tree", "SIZE"]

SIZE = 80  # samples in each generated set


def digit_pixels(count: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 8, 8), labels (N,)) of the first ``count`` digits."""
    digits = load_digits()
    return (digits.images[:count] * 16).clip(0, 255).astype(np.uint8), digits.target[:count]


def write_pngs(root: Path, folder: str = "img", count: int = SIZE) -> list[dict[str, object]]:
    """PNG files ``<folder>/<i>.png``; the manifest rows naming them (key, label, path)."""
    images, labels = digit_pixels(count)
    (root / folder).mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).save(root / folder / f"{i}.png")
        rows.append({"key": f"digit-{i:03d}", "label": int(label), "path": f"{folder}/{i}.png"})
    return rows


def tabular_rows(count: int = SIZE) -> list[dict[str, object]]:
    """Rows of 64 pixel features each (key, label, f0..f63)."""
    images, labels = digit_pixels(count)
    return [
        {"key": f"row-{i:03d}", "label": int(label)}
        | {f"f{j}": float(v) / 255 for j, v in enumerate(image.ravel())}
        for i, (image, label) in enumerate(zip(images, labels, strict=True))
    ]


def write_csv(path: Path, rows: list[dict[str, object]], header: list[str] | None = None) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        names = header or list(rows[0])
        writer.writerow(names)
        for row in rows:
            writer.writerow([row.get(name, "") for name in names])


def write_parquet(path: Path, rows: list[dict[str, object]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def write_tree(root: Path, folder: str = "tree", count: int = SIZE) -> list[str]:
    """``<folder>/<digit>/<i>.png`` (one folder per class); the keys (paths in the tree)."""
    images, labels = digit_pixels(count)
    keys = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / folder / str(label) / f"{i:03d}.png")
        keys.append(f"{label}/{i:03d}.png")
    return keys
