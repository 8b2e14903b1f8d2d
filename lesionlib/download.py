"""Official dataset downloads: resumed (HTTP Range), retried, verified (SHA-256), safely extracted:
what torchvision's ``download_url``/``extract_archive`` do not do."""

import errno
import hashlib
import http.client
import os
import shutil
import stat
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path, PureWindowsPath
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from tqdm.auto import tqdm

from lesionlib import __version__
from lesionlib.settings import LesionlibError


class DownloadError(LesionlibError, RuntimeError):
    """A download, verification or extraction failed; the message names the file and the fix."""


class ManualDownloadRequired(DownloadError):
    """The dataset has no stable direct link: the message lists the manual steps."""


@dataclass(frozen=True)
class RemoteFile:
    """A file at ``base_url + name`` (None: no direct link); a ``.zip`` is extracted."""

    name: str
    base_url: str | None
    size: int | None = None
    sha256: str | None = None


ISIC_BUCKET = "https://isic-challenge-data.s3.amazonaws.com/"
_2019, _2016 = ISIC_BUCKET + "2019/", ISIC_BUCKET + "2016/"
_GT2016_SHA = "0ffadd63b7cec650cddfbe5df54d1d3167453fe6004c2bbf05824184b0c4d405"

DATASETS: dict[str, list[RemoteFile]] = {
    "isic2019": [
        RemoteFile("ISIC_2019_Training_Input.zip", _2019),
        RemoteFile("ISIC_2019_Training_GroundTruth.csv", _2019),
        RemoteFile("ISIC_2019_Training_Metadata.csv", _2019),
    ],
    "isic2016": [
        RemoteFile("ISBI2016_ISIC_Part3_Training_Data.zip", _2016),
        RemoteFile("ISBI2016_ISIC_Part3_Training_GroundTruth.csv", _2016, 19419, _GT2016_SHA),
        RemoteFile("ISBI2016_ISIC_Part3_Test_Data.zip", _2016),
        RemoteFile("ISBI2016_ISIC_Part3_Test_GroundTruth.csv", _2016),
    ],
    "ham10000": [
        RemoteFile("HAM10000_images_part_1.zip", None),
        RemoteFile("HAM10000_images_part_2.zip", None),
        RemoteFile("HAM10000_metadata.csv", None),
    ],
}
"""Dataset name -> its files, extracted as :mod:`lesionlib.datasets`' readers expect. Size and hash
only where checked against the official file; the others' are recorded at download."""

_ISIC_HELP = "Current links: https://challenge.isic-archive.com/data/#{}, or the ISIC command-line "
_ISIC_HELP += "tool: pip install isic-cli (see data/README.md)."
_HAM10000_PAGE = "https://doi.org/10.7910/DVN/DBW86T"
_HELP = {  # where to look when a download fails, appended to the error message
    "isic2019": _ISIC_HELP.format(2019),
    "isic2016": _ISIC_HELP.format(2016),
    "ham10000": f"Official page: {_HAM10000_PAGE} (see data/README.md).",
}
_HAM10000_STEPS = f"""\
HAM10000 has no stable direct download link. Open {_HAM10000_PAGE}, accept its terms (CC BY-NC
4.0), download the files missing from {{store}} ({{missing}}; the metadata as CSV), put them
there and run again: they are extracted into {{root}}. Alternatives (data/README.md): the ISIC 2019
training set contains the HAM10000 images; pip install isic-cli fetches the HAM10000 collection."""

COLAB_DRIVE_ROOT = Path("/content/drive/MyDrive")
"""Where Google Drive appears on Colab after ``google.colab.drive.mount('/content/drive')``."""

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # EDQUOT: a network drive


def _bytes(n: int) -> str:
    return tqdm.format_sizeof(n, "B", 1024)


def _no_space(folder: Path, what: str, detail: str) -> DownloadError:
    """The full-disk error: what failed, the amounts (``detail``) and the fix, on Drive or not."""
    if folder.resolve().is_relative_to(COLAB_DRIVE_ROOT.resolve()):
        fix = (
            "Free space in your Google Drive (https://drive.google.com/drive/quota), or pass "
            "keep_on_drive=False (download: no drive_dir / --drive-dir) to keep it on the runtime."
        )
    else:
        fix = "Delete files there, or pick a folder on a bigger disk (download(to=...) / --to)."
    return DownloadError(f"Not enough disk space to {what}: {detail}. {fix}")


def _check_space(folder: Path, needed: int, what: str) -> None:
    """Raise :func:`_no_space` unless the disk of ``folder`` has ``needed`` bytes free."""
    free = shutil.disk_usage(next(p for p in (folder, *folder.parents) if p.exists())).free
    if needed > free:
        detail = f"it needs {_bytes(needed)} in {folder}, and that disk has {_bytes(free)} free"
        raise _no_space(folder, what, detail)


