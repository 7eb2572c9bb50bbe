"""Content-addressed cache for attribution results: a local directory, or any fsspec URL.

Keys come from :meth:`kqlib.attribution.AttributionConfig.key` (the only cache key: model fingerprint,
prompt, target token, method, steps, rule, site, baseline digest, cache version). Each entry is one file ``<root>/<key[:2]>/<key>.pt`` holding the key, the
parameters, the tensor and a sha256 of the tensor's bytes, and (since the adaptive rule) the attribution's
:class:`~kqlib.attribution.Diagnostics` as JSON with its own sha256 (older entries have none: read as None).
An entry that fails to load or whose digest does not match is reported, deleted and recomputed.

Where the cache lives: ``AttributionCache(root)`` with ``root`` a directory (default
``$KQLIB_CACHE/attributions``), a ``file://`` URL, or any URL fsspec can write to (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``memory://x``; the protocol's package must be installed: ``s3fs``, ``gcsfs``).
``storage_options`` are passed to the fsspec filesystem (for S3: ``endpoint_url``, ``key``, ``secret``; by
default the usual environment variables and config files are used).

Atomic writes. Locally (a path or ``file://``), an entry is written to a temporary file in the same folder,
fsynced and renamed into place, so an interrupted run leaves either a complete entry or none. On an object
store an entry is written as one whole object (a single PUT, or a multipart upload that becomes visible only
when it completes), which is atomic too. A process killed hard (SIGKILL) during a local write can leave a
``.tmp-*`` file: it is never read or counted as an entry and can be deleted at any time. Entries are content-keyed, so a retried or duplicated write stores
the same bytes under the same name: it changes nothing.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
import uuid
import warnings
from pathlib import Path

import torch

from kqlib.attribution.adaptive import Diagnostics
from kqlib.attribution.config import tensor_digest
from kqlib.core.models import cache_root
from kqlib.errors import KqError, MissingDependencyError


class CacheUnreachableError(KqError, OSError):
    """The cache URL cannot be read or written (wrong bucket, endpoint down, missing credentials)."""


class CacheWriteError(KqError, OSError):
    """A local cache entry could not be written (a full disk, no permission); nothing partial was left."""


def _write_failed(folder: Path, exc: OSError) -> CacheWriteError:

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = f"the disk holding the cache folder {folder} is full ({exc.strerror})"
        todo = "Free space there, or point KQLIB_CACHE at a disk with room"
    else:
        what = f"the cache folder {folder} cannot be written ({type(exc).__name__}: {exc.strerror or exc})"
        todo = "Fix its permissions, or point KQLIB_CACHE at a writable folder"
    err = CacheWriteError(f"{what}; no partial entry was left. {todo}, then rerun: every result written before "
                          "this one is kept and reused.")
    err.errno = exc.errno
    return err


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def default_dir() -> Path:
    return cache_root() / "attributions"


def _is_remote(root) -> bool:
    """A URL with a protocol other than ``file`` (``s3://``, ``gs://``, ``memory://``, ...)."""
    if isinstance(root, os.PathLike) or not isinstance(root, str) or "://" not in root:
        return False
    return root.split("://", 1)[0].lower() not in ("file", "local")


class AttributionCache:
    """``cache.get(key)`` -> tensor or None; ``cache.put(key, tensor, meta)`` (atomic).

    ``root``: a directory, a ``file://`` URL or an fsspec URL (see the module docstring). ``cache.url`` is
    the location as a string (a URL for remote caches, an absolute path otherwise). Picklable: a copy sent to
    another process (a Ray worker) reconnects on first use.
    """

    def __init__(self, root: str | os.PathLike | None = None, storage_options: dict | None = None):
        self.storage_options = dict(storage_options or {})
        self._fs = None
        if root is None:
            root = default_dir()
        if _is_remote(root):
            self.remote = True
            self.url = str(root).rstrip("/")
            self.root = None  # no local path
        else:
            self.remote = False
            text = os.fspath(root)
            if text.lower().startswith(("file://", "local://")):
                text = text.split("://", 1)[1]
            self.root = Path(text).expanduser().absolute()
            self.url = str(self.root)

    # --- remote plumbing ---------------------------------------------------------------------------
    @property
    def fs(self):
        """The fsspec filesystem of a remote cache (created lazily, so the object pickles)."""
        if self._fs is None:
            import fsspec  # heavy: fsspec, only for a remote cache (a URL)

            try:
                self._fs, self._base = fsspec.core.url_to_fs(self.url, **self.storage_options)
            except ImportError as exc:

                raise MissingDependencyError(
                    f"the cache URL {self.url!r} needs an fsspec backend that is not installed ({exc}); "
                    f"for s3:// install s3fs, for gs:// gcsfs") from exc
        return self._fs

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fs"] = None
        return state

    def _rpath(self, key: str) -> str:
        self.fs  # noqa: B018 (sets _base)
        return f"{self._base}/{key[:2]}/{key}.pt"

    def __repr__(self) -> str:
        return f"AttributionCache({self.url!r})"

    # --- API -----------------------------------------------------------------------------------------
    def path(self, key: str, suffix: str = ".pt") -> Path | str:
        """Where the entry of ``key`` lives: a :class:`Path` locally, a path inside the bucket remotely
        (``suffix`` ``.json`` for a record, :meth:`put_record`)."""
        if self.remote:
            return self._rpath(key)[: -len(".pt")] + suffix
        return self.root / key[:2] / f"{key}{suffix}"

    def _read(self, key: str, suffix: str = ".pt") -> bytes | None:
        if self.remote:
            try:
                return self.fs.cat_file(self.path(key, suffix))
            except FileNotFoundError:
                return None
        path = self.path(key, suffix)
        if not path.exists():
            return None
        return path.read_bytes()

    def _discard(self, key: str, suffix: str = ".pt") -> None:
        if self.remote:
            try:
                self.fs.rm_file(self.path(key, suffix))
            except FileNotFoundError:
                pass
        else:
            self.path(key, suffix).unlink(missing_ok=True)

    def get(self, key: str) -> torch.Tensor | None:
        entry = self.get_entry(key)
        return None if entry is None else entry[0]

    def get_entry(self, key: str) -> tuple[torch.Tensor, Diagnostics | None] | None:
        """``(scores, diagnostics)`` of ``key`` (diagnostics None for entries written without them), or None."""
        try:
            data = self._read(key)
        except FileNotFoundError:
            return None
        return self._decode_entry(key, data)

    def get_many(self, keys: list[str], chunk: int = 256) -> list[torch.Tensor | None]:
        """``[get(k) for k in keys]``; on an object store the reads of a chunk run concurrently."""
        if not self.remote:
            return [self.get(k) for k in keys]
        out = []
        for i in range(0, len(keys), chunk):
            part = keys[i:i + chunk]
            paths = [self._rpath(k) for k in part]
            got = self.fs.cat(paths, on_error="return")
            for k, p in zip(part, paths):
                data = got.get(p)
                if isinstance(data, FileNotFoundError) or data is None:
                    out.append(None)
                elif isinstance(data, BaseException):
                    raise data
                else:
                    out.append(self._decode(k, data))
        return out

    def _decode(self, key: str, data: bytes | None) -> torch.Tensor | None:
        entry = self._decode_entry(key, data)
        return None if entry is None else entry[0]

    def _decode_entry(self, key: str, data: bytes | None) -> tuple[torch.Tensor, Diagnostics | None] | None:
        if data is None:
            return None
        try:
            entry = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            scores = entry["scores"]
            if entry["key"] != key or tensor_digest(scores) != entry["digest"]:
                raise ValueError("key or digest mismatch")
            diag = entry.get("diagnostics")
            if diag is not None:
                if _text_digest(diag) != entry.get("diagnostics_digest"):
                    raise ValueError("diagnostics digest mismatch")
                diag = Diagnostics.from_json(diag)
            return scores, diag
        except Exception as exc:  # corrupt or truncated: never use it
            warnings.warn(f"kqlib: discarding corrupt cache entry {self.path(key)} ({exc}); recomputing",
                          stacklevel=3)
            self._discard(key)
            return None

    def put(self, key: str, scores: torch.Tensor, meta: dict | None = None,
            diagnostics: Diagnostics | None = None) -> None:
        scores = scores.detach().cpu().contiguous()
        entry = {"key": key, "scores": scores, "digest": tensor_digest(scores),
                 "meta": json.dumps(meta or {}, default=str)}
        if diagnostics is not None:
            text = diagnostics.to_json()
            entry.update(diagnostics=text, diagnostics_digest=_text_digest(text))
        buf = io.BytesIO()
        torch.save(entry, buf)
        self._write(key, buf.getvalue())

    def _write(self, key: str, data: bytes, suffix: str = ".pt") -> None:
        """Store ``data`` as the entry of ``key``, atomically (see the module docstring)."""
        if self.remote:
            # One whole object per entry: the object store makes it visible atomically.
            self.fs.pipe_file(self.path(key, suffix), data)
            return
        folder = self.path(key, suffix).parent
        tmp = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(key, suffix))
        except OSError as exc:  # a full disk, no permission: say which folder and what to do
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise _write_failed(folder, exc) from None
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise

    # --- records: JSON values under the same keys, layout, atomic writes and validation ---------------
    def put_record(self, key: str, record: dict) -> None:
        """Store a JSON-able ``record`` under ``key`` (``<key>.json``, with the key and a sha256 of the
        record's canonical JSON), atomically."""
        body = json.dumps(record, sort_keys=True, default=str)
        entry = {"key": key, "digest": hashlib.sha256(body.encode()).hexdigest(), "record": body}
        self._write(key, json.dumps(entry).encode(), suffix=".json")

    def get_record(self, key: str) -> dict | None:
        """The record stored under ``key``, or None; a damaged one (unreadable, other key, digest mismatch) is
        reported, deleted and treated as absent."""
        data = self._read(key, suffix=".json")
        if data is None:
            return None
        try:
            entry = json.loads(data)
            if entry["key"] != key or hashlib.sha256(entry["record"].encode()).hexdigest() != entry["digest"]:
                raise ValueError("key or digest mismatch")
            return json.loads(entry["record"])
        except Exception as exc:  # corrupt or truncated: never use it
            warnings.warn(f"kqlib: discarding corrupt cache record {self.path(key, '.json')} ({exc}); recomputing",
                          stacklevel=2)
            self._discard(key, suffix=".json")
            return None

    def check(self) -> None:
        """Write, read back and delete a probe entry; raise :class:`CacheUnreachableError` with the reason.

        Run before any work starts, so a wrong bucket, a dead endpoint or missing credentials is reported at
        once rather than after the first query.
        """
        probe = f".kqlib-probe-{uuid.uuid4().hex}"
        try:
            if self.remote:
                self.fs  # noqa: B018 (sets _base)
                path = f"{self._base}/{probe}"
                self.fs.pipe_file(path, b"ok")
                if self.fs.cat_file(path) != b"ok":
                    raise OSError("read back different bytes")
                self.fs.rm_file(path)
            else:
                self.root.mkdir(parents=True, exist_ok=True)
                path = self.root / probe
                path.write_bytes(b"ok")
                path.unlink()
        except KqError:
            raise
        except Exception as exc:
            raise CacheUnreachableError(
                f"the attribution cache {self.url!r} cannot be written ({type(exc).__name__}: {exc}). "
                f"Check the URL, that the bucket exists, the endpoint and the credentials "
                f"(storage_options or the usual environment variables).") from exc

    def __contains__(self, key: str) -> bool:
        if self.remote:
            return self.fs.exists(self._rpath(key))
        return self.path(key).exists()

    def keys(self) -> list[str]:
        if self.remote:
            self.fs  # noqa: B018
            try:
                names = [p.rsplit("/", 1)[-1] for p in self.fs.glob(f"{self._base}/*/*.pt")]
                return [n[:-3] for n in names if not n.startswith(".")]
            except FileNotFoundError:
                return []
        # complete entries only: not the ".tmp-*" files of writes in progress
        return [p.stem for p in self.root.glob("*/*.pt") if not p.name.startswith(".")] if self.root.exists() else []

    def __len__(self) -> int:
        return len(self.keys())
