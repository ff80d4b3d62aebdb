"""Making writes durable: fsync of files and of the folders that name them."""
from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync a file, or every file in a folder (and its subfolders) and the folders themselves."""
    paths = sorted(path.rglob("*")) if path.is_dir() else [path]
    for item in paths:
        if item.is_file():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
        elif item.is_dir():
            fsync_dir(item)
    if path.is_dir():
        fsync_dir(path)