def _sha256(path: Path, progress: bool) -> str:
    """SHA-256 of a file, read in 1 MiB blocks, with a progress bar from 64 MiB on."""
    digest, size = hashlib.sha256(), path.stat().st_size
    bar = {"desc": f"verifying {path.name}", "disable": not progress or size < 64 << 20}
    with path.open("rb") as f, tqdm.wrapattr(f, "read", size, **bar) as src:
        while block := src.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _verify(
    dest: Path, sha256: str | None, size: int | None, progress: bool, url: str | None = None
) -> None:
    """Check ``dest`` against ``size`` and ``sha256``, else the hash recorded in ``dest.sha256``
    (``sha256sum -c``'s format plus the size and mtime verified, so an unchanged file is not read
    again). With ``url``, the ``.part`` just downloaded is checked, then renamed ``dest``."""
    path = dest.with_name(dest.name + ".part") if url else dest
    record = dest.with_name(dest.name + ".sha256")
    st = path.stat()
    stamp = f"# verified: size={st.st_size} mtime_ns={st.st_mtime_ns}"
    lines = record.read_text().lower().split("\n") if record.is_file() and not url else [""]
    recorded = lines[0].split(" ")[0] or None  # lesionlib 0.1 wrote no stamp line
    expected = sha256.lower() if sha256 else recorded
    if size is not None and st.st_size != size:
        problem = f"has {st.st_size} bytes but {size} were expected."
    elif expected is not None and expected == recorded and stamp in lines:
        return  # verified before, unchanged since
    elif expected in (None, actual := _sha256(path, progress)):  # none known yet, or a match
        if url:
            os.replace(path, dest)
        _write_atomic(record, f"{actual}  {dest.name}\n{stamp}\n")
        return
    else:
        source = "the known hash" if sha256 else f"the hash recorded at download ({record})"
        problem = f"does not match {source}:\n  expected {expected}\n  actual   {actual}"
    if url:
        path.unlink()
        fix = f"The download was deleted: run again. If it fails again, {url} serves another file."
    else:
        fix = f"Delete it (and {record.name} if present) and run again to download it afresh."
    raise DownloadError(f"{dest} {problem}\nIt is incomplete, corrupt or another version. {fix}")


def _write_atomic(path: Path, text: str) -> None:
    path.with_name(path.name + ".tmp").write_text(text)
    os.replace(path.with_name(path.name + ".tmp"), path)


def _fetch(url: str, dest: Path, size: int | None, timeout: float, progress: bool) -> None:
    """One attempt: append to ``dest.part`` (HTTP Range) or restart, once there is room for it."""
    part = dest.with_name(dest.name + ".part")
    offset = kept = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"lesionlib/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        exc.close()
        if exc.code != 416 or not offset:
            raise
        if exc.headers.get("Content-Range", "").strip().endswith(f"/{offset}"):
            return  # "bytes */<offset>": the .part already holds the whole file
        part.unlink()
        raise ConnectionError(f"HTTP 416 for a {offset}-byte partial file") from exc
    with response:
        length = response.headers.get("Content-Length")
        got = response.headers.get("Content-Range", "").strip()
        if response.status != 206:  # the server ignored Range (or none was sent): start afresh
            offset = 0
        elif not got.startswith(f"bytes {offset}-"):
            part.unlink()
            raise ConnectionError(f"asked for bytes {offset}-, got Content-Range {got!r}")
        total = offset + int(length) if length is not None else size
        if total is not None:
            _check_space(part.parent, total - kept, f"download {dest.name}")
        bar = {"initial": offset, "desc": dest.name, "disable": not progress}
        mode = "ab" if offset else "wb"
        try:
            with part.open(mode) as f, tqdm.wrapattr(response, "read", total, **bar) as src:
                shutil.copyfileobj(src, f, 1 << 20)
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            detail = (
                f"{part.parent} became full after {_bytes(part.stat().st_size)} were written "
                f"({exc.strerror}). The partial file {part} was kept: once there is room, run "
                "again to resume it"
            )
            raise _no_space(part.parent, f"download {dest.name}", detail) from exc
    if total is not None and (received := part.stat().st_size) < total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")


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
) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part`` (resumed), retrying network errors and 5xx
    ``backoff * 2**attempt`` s apart, then verify it; an existing ``dest`` is only verified."""
    dest = Path(dest).expanduser()
    if dest.exists():
        _verify(dest, sha256, size, progress)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if size is not None and part.exists() and part.stat().st_size > size:
        part.unlink()
    for attempt in range(retries + 1):
        if size is not None and part.exists() and part.stat().st_size == size:
            break  # complete from an earlier run: only verification is left
        try:
            _fetch(url, dest, size, timeout, progress)
            break
        except (OSError, http.client.HTTPException) as exc:  # HTTPError is an OSError
            refused = isinstance(exc, HTTPError) and exc.code < 500 and exc.code not in (408, 429)
            if not refused and attempt < retries:
                delay = backoff * 2**attempt
                if progress:
                    tqdm.write(f"{dest.name}: {exc}; retrying in {delay:g} s")
                time.sleep(delay)
                continue
            why = "not retried: the link may have moved" if refused else f"{attempt + 1} attempts"
            kept = f"The partial file {part} was kept: run again to resume, or\n"
            raise DownloadError(
                f"Downloading {url} failed ({why}): {exc}.\n{kept if part.exists() else ''}"
                f"Download it by hand and put it at {dest}, then run again (it will be verified):\n"
                f"  curl -L -C - -o '{dest}' '{url}'"
            ) from exc
    _verify(dest, sha256, size, progress, url)
    return dest


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member may not be extracted (absolute path, ``..``, symlink), or None."""
    path = PureWindowsPath(info.filename)  # split at "/" and "\\"; "C:" is an anchor too
    if path.anchor:
        return "an absolute path"
    if ".." in path.parts:
        return "a '..' component"
    return "a symbolic link" if stat.S_ISLNK(info.external_attr >> 16) else None


