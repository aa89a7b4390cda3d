"""Content-addressed artifact store (weights, caches) under ``<state_dir>/artifacts``.

Writes go to a temporary name and are renamed into place, so a reader never sees a
partial file and a crash leaves at most an orphan temp file (docs/architecture.md, rule 4). Only
safetensors are stored: nothing read back can execute code (rule 6).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from service.settings import get_settings

__all__ = ["ArtifactStore", "StoredArtifact", "store"]


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact already written to the store: its content address and metadata."""

    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.safetensors"

    def put_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.path(sha256)
        if target.exists():
            return sha256
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return sha256

    def put_tensors(self, tensors: dict[str, torch.Tensor]) -> str:
        return self.put_bytes(serialize(tensors))

    def get_bytes(self, sha256: str) -> bytes:
        data = self.path(sha256).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise OSError(f"artifact {sha256} is corrupt")
        return data

    def get_tensors(self, sha256: str) -> dict[str, torch.Tensor]:
        return load(self.get_bytes(sha256))

    def delete(self, sha256: str) -> None:
        """Remove a file no row refers to any more (garbage collection); gone is fine."""
        self.path(sha256).unlink(missing_ok=True)


def serialize(tensors: dict[str, torch.Tensor]) -> bytes:
    return save({name: t.detach().cpu().contiguous() for name, t in sorted(tensors.items())})


def store() -> ArtifactStore:
    return ArtifactStore(get_settings().artifact_dir)
