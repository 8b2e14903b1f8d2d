"""Official dataset downloads: resumable, retried, verified, safely extracted.

``download("isic2019", "data")`` fetches the ISIC challenge files into ``data/isic2019/`` in the
layout :mod:`lesionlib.datasets` reads. Every file is checked against its known size and SHA-256;
where no hash is published, the hash of the first download is recorded in a ``<file>.sha256``
sidecar and every later run re-verifies the file against it. The sidecar also records the file's
size and modification time when it was verified: a later run trusts a file that still has both
without reading it again (a 9 GB zip on Google Drive), and re-hashes it after any change. Free
space is checked before anything is written. Archives are extracted with :func:`safe_extract`,
which refuses unsafe members and never leaves a half-extracted folder that looks complete. Only
the standard library (``urllib``) and tqdm are used.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import stat
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from lesionlib import __version__

__all__ = [
    "COLAB_DRIVE_ROOT",
    "DATASETS",
    "DownloadError",
    "ManualDownloadRequired",
    "RemoteFile",
    "colab_drive_dir",
    "colab_download",
    "colab_drive_path",
    "download",
    "download_file",
    "safe_extract",
]


class DownloadError(RuntimeError):
    """A download, verification or extraction failed; the message names the file and the fix."""


class ManualDownloadRequired(DownloadError):
    """The dataset has no stable direct link: the message lists the manual steps."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset.

    ``url`` is ``base_url + name``; ``base_url=None`` means there is no stable direct link (the
    file must be fetched by hand, or from a mirror given to :func:`download`). ``size`` (bytes)
    and ``sha256`` are None when not known. ``extract``: a zip to unpack. ``target``: sub-folder
    of the dataset root where the file is placed (or the archive extracted).
    """

    name: str
    base_url: str | None
    size: int | None = None
    sha256: str | None = None
    extract: bool = False
    target: str = ""

    @property
    def url(self) -> str | None:
        """The download address, or None when there is no direct link."""
        return None if self.base_url is None else self.base_url + self.name


ISIC_BUCKET = "https://isic-challenge-data.s3.amazonaws.com/"

# Sizes and hashes are filled in only where checked against the official file; the others are
# recorded on first download (``<file>.sha256``) and re-verified afterwards. Never guess them.
DATASETS: dict[str, list[RemoteFile]] = {
    "isic2019": [
        RemoteFile("ISIC_2019_Training_Input.zip", ISIC_BUCKET + "2019/", extract=True),
        RemoteFile("ISIC_2019_Training_GroundTruth.csv", ISIC_BUCKET + "2019/"),
        RemoteFile("ISIC_2019_Training_Metadata.csv", ISIC_BUCKET + "2019/"),
    ],
    "isic2016": [
        RemoteFile("ISBI2016_ISIC_Part3_Training_Data.zip", ISIC_BUCKET + "2016/", extract=True),
        RemoteFile(
            "ISBI2016_ISIC_Part3_Training_GroundTruth.csv",
            ISIC_BUCKET + "2016/",
            size=19419,
            sha256="0ffadd63b7cec650cddfbe5df54d1d3167453fe6004c2bbf05824184b0c4d405",
        ),
        RemoteFile("ISBI2016_ISIC_Part3_Test_Data.zip", ISIC_BUCKET + "2016/", extract=True),
        RemoteFile("ISBI2016_ISIC_Part3_Test_GroundTruth.csv", ISIC_BUCKET + "2016/"),
    ],
    "ham10000": [
        RemoteFile("HAM10000_images_part_1.zip", None, extract=True),
        RemoteFile("HAM10000_images_part_2.zip", None, extract=True),
        RemoteFile("HAM10000_metadata.csv", None),
    ],
}
"""Dataset name -> its files. Extracted layouts match :mod:`lesionlib.datasets`' readers."""