def safe_extract(archive: str | Path, target: str | Path) -> list[Path]:
    """Extract a zip into ``target`` and return its files; nothing is written if a member is
    absolute, has ``..`` or is a symlink, or the disk lacks room. A marker written last makes a
    second call a no-op (a killed one is redone)."""
    archive, target = Path(archive), Path(target)
    marker = target / f".extracted-{archive.name}"
    if marker.is_file():
        return [target / line for line in marker.read_text().splitlines() if line]
    staging, what = target / f".extracting-{archive.name}", f"extract {archive}"
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                if reason := _unsafe(info):
                    raise DownloadError(
                        f"Refusing to extract {archive}: member {info.filename!r} has {reason}. "
                        "Nothing was extracted; delete it and download it from the official source."
                    )
            _check_space(target, sum(info.file_size for info in infos), what)
            shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted run
            staging.mkdir(parents=True)
            zf.extractall(staging)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not isinstance(exc, OSError):
            msg = f"{archive} is not a valid zip (corrupt or incomplete). Delete it and run again."
            raise DownloadError(msg) from exc
        if exc.errno not in _DISK_FULL:
            raise
        raise _no_space(target, what, f"{target} became full ({exc.strerror})") from exc
    shutil.copytree(staging, target, copy_function=os.replace, dirs_exist_ok=True)
    shutil.rmtree(staging)
    files = [info.filename for info in infos if not info.is_dir()]
    _write_atomic(marker, "".join(f"{n}\n" for n in files))
    return [target / name for name in files]


def download(
    dataset: str,
    to: str | Path,
    *,
    drive_dir: str | Path | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> Path:
    """Download and extract ``dataset`` into ``to/<dataset>`` (returned), as its reader expects;
    the downloads are kept in ``drive_dir/<dataset>`` if given. ``base_url``: a mirror."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    files = DATASETS[dataset]
    if base_url is not None:
        files = [replace(f, base_url=base_url.rstrip("/") + "/") for f in files]
    root = Path(to).expanduser() / dataset
    store = Path(drive_dir).expanduser() / dataset if drive_dir is not None else root
    if missing := [f.name for f in files if f.base_url is None and not (store / f.name).exists()]:
        steps = _HAM10000_STEPS.format(store=store, root=root, missing=", ".join(missing))
        raise ManualDownloadRequired(steps)
    for f in files:
        stored = store / f.name
        try:
            if f.base_url is None:
                _verify(stored, f.sha256, f.size, progress)
            else:
                download_file(
                    f.base_url + f.name, stored, sha256=f.sha256, size=f.size, progress=progress
                )
        except DownloadError as exc:
            raise DownloadError(f"{exc}\n{_HELP[dataset]}") from exc
        if f.name.endswith(".zip"):
            safe_extract(stored, root)
        elif store != root:
            root.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stored, root / f.name)
    return root


def colab_drive_dir(subfolder: str = "lesion-course", mount: bool = False) -> Path | None:
    """``COLAB_DRIVE_ROOT/subfolder`` (created) when Google Drive is mounted, else None.
    ``mount=True`` mounts it on Colab first, or says why not (files then die with the runtime)."""
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


def colab_download(
    data_dir: str | Path,
    layout: str,
    keep_on_drive: bool = True,
    to: str | Path = "data",
    base_url: str | None = None,
) -> str:
    """The notebooks' data step: on Colab, when ``data_dir`` is missing, :func:`download`
    ``layout`` (archives kept on Drive with ``keep_on_drive``) and return its folder."""
    if "google.colab" not in sys.modules or Path(data_dir).exists() or layout not in DATASETS:
        return str(data_dir)
    drive_dir = colab_drive_dir(mount=True) if keep_on_drive else None
    return str(download(layout, to, drive_dir=drive_dir, base_url=base_url))


def colab_drive_path(path: str | Path, keep_on_drive: bool = True) -> str:
    """Where a notebook keeps ``path`` (results, checkpoints): on Colab, on Drive, which survives
    a runtime reset; an absolute ``path``, no Drive or another machine keep ``path``."""
    if "google.colab" not in sys.modules or not keep_on_drive or Path(path).is_absolute():
        return str(path)
    drive_dir = colab_drive_dir(mount=True)
    return str(drive_dir / path) if drive_dir is not None else str(path)
