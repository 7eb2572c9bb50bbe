"""Content-addressed on-disk cache for attribution results.

Key = sha256 of (model fingerprint, prompt, target token, method, parameters, baseline digest,
:data:`CACHE_VERSION`). Each entry is one file ``<root>/<key[:2]>/<key>.pt`` holding the key, the
parameters, the tensor and a sha256 of the tensor's bytes. Writes go to a temporary file in the same
folder and are renamed into place (atomic), so an interrupted run leaves either a complete entry or none.
An entry that fails to load or whose digest does not match is reported, deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from .models import cache_root

CACHE_VERSION = 1  # bump when the meaning of cached scores changes


def default_dir() -> Path:
    return cache_root() / "attributions"


def tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def make_key(**fields) -> str:
    fields = {**fields, "cache_version": CACHE_VERSION}
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


class AttributionCache:
    """``cache.get(key)`` -> tensor or None; ``cache.put(key, tensor, meta)`` (atomic)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_dir()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def get(self, key: str) -> torch.Tensor | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            scores = entry["scores"]
            if entry["key"] != key or tensor_digest(scores) != entry["digest"]:
                raise ValueError("key or digest mismatch")
            return scores
        except Exception as exc:  # corrupt or truncated: never use it
            warnings.warn(f"kqlib: discarding corrupt cache entry {path} ({exc}); recomputing", stacklevel=2)
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, scores: torch.Tensor, meta: dict | None = None) -> None:
        scores = scores.detach().cpu().contiguous()
        entry = {"key": key, "scores": scores, "digest": tensor_digest(scores),
                 "meta": json.dumps(meta or {}, default=str)}
        buf = io.BytesIO()
        torch.save(entry, buf)
        folder = self.path(key).parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.pt")) if self.root.exists() else 0