_ISIC_CLI = "or the ISIC command-line tool: pip install isic-cli (see data/README.md)"
_HELP = {
    "isic2019": f"Current links: https://challenge.isic-archive.com/data/#2019, {_ISIC_CLI}.",
    "isic2016": f"Current links: https://challenge.isic-archive.com/data/#2016, {_ISIC_CLI}.",
    "ham10000": "Official page: https://doi.org/10.7910/DVN/DBW86T (see data/README.md).",
}
"""Where to look when a dataset's download fails, appended to the error message."""

_MANUAL_STEPS = {
    "ham10000": """\
HAM10000 has no stable direct download link: its official copy is on the Harvard Dataverse
(doi:10.7910/DVN/DBW86T), whose file links go through the Dataverse API and are not guaranteed to
stay the same, so lesionlib does not hard-code them. To get it by hand:
  1. open https://doi.org/10.7910/DVN/DBW86T and read its terms of use (CC BY-NC 4.0);
  2. download HAM10000_images_part_1.zip, HAM10000_images_part_2.zip and HAM10000_metadata
     (the metadata in its original comma-separated format);
  3. put them in {store} named exactly HAM10000_images_part_1.zip, HAM10000_images_part_2.zip
     and HAM10000_metadata.csv;
  4. run the same command again (python -m lesionlib download ham10000 --to {to}): it records
     their SHA-256 and extracts them into {root}.
Missing now: {missing}.
Alternatives: the ISIC 2019 training set (python -m lesionlib download isic2019) contains the
HAM10000 images; or the ISIC command-line tool: pip install isic-cli; isic collection list (note
the HAM10000 collection id); isic image download --collections <id> <folder> (its metadata.csv
uses ISIC Archive column names, not those of HAM10000_metadata.csv).""",
}
"""Manual steps for datasets whose files have no direct link (``base_url=None``)."""

COLAB_DRIVE_ROOT = Path("/content/drive/MyDrive")
"""Where Google Drive appears on Colab after ``google.colab.drive.mount('/content/drive')``."""


def colab_drive_dir(subfolder: str = "lesion-course", mount: bool = False) -> Path | None:
    """``COLAB_DRIVE_ROOT/subfolder`` (created) when Google Drive is mounted, else None.

    ``mount=True`` first mounts Drive on Colab (Colab asks for access once). When that is refused
    or fails, or outside Colab, it says so and returns None: downloads then stay on the runtime's
    own disk, which a runtime reset empties.
    """
    if mount and not COLAB_DRIVE_ROOT.is_dir():
        try:
            from google.colab import drive  # only on Colab

            drive.mount(str(COLAB_DRIVE_ROOT.parent))
        except Exception as err:  # refused access, a timeout, not on Colab: go on without it
            print(
                f"Google Drive not mounted ({type(err).__name__}: {err}): files are kept on this "
                "runtime's disk only and are lost when it resets."
            )
    if not COLAB_DRIVE_ROOT.is_dir():
        return None
    path = COLAB_DRIVE_ROOT / subfolder
    path.mkdir(parents=True, exist_ok=True)
    return path


