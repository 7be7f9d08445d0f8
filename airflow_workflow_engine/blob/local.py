"""A blob store on a local or shared filesystem: one file per key under a root directory.

For a single machine (LocalExecutor, the demo) or a volume every worker mounts. Writes go to a
temporary file in the target directory and are renamed into place, so readers never see half
a blob and concurrent writers (threads or processes) of different keys do not interfere.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from airflow_workflow_engine.blob.errors import BlobStoreError, InvalidBlobKeyError
from airflow_workflow_engine.errors import BlobNotFoundError

__all__ = ["LocalBlobStore"]

#: In-flight writes are named ``<marker><uuid>`` next to their target; keys may not use it.
_TMP_MARKER = ".~blobtmp-"
#: How often a write re-creates its directory when a concurrent ``delete_prefix`` removed it.
_WRITE_ATTEMPTS = 5
#: Characters the filesystem would read as something other than part of one name.
_FORBIDDEN_CHARS = "\0\\:" if os.name == "nt" else "\0"
_CONFLICTS = (FileExistsError, NotADirectoryError, IsADirectoryError)


def _bad_segment(segment: str) -> str | None:
    """Why ``segment`` cannot be one name of a key's path, or ``None`` if it can."""
    if not segment:
        return "it has an empty segment"
    if segment in (".", ".."):
        return f"it has a {segment!r} segment"
    if segment.startswith(_TMP_MARKER):
        return f"names starting with {_TMP_MARKER!r} are reserved for in-flight writes"
    if any(ch in segment for ch in _FORBIDDEN_CHARS):
        return "it contains a character the filesystem does not allow in a name"
    return None


class LocalBlobStore:
    """Keys map to files under ``root`` (``a/b/c`` -> ``<root>/a/b/c``).

    Keys must be relative, '/'-separated paths without ``.``/``..``/empty segments, so every
    key stays inside ``root`` and ``list()`` gives back exactly the keys that were put. Unlike
    S3, a key cannot be both a blob and a "directory" of other keys (``a`` and ``a/b``).
    ``content_type`` is accepted and ignored. With ``fsync`` (the default) a ``put`` is on disk
    before it returns, at the cost of one fsync per write.
    """

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync

    def __repr__(self) -> str:
        return f"LocalBlobStore(root={str(self.root)!r})"

    # -- the BlobStore port --------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        del content_type
        path = self._path(key)
        try:
            self._write_atomically(path, data)
        except OSError as exc:
            raise self._error("put", key, exc) from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFoundError(key) from None
        except OSError as exc:
            raise self._error("get", key, exc) from exc

    def has(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            if path.is_dir():  # "a" while "a/b" exists: not a blob, so nothing to delete
                return
            raise self._error("delete", key, exc) from exc
        self._prune_empty_dirs(path.parent)

    def list(self, prefix: str = "") -> list[str]:
        dir_part = prefix.rpartition("/")[0]
        segments = dir_part.split("/") if dir_part else []
        if any(_bad_segment(s) for s in segments):
            return []  # no valid key starts with this prefix (and it must not escape root)
        base = self.root.joinpath(*segments)
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel = os.path.relpath(dirpath, self.root)
            rel_dir = "" if rel == os.curdir else rel.replace(os.sep, "/") + "/"
            # Only descend where keys can still start with the prefix.
            dirnames[:] = [
                d
                for d in dirnames
                if (rel_dir + d + "/").startswith(prefix) or prefix.startswith(rel_dir + d + "/")
            ]
            keys.extend(
                rel_dir + name
                for name in filenames
                if not name.startswith(_TMP_MARKER) and (rel_dir + name).startswith(prefix)
            )
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        parents: set[Path] = set()
        for key in self.list(prefix):
            path = self.root.joinpath(*key.split("/"))
            try:
                path.unlink()
            except FileNotFoundError:
                continue  # deleted concurrently: not ours to count
            except OSError as exc:
                raise self._error("delete", key, exc) from exc
            deleted += 1
            parents.add(path.parent)
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            self._prune_empty_dirs(parent)
        return deleted

    # -- helpers -------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        """The file of ``key``; raises :class:`InvalidBlobKeyError` for keys escaping ``root``."""
        if not key:
            raise InvalidBlobKeyError(key, "it is empty")
        if key.startswith("/") or os.path.isabs(key):
            raise InvalidBlobKeyError(key, "it is absolute")
        segments = key.split("/")
        for segment in segments:
            reason = _bad_segment(segment)
            if reason:
                raise InvalidBlobKeyError(key, reason)
        return self.root.joinpath(*segments)

    def _write_atomically(self, path: Path, data: bytes) -> None:
        """Writes a temporary file beside ``path`` and renames it over ``path``.

        The temporary file sits in the target directory so the rename never crosses
        filesystems, and so that directory is not empty (and not pruned) while it exists.
        """
        tmp = path.with_name(f"{_TMP_MARKER}{uuid.uuid4().hex}")
        fd = self._create_temp(tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self._fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    @staticmethod
    def _create_temp(tmp: Path) -> int:
        """Creates ``tmp`` (and its directory) exclusively; returns its file descriptor."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        attempt = 1
        while True:
            try:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                return os.open(tmp, flags, 0o666)
            except (FileNotFoundError, FileExistsError):
                # A concurrent delete_prefix pruned a directory between mkdir's own steps or
                # between mkdir and open; try again. A file standing where a directory must be
                # fails every attempt and is reported as a conflict.
                if attempt >= _WRITE_ATTEMPTS:
                    raise
                attempt += 1

    def _prune_empty_dirs(self, directory: Path) -> None:
        """Removes ``directory`` and its parents up to (not including) ``root`` while empty."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or already gone, or a writer just used it)
            directory = directory.parent

    def _error(self, operation: str, key: str, exc: OSError) -> BlobStoreError:
        conflict = isinstance(exc, _CONFLICTS)
        hint = (
            "On a local filesystem a key cannot be both a blob and a prefix of other keys "
            "(like 'a' and 'a/b'); rename one of them."
            if conflict
            else "Check that the directory exists, is writable and has free space."
        )
        return BlobStoreError(
            store=f"directory '{self.root}'",
            operation=operation,
            key=key,
            cause=f"{type(exc).__name__}: {exc.strerror or exc}",
            hint=hint,
            retryable=not conflict,
        )
