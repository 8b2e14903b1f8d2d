"""lesionlib.download against a real HTTP server on 127.0.0.1 (no mocks of the download code)."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import types
import zipfile
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from PIL import Image

from lesionlib import download as dl
from lesionlib.cache import prepare_cache
from lesionlib.datasets import load_table, read_ham10000, read_isic2016, split_table
from lesionlib.download import (
    DATASETS,
    DownloadError,
    ManualDownloadRequired,
    colab_download,
    colab_drive_dir,
    colab_drive_path,
    download,
    download_file,
    safe_extract,
)
from lesionlib.models import build_model
from lesionlib.train import fit, make_loaders, predict

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileServer:
    """Serves ``files`` (name -> bytes) with byte ranges, and records every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (name, Range header)
        self.cut_first_after: int | None = None  # close the first response after N body bytes
        self.honour_range = True
        self.fail_first_with: int | None = None  # answer the first request with this status
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def hits(self, name: str) -> int:
        return sum(1 for n, _ in self.requests if n == name)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                name = self.path.lstrip("/")
                byte_range = self.headers.get("Range")
                with server._lock:
                    server.requests.append((name, byte_range))
                    first = len(server.requests) == 1
                if first and server.fail_first_with is not None:
                    self.send_error(server.fail_first_with)
                    return
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                if byte_range and server.honour_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", byte_range).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if first and server.cut_first_after is not None:
                    body = body[: server.cut_first_after]  # then HTTP/1.0 closes the connection
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    srv = FileServer()
    srv.files["data.bin"] = PAYLOAD
    yield srv
    srv.close()


def _get(server: FileServer, dest: Path, **kw: object) -> Path:
    kw = {"retries": 2, "backoff": 0.0, "timeout": 5, "progress": False, **kw}
    return download_file(server.url + "data.bin", dest, **kw)


def test_full_download_verified_by_size_and_hash(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "data.bin"
    out = _get(server, dest, sha256=_sha(PAYLOAD), size=len(PAYLOAD))
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "data.bin.part").exists()
    assert server.requests == [("data.bin", None)]


def test_cut_transfer_is_resumed_with_range(server: FileServer, tmp_path: Path) -> None:
    server.cut_first_after = 3000
    dest = _get(server, tmp_path / "data.bin", sha256=_sha(PAYLOAD), size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("data.bin", None), ("data.bin", "bytes=3000-")]