class _TransientError(Exception):
    """A network failure worth retrying (connection error, 5xx, incomplete transfer)."""


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp(path: Path) -> tuple[int, int]:
    """``(size, st_mtime_ns)``: what changes when a file is written to."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _read_sidecar(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """The hash in ``path``'s sidecar and the ``(size, mtime)`` recorded with it (None if absent).

    A sidecar of an older lesionlib holds only the hash: the file is then re-hashed once.
    """
    sidecar = _sidecar(path)
    text = sidecar.read_text() if sidecar.is_file() else ""
    words = text.split()
    stamp = re.search(r"^# verified: size=(\d+) mtime_ns=(\d+)$", text, re.MULTILINE)
    return (
        words[0].lower() if words else None,
        (int(stamp[1]), int(stamp[2])) if stamp else None,
    )


def _write_sidecar(path: Path, digest: str) -> None:
    """Record ``path``'s verified hash with its size and mtime now.

    The first line is ``sha256sum -c``'s format; the second is a comment, which it skips.
    """
    size, mtime_ns = _stamp(path)
    sidecar = _sidecar(path)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(f"{digest}  {path.name}\n# verified: size={size} mtime_ns={mtime_ns}\n")
    os.replace(tmp, sidecar)


def _on_drive(path: Path) -> bool:
    return path.resolve().is_relative_to(COLAB_DRIVE_ROOT.resolve())


def _check_space(folder: Path, needed: int, what: str) -> None:
    """Raise :class:`DownloadError`, with the fix, when ``folder``'s disk has under ``needed``.

    ``folder`` need not exist yet: the disk of its nearest existing parent is asked.
    """
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if needed > free:
        detail = f"it needs {_bytes(needed)} in {folder}, and that disk has {_bytes(free)} free"
        raise _no_space(folder, what, detail)


def _no_space(folder: Path, what: str, detail: str) -> DownloadError:
    """The message for a full disk: which folder, the amounts (``detail``) and what to do."""
    if _on_drive(folder):
        fix = (
            "Free space in your Google Drive (https://drive.google.com/drive/quota; the free tier "
            "holds 15 GB), or pass keep_on_drive=False (download: no drive_dir / --drive-dir) to "
            "keep the archive on the runtime's own disk instead."
        )
    else:
        fix = (
            "Delete files there, or pick a folder on a bigger disk (download(..., to=...) / --to)."
        )
    return DownloadError(f"Not enough disk space to {what}: {detail}. {fix}")


def _bytes(n: int) -> str:
    return tqdm.format_sizeof(n, "B", 1024)


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
"""``OSError.errno`` values of a full disk (or a used-up quota, as on a network drive)."""


def _sha256(path: Path, progress: bool) -> str:
    """SHA-256 of a file, read in 1 MiB blocks, with a progress bar for big files."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with (
        path.open("rb") as f,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"verifying {path.name}",
            disable=not progress or size < 64 << 20,
        ) as bar,
    ):
        while block := f.read(1 << 20):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _manual_command(url: str, dest: Path) -> str:
    return (
        f"Download it by hand and put it at {dest}, then run again (the file will be verified):\n"
        f"  curl -L -C - -o '{dest}' '{url}'"
    )


