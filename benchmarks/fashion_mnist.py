"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, never downloaded.

The package ships the four IDX files gzipped under ``/usr/share/datasets/fashion-mnist``;
torchvision's ``FashionMNIST`` class reads them uncompressed from
``<root>/FashionMNIST/raw``. ``ensure_fashion_mnist(root)`` decompresses them there once
and returns ``root``, ready for ``torchvision.datasets.FashionMNIST(root, download=False)``
or the ``torchvision`` dataset adapter (``{"kind": "torchvision", "name": "FashionMNIST"}``
with ``root`` as the data root).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["DEBIAN_DIR", "FILES", "ensure_fashion_mnist"]

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def ensure_fashion_mnist(root: Path, *, source: Path = DEBIAN_DIR) -> Path:
    """Decompress the package's files into ``root/FashionMNIST/raw`` (skips existing ones)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        target = raw / name
        if target.exists():
            continue
        packed = source / f"{name}.gz"
        if not packed.exists():
            raise FileNotFoundError(
                f"{packed} is missing; install the Debian package dataset-fashion-mnist"
            )
        # Decompress to a temporary name, then rename: an interrupted run leaves no
        # truncated file that a later run would take for a complete one.
        fd, temp = tempfile.mkstemp(dir=raw, prefix=f".{name}-")
        try:
            with gzip.open(packed, "rb") as src, os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.chmod(temp, 0o644)
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    return root
