"""Small disks the tests can fill or break: a tmpfs of a few megabytes, and an ext4 image on a
loop device that the kernel turns read-only on a filesystem error (``errors=remount-ro``),
as a failing disk does. Both need root (CI runs as root); a test that cannot have one skips
with the reason."""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _mount_or_skip(*argv: str) -> None:
    done = _run("mount", *argv)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a test disk here (root needed): {done.stderr.strip()}")


@contextmanager
def tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` (created) for the duration."""
    path.mkdir()
    _mount_or_skip("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        _run("umount", "-l", str(path))


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until the disk is full; returns it (delete it to free the
    space)."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return filler
                chunk = chunk[: len(chunk) // 2]


class Ext4Disk:
    """An ext4 image mounted on a loop device with ``errors=remount-ro``."""

    def __init__(self, image: Path, path: Path) -> None:
        self.image = image
        self.path = path
        self._trigger: Path | None = None

    def mount(self) -> None:
        _mount_or_skip("-o", "loop,errors=remount-ro", str(self.image), str(self.path))
        device = _run("findmnt", "-no", "SOURCE", str(self.path)).stdout.strip()
        self._trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"

    def fail(self) -> None:
        """A filesystem error, as a failing disk reports one: the kernel makes the mount
        read-only at once, under the processes that have files open on it."""
        assert self._trigger is not None
        self._trigger.write_text("pal fault test: the disk failed\n")

    def repair(self) -> None:
        """Unmount, ``e2fsck``, mount read-write again (what an operator does next)."""
        _run("umount", str(self.path))
        checked = _run("e2fsck", "-fy", str(self.image))
        assert checked.returncode in (0, 1), checked.stdout + checked.stderr  # 1: fixed
        self.mount()


@contextmanager
def ext4_disk(folder: Path, size_mb: int = 16) -> Iterator[Ext4Disk]:
    for tool in ("mkfs.ext4", "e2fsck", "findmnt"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (e2fsprogs, util-linux)")
    image = folder / "disk.img"
    with open(image, "wb") as out:
        out.truncate(size_mb * 1024 * 1024)
    made = _run("mkfs.ext4", "-q", "-F", str(image))
    assert made.returncode == 0, made.stderr
    disk = Ext4Disk(image, folder / "disk")
    disk.path.mkdir()
    disk.mount()
    try:
        if disk._trigger is None or not disk._trigger.exists():
            pytest.skip("this kernel has no ext4 trigger_fs_error to fail a disk with")
        yield disk
    finally:
        _run("umount", "-l", str(disk.path))
