"""The IMDB movie reviews (Maas et al. 2011) in their `aclImdb/{train,test}/{pos,neg}/*.txt` layout.

Reads the unpacked folder or the `aclImdb_v1.tar.gz` archive itself, streamed member by member so
nothing is unpacked to disk. The archive's member order is arbitrary, so rows are sorted: by the
review number in the file name `<number>_<rating>.txt`, negative before positive for the same
number. That order is the same from the folder and from the archive, and it interleaves the
classes, so `limit=` gives a balanced sample. Labels: neg=0, pos=1; `unsup` (when present) gives
the 50,000 unlabelled reviews with label -1 for language-model pretraining.

Text is kept exactly as written, HTML line breaks (`<br /><br />`) included, because that is what
published IMDB numbers were measured on; `replace_br=True` turns each `<br />` (or `<br>`,
`<br/>`) into one space.
"""

from __future__ import annotations

import os
import re
import tarfile
from typing import Iterator

import numpy as np

from bertlab.data.tasks.registry import UNLABELLED, Split

CLASS_FOLDERS = {"neg": 0, "pos": 1}
# split -> (its folder under aclImdb/, {class folder: label}); unsup lives in train/unsup.
SPLITS = {"train": ("train", CLASS_FOLDERS), "test": ("test", CLASS_FOLDERS),
          "unsup": ("train", {"unsup": UNLABELLED})}
_REVIEW_NAME = re.compile(r"(\d+)_(\d+)\.txt")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")


def load_imdb(data_dir: str, split: str, *, limit: int | None = None,
              replace_br: bool = False) -> Split:
    """`split` (train, test or unsup) from a folder holding aclImdb/, aclImdb/ itself, or the
    .tar.gz archive."""
    if split not in SPLITS:
        raise ValueError(f"IMDB has no split {split!r}; its splits: {', '.join(SPLITS)}")
    if os.path.isfile(data_dir) and data_dir.endswith(_ARCHIVE_SUFFIXES):
        reviews = list(_archive_reviews(data_dir, split))
    elif os.path.isdir(data_dir):
        reviews = list(_folder_reviews(data_dir, split))
    else:
        raise FileNotFoundError(f"{data_dir}: not a folder nor a .tar.gz/.tgz/.tar archive of "
                                f"the aclImdb layout")
    if not reviews:
        folder, classes = SPLITS[split]
        raise FileNotFoundError(f"{data_dir}: no {folder}/{{{','.join(classes)}}}/*.txt "
                                f"reviews found")
    reviews.sort(key=lambda review: review[0])
    if limit is not None:
        reviews = reviews[:limit]
    texts = [_BR.sub(" ", text) if replace_br else text for _, _, _, text in reviews]
    return Split(texts=texts, text_pairs=None,
                 labels=np.asarray([label for _, label, _, _ in reviews], np.int32),
                 ids=[name for _, _, name, _ in reviews], dropped=0, source=data_dir)


def _sort_key(file_name: str, label: int) -> tuple:
    match = _REVIEW_NAME.fullmatch(file_name)
    # Files not named <number>_<rating>.txt (hand-made sets) follow the numbered ones by name.
    return (0, int(match.group(1)), label, file_name) if match else (1, 0, label, file_name)


def _split_folder(data_dir: str, folder: str) -> str:
    candidates = [os.path.join(data_dir, "aclImdb", folder), os.path.join(data_dir, folder)]
    for path in candidates:
        if os.path.isdir(path):
            return path
    raise FileNotFoundError(f"IMDB: none of {', '.join(candidates)} is a folder")


def _folder_reviews(data_dir: str, split: str) -> Iterator[tuple]:
    folder, classes = SPLITS[split]
    split_path = _split_folder(data_dir, folder)
    for class_folder, label in classes.items():
        path = os.path.join(split_path, class_folder)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: missing (expected {folder}/{class_folder}/*.txt)")
        for file_name in os.listdir(path):
            if file_name.endswith(".txt"):
                with open(os.path.join(path, file_name), "rb") as f:
                    text = _decode(f.read(), os.path.join(path, file_name))
                yield (_sort_key(file_name, label), label,
                       f"{folder}/{class_folder}/{file_name}", text)


def _archive_reviews(archive: str, split: str) -> Iterator[tuple]:
    folder, classes = SPLITS[split]
    with tarfile.open(archive, mode="r|*") as tar:
        for member in tar:
            parts = member.name.split("/")
            if (not member.isfile() or len(parts) < 3 or parts[-3] != folder
                    or parts[-2] not in classes or not parts[-1].endswith(".txt")):
                continue
            text = _decode(tar.extractfile(member).read(), f"{archive}:{member.name}")
            label = classes[parts[-2]]
            yield (_sort_key(parts[-1], label), label, "/".join(parts[-3:]), text)


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{where}: not UTF-8 ({err})") from None
