"""Fetching dataset files: checksummed downloads and archive extraction that stays in its folder.

A download goes to a temporary file next to its destination, its checksum is verified, and
only then is it renamed into place, so a destination path holds either nothing or the whole,
verified file. Archives are extracted member by member after checking that no member would
land outside the target folder (absolute paths, ``..``, links, devices are refused).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tailmix._validation import ParameterError, check_number

__all__ = [
    "ChecksumError",
    "DatasetError",
    "DatasetNotFoundError",
    "DownloadError",
    "download_file",
    "extract_archive",
    "file_digest",
    "verify_checksum",
]

_CHUNK = 1 << 20
_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "md5": re.compile(r"[0-9a-f]{32}")}
_SCHEMES = ("http", "https", "ftp", "file")


class DatasetError(ValueError):
    """A dataset's files are missing, malformed or inconsistent."""


class ChecksumError(DatasetError):
    """A file's checksum differs from the expected one."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset's files are not where they were looked for (also a ``FileNotFoundError``)."""


class DownloadError(DatasetError, ConnectionError):
    """A dataset file could not be downloaded (also a ``ConnectionError``)."""


#: What reading a damaged or cut-short archive raises (besides ``OSError`` without an errno,
#: which bz2 raises for bad data and gzip for a bad CRC).
ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError,
                  gzip.BadGzipFile)


def is_damaged_archive(error: BaseException) -> bool:
    """Whether ``error`` says an archive's bytes are bad (not that a disk or file failed)."""
    return isinstance(error, ARCHIVE_ERRORS) or (
        type(error) is OSError and error.errno is None)


def _check_digests(sha256: str | None, md5: str | None) -> dict[str, str]:
    """Return ``{algorithm: lower-case hex digest}`` for the digests that were given."""
    digests = {}
    for name, value in (("sha256", sha256), ("md5", md5)):
        if value is None:
            continue
        expected = f"a hex string of {64 if name == 'sha256' else 32} characters or None"
        if not isinstance(value, str) or not _HEX[name].fullmatch(value.lower()):
            raise ParameterError(name, expected, value)
        digests[name] = value.lower()
    return digests