def test_part_left_by_a_failed_call_is_resumed_by_the_next(
    server: FileServer, tmp_path: Path
) -> None:
    server.cut_first_after = 4000
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match="was kept: run again to resume"):
        _get(server, dest, retries=0)
    assert not dest.exists()
    assert (tmp_path / "data.bin.part").stat().st_size == 4000
    _get(server, dest, sha256=_sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("data.bin", "bytes=4000-")


def test_wrong_checksum_raises_and_leaves_nothing(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        _get(server, dest, sha256=wrong)
    message = str(info.value)
    assert "data.bin" in message and wrong in message and _sha(PAYLOAD) in message
    assert not dest.exists()
    assert not (tmp_path / "data.bin.part").exists()


def test_server_ignoring_range_restarts_from_zero(server: FileServer, tmp_path: Path) -> None:
    server.honour_range = False
    (tmp_path / "data.bin.part").write_bytes(b"x" * 500)  # stale bytes that must not survive
    dest = _get(server, tmp_path / "data.bin", sha256=_sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("data.bin", "bytes=500-")]


def test_complete_part_answered_416_is_finalised(server: FileServer, tmp_path: Path) -> None:
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    dest = _get(server, tmp_path / "data.bin", sha256=_sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("data.bin", f"bytes={len(PAYLOAD)}-")]


def test_server_error_is_retried(server: FileServer, tmp_path: Path) -> None:
    server.fail_first_with = 503
    dest = _get(server, tmp_path / "data.bin", sha256=_sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.hits("data.bin") == 2


def test_404_gives_the_manual_command(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "missing.zip"
    url = server.url + "missing.zip"
    with pytest.raises(DownloadError) as info:
        download_file(url, dest, retries=3, backoff=0.0, timeout=5, progress=False)
    message = str(info.value)
    assert "404" in message and url in message
    assert f"curl -L -C - -o '{dest}' '{url}'" in message
    assert server.hits("missing.zip") == 1  # a 4xx is not retried
    assert not dest.exists()


def test_existing_file_is_verified_not_fetched_again(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    _get(server, dest)  # no known hash: it is recorded
    sidecar = tmp_path / "data.bin.sha256"
    assert sidecar.read_text().split()[0] == _sha(PAYLOAD)
    _get(server, dest)
    _get(server, dest, sha256=_sha(PAYLOAD), size=len(PAYLOAD))
    assert server.hits("data.bin") == 1
    dest.write_bytes(PAYLOAD[:-1] + b"!")  # damaged later (same size)
    _touch(dest)
    with pytest.raises(DownloadError, match="does not match the hash recorded"):
        _get(server, dest)
    assert server.hits("data.bin") == 1


def _touch(path: Path, seconds: int = 1) -> None:
    """Move ``path``'s mtime on, as a later write does (not left to the clock's resolution)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the files download.py reads to hash them (``x.part`` counts as ``x``)."""
    hashed: Counter[str] = Counter()
    real = dl._sha256

    def counting(path: Path, progress: bool) -> str:
        hashed[path.name.removesuffix(".part")] += 1
        return real(path, progress)

    monkeypatch.setattr(dl, "_sha256", counting)
    return hashed


def test_verified_unchanged_file_is_not_hashed_again(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed = _count_hashes(monkeypatch)
    dest = tmp_path / "data.bin"
    _get(server, dest, sha256=_sha(PAYLOAD))
    st = dest.stat()
    assert (tmp_path / "data.bin.sha256").read_text().splitlines() == [
        f"{_sha(PAYLOAD)}  data.bin",
        f"# verified: size={len(PAYLOAD)} mtime_ns={st.st_mtime_ns}",
    ]
    _get(server, dest, sha256=_sha(PAYLOAD))
    _get(server, dest)  # the same file, verified against its record
    assert hashed == Counter({"data.bin": 1})
    with pytest.raises(DownloadError, match="does not match the known hash"):
        _get(server, dest, sha256="0" * 64)  # another expected hash: read again, refused
    assert hashed == Counter({"data.bin": 2})
    assert server.hits("data.bin") == 1


def test_old_sidecar_with_only_the_hash_is_accepted_and_upgraded(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "data.bin"
    _get(server, dest)
    sidecar = tmp_path / "data.bin.sha256"
    sidecar.write_text(f"{_sha(PAYLOAD)}  data.bin\n")  # as lesionlib 0.1 wrote it
    hashed = _count_hashes(monkeypatch)
    _get(server, dest)
    assert hashed == Counter({"data.bin": 1})
    size, mtime_ns = len(PAYLOAD), dest.stat().st_mtime_ns
    assert sidecar.read_text().splitlines()[1] == f"# verified: size={size} mtime_ns={mtime_ns}"
    _get(server, dest)
    assert hashed == Counter({"data.bin": 1})
    assert server.hits("data.bin") == 1


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs GNU sha256sum")
def test_sidecar_still_checks_with_sha256sum(server: FileServer, tmp_path: Path) -> None:
    _get(server, tmp_path / "data.bin")
    check = ["sha256sum", "-c", "--strict", "data.bin.sha256"]
    done = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "data.bin: OK\n", "")


def test_manual_files_are_hashed_once_then_trusted_until_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "data" / "ham10000"
    store.mkdir(parents=True)
    for part in (1, 2):
        (store / f"HAM10000_images_part_{part}.zip").write_bytes(
            _zip_bytes({f"ISIC_00{part}.jpg": _jpeg((200, 150, 120))})
        )
    csv = store / "HAM10000_metadata.csv"
    csv.write_text("lesion_id,image_id,dx\nHAM_1,ISIC_001,nv\nHAM_2,ISIC_002,mel\n")
    hashed = _count_hashes(monkeypatch)
    download("ham10000", tmp_path / "data", progress=False)
    names = ["HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip", csv.name]
    assert hashed == Counter(names)
    download("ham10000", tmp_path / "data", progress=False)
    assert hashed == Counter(names)  # nothing read again
    (store / f"{csv.name}.sha256").write_text(f"{_sha(csv.read_bytes())}  {csv.name}\n")
    download("ham10000", tmp_path / "data", progress=False)  # old sidecar: hashed once more
    download("ham10000", tmp_path / "data", progress=False)
    assert hashed == Counter(names) + Counter([csv.name])
    csv.write_text(csv.read_text().replace("mel", "bcc"))  # same size, new content
    _touch(csv)
    with pytest.raises(DownloadError, match="HAM10000_metadata.csv does not match the hash"):
        download("ham10000", tmp_path / "data", progress=False)


def _fake_colab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Colab with Drive mounted at ``tmp_path/drive``; returns the course folder on it."""
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(dl, "COLAB_DRIVE_ROOT", tmp_path / "drive" / "MyDrive")
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)
    return tmp_path / "drive" / "MyDrive" / "lesion-course"


def test_a_fresh_runtime_reuses_the_drive_copy_without_hashing_it(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each notebook runs on a fresh runtime: the second one reads the archives on Drive only to
    extract them to its own local disk; a touched or changed Drive file is hashed again."""
    _serve_fake_isic2016(server)
    _without_pins(monkeypatch, "isic2016")
    kept = _fake_colab(tmp_path, monkeypatch) / "isic2016"
    hashed = _count_hashes(monkeypatch)

    def runtime(name: str) -> Path:
        local = tmp_path / name  # the runtime's own disk
        out = colab_download(local / "isic2016", "isic2016", to=local, base_url=server.url)
        return Path(out)

    root = runtime("runtime1")
    names = sorted(f.name for f in DATASETS["isic2016"])
    assert hashed == Counter(names)  # each file hashed once, as it was downloaded
    _assert_isic2016_layout(root)
    on_drive = sorted(p.name for p in kept.iterdir())
    assert on_drive == sorted([*names, *(f"{n}.sha256" for n in names)])  # no images on Drive

    hashed.clear()
    hits = len(server.requests)
    root = runtime("runtime2")
    assert root == tmp_path / "runtime2" / "isic2016"
    _assert_isic2016_layout(root)  # extracted to its own local folder
    assert hashed == Counter() and len(server.requests) == hits

    archive = kept / "ISBI2016_ISIC_Part3_Training_Data.zip"
    _touch(archive)
    _assert_isic2016_layout(runtime("runtime3"))
    assert hashed == Counter([archive.name])
    _assert_isic2016_layout(runtime("runtime4"))
    assert hashed == Counter([archive.name])  # its new record is trusted again

    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed, same size
    archive.write_bytes(bytes(data))
    _touch(archive)
    with pytest.raises(DownloadError, match=r"Training_Data\.zip does not match the hash recorded"):
        runtime("runtime5")
    assert hashed == Counter([archive.name] * 2)
    assert archive.is_file() and not (tmp_path / "runtime5" / "isic2016").exists()
    assert len(server.requests) == hits


def _free_space(monkeypatch: pytest.MonkeyPatch, free: int, under: Path) -> None:
    """Make the disk of every folder under ``under`` show ``free`` bytes free (others: 1 TB)."""
    real = shutil.disk_usage

    def disk_usage(path: str | Path) -> tuple[int, int, int]:
        if Path(path).resolve().is_relative_to(under.resolve()):
            return shutil._ntuple_diskusage(10**12, 10**12 - free, free)
        return real(path)

    monkeypatch.setattr(dl.shutil, "disk_usage", disk_usage)


@pytest.mark.parametrize("where", ["drive", "local"])
def test_too_little_free_space_for_a_download_is_refused_first(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    folder = (_fake_colab(tmp_path, monkeypatch) if where == "drive" else tmp_path) / "isic"
    folder.mkdir(parents=True)
    part = folder / "data.bin.part"
    part.write_bytes(PAYLOAD[:2048])  # from an earlier run
    _free_space(monkeypatch, 4096, folder)
    with pytest.raises(DownloadError) as info:
        _get(server, folder / "data.bin", size=len(PAYLOAD))
    message = str(info.value)
    assert f"Not enough disk space to download data.bin: it needs 8.00kB in {folder}" in message
    assert "that disk has 4.00kB free" in message
    fix = "Free space in your Google Drive" if where == "drive" else "Delete files there"
    assert fix in message and ("keep_on_drive=False" in message) == (where == "drive")
    assert part.read_bytes() == PAYLOAD[:2048] and not (folder / "data.bin").exists()
    assert server.hits("data.bin") == 1  # asked for the size once; not retried


def test_too_little_local_space_to_extract_is_refused_and_keeps_the_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"x.txt": b"x" * 5000}))
    target = tmp_path / "runtime" / "isic2016"
    _free_space(monkeypatch, 1000, tmp_path)
    with pytest.raises(DownloadError) as info:
        safe_extract(archive, target)
    message = str(info.value)
    assert f"Not enough disk space to extract {archive}: it needs 4.88kB in {target}" in message
    assert "that disk has 0.98kB free" in message and "Delete files there" in message
    assert archive.is_file() and not target.exists()


def _fills_up(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """Writes to ``*.part`` files fail with ENOSPC once ``room`` bytes were written."""
    real_open = Path.open

    class FullDisk:
        def __init__(self, f: io.BufferedWriter) -> None:
            self.f = f

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def write(self, data: bytes) -> int:
            left = room - self.f.tell()
            self.f.write(data[: max(left, 0)])
            if len(data) > left:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return len(data)

    def open_(path: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        f = real_open(path, mode, *args, **kwargs)
        return FullDisk(f) if path.name.endswith(".part") and "b" in mode and "r" not in mode else f

    monkeypatch.setattr(Path, "open", open_)


def test_disk_filling_up_during_the_download_keeps_the_partial_file(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _fake_colab(tmp_path, monkeypatch) / "isic"
    folder.mkdir(parents=True)
    dest = folder / "data.bin"
    with monkeypatch.context() as m:
        _fills_up(m, room=3000)
        with pytest.raises(DownloadError) as info:
            _get(server, dest)
    message = str(info.value)
    assert f"Not enough disk space to download data.bin: {folder} became full" in message
    assert "after 2.93kB were written" in message and "No space left on device" in message
    assert f"partial file {folder / 'data.bin.part'} was kept" in message
    assert "Free space in your Google Drive" in message and "keep_on_drive=False" in message
    assert (folder / "data.bin.part").read_bytes() == PAYLOAD[:3000]
    assert server.hits("data.bin") == 1  # a full disk is not retried
    assert _get(server, dest).read_bytes() == PAYLOAD  # with room again: resumed
    assert server.requests[-1] == ("data.bin", "bytes=3000-")


def test_disk_filling_up_during_extraction_leaves_no_half_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"top/x.txt": b"x"}))
    target = tmp_path / "out"

    def full(self: zipfile.ZipFile, path: object = None, *args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(zipfile.ZipFile, "extractall", full)
    with pytest.raises(DownloadError, match=rf"extract .*a\.zip: {re.escape(str(target))} became"):
        safe_extract(archive, target)
    assert archive.is_file() and list(target.iterdir()) == []


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_safe_extract_then_second_call_is_a_noop(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"top/x.txt": b"x", "top/sub/y.txt": b"y"}))
    target = tmp_path / "out"
    files = safe_extract(archive, target)
    assert sorted(files) == [target / "top/sub/y.txt", target / "top/x.txt"]
    assert (target / "top/sub/y.txt").read_bytes() == b"y"
    assert (target / ".extracted-a.zip").is_file()
    assert not any(p.name.startswith(".extracting") for p in target.iterdir())
    (target / "top/x.txt").unlink()
    assert sorted(safe_extract(archive, target)) == sorted(files)
    assert not (target / "top/x.txt").exists()  # not extracted again


def test_interrupted_extraction_is_redone(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"top/x.txt": b"x"}))
    target = tmp_path / "out"
    (target / ".extracting-a.zip" / "top").mkdir(parents=True)  # left by a killed run
    (target / "top").mkdir()  # a half-moved folder, no marker
    safe_extract(archive, target)
    assert (target / "top/x.txt").read_bytes() == b"x"
    assert not (target / ".extracting-a.zip").exists()


def test_corrupt_zip_raises(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(_zip_bytes({"x.txt": b"x" * 1000})[:-30])
    with pytest.raises(DownloadError, match=r"broken\.zip is not a valid zip.*Delete it"):
        safe_extract(archive, tmp_path / "out")


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/lesionlib-evil.txt", "a/../../evil.txt"])
def test_zip_escaping_the_target_is_refused(tmp_path: Path, evil: str) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_zip_bytes({"ok.txt": b"fine", evil: b"evil"}))
    assert evil in zipfile.ZipFile(archive).namelist()
    target = tmp_path / "deep" / "out"
    with pytest.raises(DownloadError, match=re.escape(repr(evil))):
        safe_extract(archive, target)
    assert not (tmp_path / "deep").exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep/evil.txt").exists()
    assert not Path("/tmp/lesionlib-evil.txt").exists()


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        link = zipfile.ZipInfo("link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    archive = tmp_path / "link.zip"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(DownloadError, match="'link' has a symbolic link"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_not_enough_disk_space_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"x.txt": b"x" * 5000}))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**6, 0, 100))
    with pytest.raises(DownloadError, match=r"Not enough disk space to extract .*a\.zip"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def _serve_fake_isic2016(server: FileServer) -> None:
    """Two tiny images per split, in the official archive and CSV formats (headerless, CRLF)."""
    for split, labels in (("Training", ("benign", "malignant")), ("Test", ("0", "1"))):
        ids = [f"ISIC_{i + (100 if split == 'Test' else 0):07d}" for i in range(2)]
        folder = f"ISBI2016_ISIC_Part3_{split}_Data"
        server.files[f"{folder}.zip"] = _zip_bytes(
            {f"{folder}/{i}.jpg": _jpeg((180, 120, 100)) for i in ids}
        )
        rows = "".join(f"{i},{label}\r\n" for i, label in zip(ids, labels, strict=True))
        server.files[f"ISBI2016_ISIC_Part3_{split}_GroundTruth.csv"] = rows.encode()


def _without_pins(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The fake files cannot match the official hashes: drop them for the layout tests."""
    unpinned = [dataclasses.replace(f, sha256=None, size=None) for f in DATASETS[name]]
    monkeypatch.setitem(DATASETS, name, unpinned)


def _assert_isic2016_layout(root: Path) -> None:
    """The readers of lesionlib.datasets accept what download() produced."""
    train = read_isic2016(root, "train")
    assert train["image_id"].tolist() == ["ISIC_0000000", "ISIC_0000001"]
    assert train["label"].tolist() == ["benign", "malignant"]
    test = read_isic2016(root, "test")
    assert test["image_id"].tolist() == ["ISIC_0000100", "ISIC_0000101"]
    assert test["target"].tolist() == [0, 1] and set(test["split"]) == {"test"}
    assert all(Path(p).is_file() for p in [*train["path"], *test["path"]])


def test_pinned_hash_guards_a_mirror(server: FileServer, tmp_path: Path) -> None:
    _serve_fake_isic2016(server)
    with pytest.raises(DownloadError, match="ISBI2016_ISIC_Part3_Training_GroundTruth.csv"):
        download("isic2016", tmp_path / "data", base_url=server.url, progress=False)
    assert not (tmp_path / "data/isic2016/ISBI2016_ISIC_Part3_Training_GroundTruth.csv").exists()


def test_download_isic2016_end_to_end(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_fake_isic2016(server)
    _without_pins(monkeypatch, "isic2016")
    root = download("isic2016", tmp_path / "data", base_url=server.url, progress=False)
    assert root == tmp_path / "data" / "isic2016"
    _assert_isic2016_layout(root)
    assert (root / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv.sha256").is_file()
    hits = len(server.requests)
    assert download("isic2016", tmp_path / "data", base_url=server.url, progress=False) == root
    assert len(server.requests) == hits


def test_the_colab_path_downloads_caches_and_trains(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What notebook 04 does on Colab, with no manual step: download, read (the official test
    set becomes the test split), resize once, train, predict."""
    _serve_fake_isic2016(server)
    _without_pins(monkeypatch, "isic2016")
    monkeypatch.setenv("LESIONLIB_CACHE", str(tmp_path / "cache"))
    root = download("isic2016", tmp_path / "data", base_url=server.url, progress=False)
    table = split_table(load_table(root, "isic2016"), val_fraction=0)
    assert table["split"].tolist() == ["train", "train", "test", "test"]
    table = prepare_cache(table, size=16, progress=False)
    assert all(Path(p).is_relative_to(tmp_path / "cache") for p in table["path"])
    loaders = make_loaders(table, 16, batch_size=2, num_workers=0)
    model = build_model("simplecnn", 2, pretrained=False, image_size=16)
    result = fit(model, loaders, torch.optim.Adam(model.parameters()), 1, progress=False)
    probs, targets = predict(model, loaders["test"])
    assert len(result.history) == 1 and probs.shape == (2, 2) and targets.tolist() == [0, 1]


def test_colab_download_fetches_only_on_colab_and_only_when_missing(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_fake_isic2016(server)
    _without_pins(monkeypatch, "isic2016")
    wanted = tmp_path / "data" / "isic2016"
    args = {"to": tmp_path / "data", "base_url": server.url}
    assert colab_download(wanted, "isic2016", **args) == str(wanted)  # not on Colab: unchanged
    assert not server.requests

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(dl, "COLAB_DRIVE_ROOT", tmp_path / "drive" / "MyDrive")
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)  # Drive already mounted
    assert colab_download(wanted, "isic2016", **args) == str(wanted)
    _assert_isic2016_layout(wanted)
    kept = tmp_path / "drive" / "MyDrive" / "lesion-course" / "isic2016"
    assert (kept / "ISBI2016_ISIC_Part3_Training_Data.zip").is_file()
    hits = len(server.requests)
    assert colab_download(wanted, "isic2016", **args) == str(wanted)  # there now: nothing fetched
    assert colab_download(tmp_path / "mine", "imagefolder", **args) == str(tmp_path / "mine")
    assert len(server.requests) == hits


def test_colab_drive_path_puts_relative_paths_on_drive_on_colab_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert colab_drive_path("results") == "results"  # not on Colab
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(dl, "COLAB_DRIVE_ROOT", tmp_path / "MyDrive")
    assert colab_drive_path("results") == "results"  # Drive cannot be mounted: runtime disk
    (tmp_path / "MyDrive").mkdir()
    course = tmp_path / "MyDrive" / "lesion-course"
    assert colab_drive_path("results") == str(course / "results")
    assert colab_drive_path("results/03_resnet50.pt") == str(course / "results/03_resnet50.pt")
    assert colab_drive_path(tmp_path / "mine") == str(tmp_path / "mine")  # absolute: as given
    assert colab_drive_path("results", keep_on_drive=False) == "results"


def test_drive_dir_keeps_archives_and_is_reused(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_fake_isic2016(server)
    _without_pins(monkeypatch, "isic2016")
    drive = tmp_path / "drive"
    root = download(
        "isic2016", tmp_path / "local", drive_dir=drive, base_url=server.url, progress=False
    )
    assert (drive / "isic2016" / "ISBI2016_ISIC_Part3_Training_Data.zip").is_file()
    assert not (root / "ISBI2016_ISIC_Part3_Training_Data.zip").exists()
    _assert_isic2016_layout(root)
    hits = len(server.requests)
    fresh = download(
        "isic2016", tmp_path / "reset", drive_dir=drive, base_url=server.url, progress=False
    )
    _assert_isic2016_layout(fresh)
    assert len(server.requests) == hits  # a runtime reset re-extracts, downloads nothing


def test_ham10000_needs_a_manual_download_then_uses_the_files(tmp_path: Path) -> None:
    to = tmp_path / "data"
    with pytest.raises(ManualDownloadRequired) as info:
        download("ham10000", to, progress=False)
    message = str(info.value)
    assert "10.7910/DVN/DBW86T" in message and "isic-cli" in message
    assert str(to / "ham10000") in message and "HAM10000_images_part_1.zip" in message
    store = to / "ham10000"
    store.mkdir(parents=True)
    (store / "HAM10000_images_part_1.zip").write_bytes(
        _zip_bytes({"ISIC_0024306.jpg": _jpeg((200, 150, 120))})
    )
    (store / "HAM10000_images_part_2.zip").write_bytes(
        _zip_bytes({"ISIC_0034320.jpg": _jpeg((90, 60, 50))})
    )
    (store / "HAM10000_metadata.csv").write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
        "HAM_0000001,ISIC_0024306,nv,follow_up,55.0,female,trunk\n"
        "HAM_0000002,ISIC_0034320,mel,histo,70.0,male,back\n"
    )
    root = download("ham10000", to, progress=False)
    assert root == store
    table = read_ham10000(root)
    assert table["label"].tolist() == ["NV", "MEL"]
    assert [Path(p).parent for p in table["path"]] == [root.resolve()] * 2
    assert (root / "HAM10000_images_part_2.zip.sha256").is_file()


def test_unknown_dataset_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'isic2017'.*\['ham10000', 'isic2016', 'isic2019'\]"):
        download("isic2017", tmp_path)


def test_colab_drive_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "COLAB_DRIVE_ROOT", tmp_path / "absent")
    assert colab_drive_dir() is None
    monkeypatch.setattr(dl, "COLAB_DRIVE_ROOT", tmp_path)
    assert colab_drive_dir("course") == tmp_path / "course"
    assert (tmp_path / "course").is_dir()


def test_colab_drive_dir_mount_outside_colab_says_so_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dl, "COLAB_DRIVE_ROOT", tmp_path / "drive" / "MyDrive")
    assert colab_drive_dir(mount=True) is None  # google.colab cannot be imported here
    out = capsys.readouterr().out
    assert "Google Drive not mounted (ModuleNotFoundError" in out and "lost when it resets" in out


@pytest.mark.realdata
def test_registry_hash_matches_the_official_isic2016_csv(
    real_data: Path, server: FileServer, tmp_path: Path
) -> None:
    entry = next(f for f in DATASETS["isic2016"] if f.sha256 is not None)
    official = real_data / "isic-csv" / entry.name
    server.files[entry.name] = official.read_bytes()
    dest = download_file(
        server.url + entry.name,
        tmp_path / entry.name,
        sha256=entry.sha256,
        size=entry.size,
        progress=False,
    )
    assert dest.read_bytes() == official.read_bytes()