def _verify_existing(dest: Path, sha256: str | None, size: int | None, progress: bool) -> None:
    """Check a file already at ``dest`` against ``sha256``, else against its sidecar.

    A file verified before and unchanged since (the sidecar holds the expected hash and the
    file's current size and mtime) is not read again. Otherwise it is hashed, and the sidecar
    (re)written once the hash matches or when no hash is known yet.
    """
    actual_size = dest.stat().st_size
    if size is not None and actual_size != size:
        raise DownloadError(
            f"{dest} has {actual_size} bytes but {size} were expected: it is incomplete or a "
            "different version. Delete it and run again to download it afresh."
        )
    sidecar = _sidecar(dest)
    recorded, stamp = _read_sidecar(dest)
    expected = sha256.lower() if sha256 else recorded
    if expected is not None and recorded == expected and stamp == _stamp(dest):
        return  # verified before, unchanged since
    actual = _sha256(dest, progress)
    if expected is None or actual == expected:
        _write_sidecar(dest, actual)
    else:
        source = "the known hash" if sha256 else f"the hash recorded at download ({sidecar})"
        raise DownloadError(
            f"{dest} does not match {source}:\n  expected sha256 {expected}\n"
            f"  actual   sha256 {actual}\nIt is corrupt or was changed. Delete it "
            f"(and {sidecar.name} if present) and run again to download it afresh."
        )


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` of a ``Content-Range`` header (``bytes a-b/n`` or ``bytes */n``)."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (value or "").strip())
    if match is None:
        return None, None
    start, total = match.groups()
    return (
        int(start) if start is not None else None,
        int(total) if total not in (None, "*") else None,
    )


def _fetch(
    url: str,
    part: Path,
    *,
    size: int | None,
    timeout: float,
    progress: bool,
    chunk_size: int,
    desc: str,
) -> None:
    """One attempt: append to ``part`` from its current size (Range), or restart from zero.

    Before the first byte is written, the disk must have room for what is still to come (from
    ``Content-Length``, else ``size``); a full disk raises :class:`DownloadError`, and ``part``
    is kept for the next run to resume.
    """
    offset = kept = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"lesionlib/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total == offset:
                return  # the .part already holds the whole file
            part.unlink()
            raise _TransientError(f"HTTP 416 for a {offset}-byte partial file") from exc
        if exc.code >= 500 or exc.code in (408, 429):
            raise _TransientError(f"HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(
            f"Downloading {url} failed: HTTP {exc.code} {exc.reason}. The server refused the "
            f"file, so retrying will not help (the link may have moved).\n"
            f"{_manual_command(url, part.with_name(part.name.removesuffix('.part')))}"
        ) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _TransientError(str(exc)) from exc

    with response:
        length = response.headers.get("Content-Length")
        if response.status == 206:
            start, _ = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _TransientError(f"server resumed at byte {start}, not {offset}")
            mode = "ab"
        else:  # 200: the server ignored Range (or none was sent): start from zero
            offset, mode = 0, "wb"
        total = offset + int(length) if length is not None else size
        if total is not None:
            _check_space(part.parent, total - kept, f"download {desc}")
        received = offset
        try:
            with (
                part.open(mode) as f,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=desc,
                    disable=not progress,
                ) as bar,
            ):
                while True:
                    try:
                        chunk = response.read(chunk_size)
                    except (http.client.HTTPException, OSError) as exc:
                        raise _TransientError(
                            f"connection lost after {received} bytes: {exc}"
                        ) from exc
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            written = part.stat().st_size if part.exists() else 0
            raise _no_space(
                part.parent,
                f"download {desc}",
                f"{part.parent} became full after {_bytes(written)} were written "
                f"({exc.strerror}). The partial file {part} was kept: once there is room, run "
                "again to resume it",
            ) from exc
    if total is not None and received < total:
        raise _TransientError(f"connection closed after {received} of {total} bytes")


def download_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60,
    progress: bool = True,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest``, resumably, and verify it; returns ``dest``.

    Bytes go to ``dest + '.part'``; an existing ``.part`` is resumed with an HTTP Range request
    (a server that ignores Range makes it restart from zero). Connection errors, 5xx answers and
    incomplete transfers are retried ``retries`` times with exponential back-off
    (``backoff * 2**attempt`` seconds). The result is checked against ``size`` and ``sha256``
    before being moved to ``dest``; the hash is recorded in ``dest.sha256`` with the file's size
    and mtime, and later calls verify against it (``sha256`` when given). A file already at
    ``dest`` is not downloaded again; it is re-hashed only when its size or mtime changed since it
    was verified. Free space is checked before writing (from ``size`` or the server's
    ``Content-Length``). A 4xx answer, a checksum mismatch or a full disk raises
    :class:`DownloadError` (a corrupt download is deleted, never left at ``dest``; a partial one
    cut by a full disk is kept to be resumed).
    """
    dest = Path(dest).expanduser()
    if dest.exists():
        _verify_existing(dest, sha256, size, progress)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if size is not None and part.exists() and part.stat().st_size > size:
        part.unlink()
    for attempt in range(retries + 1):
        if size is not None and part.exists() and part.stat().st_size == size:
            break  # complete from an earlier run: only verification is left
        try:
            _fetch(
                url,
                part,
                size=size,
                timeout=timeout,
                progress=progress,
                chunk_size=chunk_size,
                desc=dest.name,
            )
            break
        except _TransientError as exc:
            if attempt == retries:
                kept = f"The partial file {part} was kept: run again to resume, or\n"
                raise DownloadError(
                    f"Downloading {url} failed after {retries + 1} attempts: {exc}.\n"
                    f"{kept if part.exists() else ''}{_manual_command(url, dest)}"
                ) from exc
            delay = backoff * 2**attempt
            if progress:
                tqdm.write(f"{dest.name}: {exc}; retrying in {delay:g} s")
            time.sleep(delay)

    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise DownloadError(
            f"{dest.name}: downloaded {actual_size} bytes from {url} but {size} were expected. "
            "The download was deleted (nothing was written to "
            f"{dest}); run again, and if it fails again the file on the server has changed."
        )
    actual = _sha256(part, progress)
    if sha256 is not None and actual != sha256.lower():
        part.unlink()
        raise DownloadError(
            f"{dest.name}: checksum mismatch for {url}\n  expected sha256 {sha256}\n"
            f"  actual   sha256 {actual}\nThe corrupt download was deleted (nothing was written "
            f"to {dest}). Run again; if it fails again the file on the server differs from the "
            "one lesionlib knows."
        )
    os.replace(part, dest)
    _write_sidecar(dest, actual)
    return dest


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member may not be extracted (absolute path, ``..``, symlink), or None."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "a '..' component"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return None


def _bad_zip(archive: Path) -> DownloadError:
    return DownloadError(
        f"{archive} is not a valid zip file (corrupt or incomplete download). "
        "Delete it and run again to download it afresh."
    )


def _move_merge(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; folders that already exist are merged, files replaced."""
    if dst.is_dir() and src.is_dir():
        for child in src.iterdir():
            _move_merge(child, dst / child.name)
        src.rmdir()
    else:
        os.replace(src, dst)


def safe_extract(archive: str | Path, target: str | Path) -> list[Path]:
    """Extract a zip into ``target`` safely; returns the extracted files.

    The whole archive is refused, before anything is written, if a member has an absolute path,
    a ``..`` component or is a symbolic link, or if the disk lacks the space it needs. Members
    are extracted into a temporary folder inside ``target`` and then moved, and a marker file
    ``target/.extracted-<archive name>`` is written last: a second call is a no-op, and an
    interrupted extraction is redone rather than mistaken for a complete one.
    """
    archive, target = Path(archive), Path(target)
    marker = target / f".extracted-{archive.name}"
    if marker.is_file():
        return [target / line for line in marker.read_text().splitlines() if line]
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise _bad_zip(archive) from exc
    with zf:
        infos = zf.infolist()
        for info in infos:
            reason = _unsafe_reason(info)
            if reason is not None:
                raise DownloadError(
                    f"Refusing to extract {archive}: member {info.filename!r} has {reason}. "
                    "Nothing was extracted; this is not a genuine dataset archive: delete it "
                    "and download it again from the official source."
                )
        what = f"extract {archive}"
        _check_space(target, sum(info.file_size for info in infos), what)
        target.mkdir(parents=True, exist_ok=True)
        staging = target / f".extracting-{archive.name}"
        if staging.exists():
            shutil.rmtree(staging)  # left by an interrupted run
        staging.mkdir()
        try:
            zf.extractall(staging)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            shutil.rmtree(staging)
            raise _bad_zip(archive) from exc
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            shutil.rmtree(staging)
            raise _no_space(target, what, f"{target} became full ({exc.strerror})") from exc
    for child in list(staging.iterdir()):
        _move_merge(child, target / child.name)
    staging.rmdir()
    files = [info.filename for info in infos if not info.is_dir()]
    tmp_marker = marker.with_name(marker.name + ".tmp")
    tmp_marker.write_text("".join(f"{name}\n" for name in files))
    os.replace(tmp_marker, marker)
    return [target / name for name in files]


def download(
    dataset: str,
    to: str | Path,
    *,
    drive_dir: str | Path | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> Path:
    """Download and extract a dataset into ``to/<dataset>``; returns that folder (the root).

    The root has the layout the matching reader of :mod:`lesionlib.datasets` expects. With
    ``drive_dir`` (e.g. :func:`colab_drive_dir`), downloaded files are kept in
    ``drive_dir/<dataset>`` (so they survive a Colab reset and are reused) and extracted to
    ``to``. ``base_url`` replaces the official address prefix (a mirror holding the same file
    names). Files that have no direct link must already be in the download folder, else
    :class:`ManualDownloadRequired` lists the steps.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    files = DATASETS[dataset]
    if base_url is not None:
        files = [replace(f, base_url=base_url.rstrip("/") + "/") for f in files]
    root = Path(to).expanduser() / dataset
    store = Path(drive_dir).expanduser() / dataset if drive_dir is not None else root
    missing = [f.name for f in files if f.url is None and not (store / f.target / f.name).exists()]
    if missing:
        raise ManualDownloadRequired(
            _MANUAL_STEPS[dataset].format(store=store, to=to, root=root, missing=", ".join(missing))
        )
    for f in files:
        stored = store / f.target / f.name
        try:
            if f.url is None:
                _verify_existing(stored, f.sha256, f.size, progress)
            else:
                download_file(f.url, stored, sha256=f.sha256, size=f.size, progress=progress)
        except DownloadError as exc:
            raise DownloadError(f"{exc}\n{_HELP[dataset]}") from exc
        if f.extract:
            safe_extract(stored, root / f.target)
        elif store != root:
            (root / f.target).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stored, root / f.target / f.name)
    return root


def colab_download(
    data_dir: str | Path,
    layout: str,
    keep_on_drive: bool = True,
    to: str | Path = "data",
    base_url: str | None = None,
) -> str:
    """The notebooks' data step on Colab: download the dataset when ``data_dir`` is not there.

    On Colab, when ``data_dir`` does not exist and ``layout`` names a dataset of
    :data:`DATASETS`, returns :func:`download` ``(layout, to)``'s folder. Anywhere else, or when
    the folder exists, returns ``data_dir`` unchanged: a missing folder then gets the reader's
    error, which says where to get the data.

    Where things go: with ``keep_on_drive`` (and Drive mounted, :func:`colab_drive_dir`
    ``(mount=True)``) the archives, CSVs and their ``.sha256`` records stay on Google Drive in
    ``MyDrive/lesion-course/<layout>/``, downloaded once for all notebooks and runtimes. The
    images are extracted to ``to/<layout>`` (relative to the working folder, ``/content`` on
    Colab): the runtime's own fast disk, never Drive. A fresh runtime thus reads each archive
    from Drive once, to extract it; its hash is not recomputed while the file's size and mtime
    are those recorded when it was verified. Without Drive everything stays under ``to``.
    """
    if not _on_colab() or Path(data_dir).exists() or layout not in DATASETS:
        return str(data_dir)
    drive_dir = colab_drive_dir(mount=True) if keep_on_drive else None
    return str(download(layout, to, drive_dir=drive_dir, base_url=base_url))


def colab_drive_path(path: str | Path, keep_on_drive: bool = True) -> str:
    """Where a notebook keeps ``path`` (results, models, checkpoints) on Colab: on Google Drive.

    Each Colab notebook runs on its own runtime, whose disk a reset empties: on Drive, a
    checkpoint survives a disconnect (``resume=True``) and the model of notebook 03 reaches
    notebooks 06 and 07. On Colab with ``keep_on_drive``, a relative ``path`` becomes
    ``colab_drive_dir(mount=True) / path``; an absolute path, a refused mount, or any other
    machine keep ``path`` as it is.
    """
    if not _on_colab() or not keep_on_drive or Path(path).is_absolute():
        return str(path)
    drive_dir = colab_drive_dir(mount=True)
    return str(drive_dir / path) if drive_dir is not None else str(path)


def _on_colab() -> bool:
    return "google.colab" in sys.modules