def _check_path(name: str, value: object) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise ParameterError(name, "a str or os.PathLike path", value)
    return Path(value).expanduser()


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Return the hex digest of a file's bytes, read in chunks.

    Parameters
    ----------
    path:
        The file to hash.
    algorithm:
        ``"sha256"`` or ``"md5"``.

    Returns
    -------
    str
        The lower-case hex digest.
    """
    if algorithm not in _HEX:
        raise ParameterError("algorithm", "one of 'sha256', 'md5'", algorithm)
    path = _check_path("path", path)
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(
    path: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None
) -> None:
    """Check a file against the given digests.

    Parameters
    ----------
    path:
        The file to check.
    sha256, md5:
        Expected hex digests; at least one must be given.

    Raises
    ------
    ChecksumError
        If a digest differs; the message names the file, the expected and the actual digest.
    FileNotFoundError
        If the file does not exist.
    """
    digests = _check_digests(sha256, md5)
    if not digests:
        raise ParameterError("sha256 or md5", "a hex digest to verify against", None)
    path = _check_path("path", path)
    if not path.is_file():
        raise FileNotFoundError(f"Cannot verify the checksum of {str(path)!r}: no such file.")
    for algorithm, expected in digests.items():
        actual = file_digest(path, algorithm)
        if actual != expected:
            raise ChecksumError(
                f"The {algorithm} checksum of {str(path)!r} is {actual}, expected {expected}: "
                "the file is corrupt or not the expected one; delete it and try again."
            )


def _matches(path: Path, digests: dict[str, str]) -> bool:
    return all(file_digest(path, a) == d for a, d in digests.items())


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, verifying its checksum.

    If ``dest`` already exists and matches the given digests (or no digest is given), it is
    kept and nothing is downloaded; a file that does not match is replaced.

    Parameters
    ----------
    url:
        An ``http``, ``https``, ``ftp`` or ``file`` URL.
    dest:
        The file to write; its folder is created if needed.
    sha256, md5:
        Expected hex digests of the file (optional, but recommended).
    timeout:
        Seconds to wait for the server before giving up.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    ChecksumError
        If the downloaded bytes do not match; nothing is left at ``dest``.
    DownloadError
        If the URL cannot be read (a ``ConnectionError`` and a
        :class:`DatasetError`): the message names the URL and where to put the file by hand.
    """
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in _SCHEMES:
        raise ParameterError("url", "a URL with scheme " + ", ".join(_SCHEMES), url)
    dest = _check_path("dest", dest)
    digests = _check_digests(sha256, md5)
    timeout = check_number("timeout", timeout, low=0, low_open=True)
    if dest.is_file() and _matches(dest, digests):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    hashes = {a: hashlib.new(a) for a in digests}
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        for h in hashes.values():
                            h.update(chunk)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
                raise DownloadError(
                    f"Could not download {url} to {str(dest)!r}: {error}. Without network "
                    f"access, fetch the file by other means and place it at {str(dest)!r}."
                ) from error
            out.flush()
            os.fsync(out.fileno())
        for algorithm, h in hashes.items():
            if h.hexdigest() != digests[algorithm]:
                raise ChecksumError(
                    f"The file downloaded from {url} has {algorithm} {h.hexdigest()}, expected "
                    f"{digests[algorithm]}: the download is corrupt or the file has changed."
                )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _safe_member_name(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name)
    drive = re.match(r"[A-Za-z]:", name)
    if path.is_absolute() or ".." in path.parts or name.startswith(("/", "\\")) or drive:
        raise DatasetError(
            f"Refusing to extract {str(archive)!r}: member {name!r} would land outside the "
            "target folder."
        )
    return path


def _move_into(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, merging folders that already exist there."""
    if src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _move_into(child, dst / child.name)
    else:
        os.replace(src, dst)


def _extract_into(archive: Path, staging: Path) -> None:
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _safe_member_name(member.name, archive)
                if not (member.isfile() or member.isdir()):
                    raise DatasetError(
                        f"Refusing to extract {str(archive)!r}: member {member.name!r} is "
                        "a link or special file."
                    )
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:  # pragma: no cover - Python versions without extraction filters
                tar.extractall(staging, members=members)
        return
    if not zipfile.is_zipfile(archive):
        raise DatasetError(f"{str(archive)!r} is neither a tar nor a zip archive.")
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            _safe_member_name(name, archive)
        zf.extractall(staging)


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a ``.tar``, ``.tar.gz``/``.tgz`` or ``.zip`` archive into ``dest``, safely.

    Every member is checked before anything is written: absolute names, names with ``..``,
    links and special files are refused. Members are extracted into a temporary folder inside
    ``dest`` and then moved into place, so an interrupted extraction leaves no half-written
    files under their final names.

    Parameters
    ----------
    archive:
        The archive file.
    dest:
        The folder to extract into (created if needed).

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DatasetError
        For an unsafe member, a file that is no archive, or a damaged or cut-short archive
        (naming it); :class:`DatasetNotFoundError` when ``archive`` does not exist.
    """
    archive = _check_path("archive", archive)
    dest = _check_path("dest", dest)
    if not archive.is_file():
        raise DatasetNotFoundError(f"Cannot extract {str(archive)!r}: no such file.")
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        try:
            _extract_into(archive, staging)
        except (*ARCHIVE_ERRORS, OSError) as error:
            if not is_damaged_archive(error):
                raise
            raise DatasetError(
                f"Cannot extract {str(archive)!r}: the archive is damaged or cut short "
                f"({error.__class__.__name__}: {error}). Delete it and download it again."
            ) from error
        for child in staging.iterdir():
            _move_into(child, dest / child.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
