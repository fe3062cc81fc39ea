"""Bundled example that is not a table: a small CNN classifying PNG images, one subfolder per class.

The images are scikit-learn's 8x8 digits written out as PNG files by ``write_digits_pngs`` (nothing is
downloaded). ``ImageFolderDataModule`` reads any local folder or ``s3://bucket/prefix`` laid out as
``<root>/{train,val,test}/<class>/<name>.png`` and ``DigitsCNN`` learns from it, logging torchmetrics
objects. The data module implements the pipeline's optional hooks: ``data_sources`` (the split folders,
fingerprinted from listings), ``preprocessor`` (raw uint8 images to the model's input; its loaders use
the very same module, so serving and training apply identical arithmetic) and ``serving_example``.

Decoded images are held in memory as uint8 (one byte per pixel): right for an example and for datasets of
up to a few hundred thousand small images; a dataset larger than memory belongs in a streaming data module.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, default_collate
from torchmetrics.classification import MulticlassAccuracy

import lightning_lib as pl
from examples.loaders import seeded_loader
from lightning_lib.storage import ObjectStore, is_remote, join_uri, local_path, open_store

SPLITS = ("train", "val", "test")
# the splits each stage reads; predicting scores the test split, as the table example does
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
SERVING_EXAMPLE_SIZE = 8
# one small object per request (S3) or per synced file (a local store): reads and writes overlap this many
# (boto3's client is thread-safe and the S3 store's connection pool holds at least 16)
_IO_THREADS = 16
_DIGIT_MAX = 16  # scikit-learn's digits are counts 0..16 of a 4x4 block of a 32x32 bitmap
_DIGIT_KEY = re.compile(r"(?:train|val|test)/\d/\d{4}\.png")

_T = TypeVar("_T")
_R = TypeVar("_R")


def _map_io(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``fn`` over ``items`` in order, concurrently: each call waits on the network (S3) or the disk (a
    local store syncs every file it publishes)."""
    if len(items) < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=_IO_THREADS) as pool:
        return list(pool.map(fn, items))


# -- the dataset ----------------------------------------------------------------------------------------


def _digits_layout(seed: int, val_fraction: float, test_fraction: float) -> tuple[np.ndarray, list[str]]:
    """The digits as uint8 images and each one's key ``<split>/<label>/<index>.png``."""
    from sklearn.datasets import load_digits  # deferred: scikit-learn is needed only to write the PNGs

    digits = load_digits()
    count = len(digits.target)
    # the split of examples.digits for the same seed and fractions: test first, then validation
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val, n_test = round(count * val_fraction), round(count * test_fraction)
    split_of = [""] * count
    for rank, index in enumerate(order):
        split_of[index] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    keys = [f"{split_of[i]}/{digits.target[i]}/{i:04d}.png" for i in range(count)]
    pixels = np.rint(digits.images * (255.0 / _DIGIT_MAX)).astype(np.uint8)
    return pixels, keys


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_digits_pngs(
    root: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    limit: int | None = None,
) -> int:
    """Write scikit-learn's 1,797 digits as ``<root>/<split>/<label>/<index>.png``; return how many were written.

    ``root`` is a local folder or an ``s3://bucket/prefix``. The split is a seeded permutation (the one
    ``examples.digits`` uses for the same arguments) and the PNG bytes depend only on the pixels (for a given
    Pillow and zlib), so every run produces the same objects. A listing of the split folders decides what
    is missing and only that is written: a complete dataset is left untouched (same mtimes and ETags,
    hence the same fingerprint), and a write that was interrupted is completed. ``limit`` writes only the digits with index below it (a small
    dataset for quick runs); each digit's split does not depend on it.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"Expected 0 < {name} < 1, received {value}.")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"Expected val_fraction + test_fraction < 1, received {val_fraction} + {test_fraction}."
        )
    if limit is not None and limit < 1:
        raise ValueError(f"Expected limit >= 1 or None, received {limit}.")
    pixels, keys = _digits_layout(seed, val_fraction, test_fraction)
    store = open_store(root)
    present = {info.key for split in SPLITS for info in store.list(f"{split}/")}
    layout = set(keys)
    # digits filed under another split would appear in two splits at once: refuse to mix layouts
    foreign = sorted(key for key in present if _DIGIT_KEY.fullmatch(key) and key not in layout)
    if foreign:
        raise ValueError(
            f"Expected {root} to hold the digits split with seed={seed}, val_fraction={val_fraction},"
            f" test_fraction={test_fraction}; received {join_uri(root, foreign[0])} from another split."
            " Write to an empty folder or prefix."
        )
    missing = [
        i for i in range(len(keys) if limit is None else min(limit, len(keys))) if keys[i] not in present
    ]
    _map_io(lambda i: store.put_bytes(keys[i], _png_bytes(pixels[i])), missing)
    return len(missing)


# -- preprocessing ------------------------------------------------------------------------------------


class ImagePreprocessor(nn.Module):
    """Raw grayscale images, uint8 ``(N, H, W)``, to the model's float32 input ``(N, 1, H, W)``.

    Pixels are scaled to [0, 1] and standardised with the training pixels' mean and std. These are
    buffers, so they follow ``.to(device)``, ``state_dict`` and ``torch.export``; the arithmetic has no
    data-dependent branches, so the module exports as it is.
    """

    scale: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        if not std > 0:
            raise ValueError(f"Expected std > 0, received {std}.")
        self.register_buffer("scale", torch.tensor(1.0 / 255.0, dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return ((images.to(torch.float32) * self.scale - self.mean) / self.std).unsqueeze(1)


class _PreprocessBatch:
    """``collate_fn``: stack the raw images and labels, then preprocess the whole batch as serving does."""

    def __init__(self, preprocessor: nn.Module) -> None:
        self.preprocessor = preprocessor

    def __call__(self, samples: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = default_collate(samples)
        with torch.no_grad():
            return self.preprocessor(images), labels


# -- the data module ----------------------------------------------------------------------------------


def _image_size(value: int | Sequence[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    size = [value, value] if isinstance(value, int) else list(value)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
        raise ValueError(
            f"Expected image_size to be a positive int or [height, width] of positive ints, received {value!r}."
        )
    return size[0], size[1]


class ImageFolderDataModule(pl.LightningDataModule):
    """Grayscale PNG images under ``<root>/{train,val,test}/<class>/``, as (image, label) batches.

    ``root`` is a local folder or an ``s3://bucket/prefix``. Classes are the training split's folder
    names, sorted (their index is the label); the validation and test splits may only use those. Every
    image must have the same size (``image_size``, ``[height, width]`` or one int for squares, or else the
    first training image's); colour images are converted to grayscale; files other than ``*.png`` and
    hidden files are ignored. ``generate=True`` makes ``prepare_data`` write the digits dataset to
    ``root`` first (the first ``generate_limit`` digits only, if set).

    The training pixels' mean and std, the classes, the image size and a few raw images for serving are
    the module's state (``state_dict``), so a checkpoint preprocesses and serves as training did.
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        image_size: int | list[int] | None = None,
        generate: bool = False,
        generate_limit: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(root, str | os.PathLike) or not os.fspath(root):
            raise ValueError(f"Expected root to be a folder or an s3://bucket/prefix, received {root!r}.")
        if batch_size < 1:
            raise ValueError(f"Expected batch_size >= 1, received {batch_size}.")
        if num_workers < 0:
            raise ValueError(f"Expected num_workers >= 0, received {num_workers}.")
        if generate_limit is not None and generate_limit < 1:
            raise ValueError(f"Expected generate_limit >= 1 or None, received {generate_limit}.")
        self.save_hyperparameters()
        self.root = os.fspath(root)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.image_size = _image_size(image_size)
        # where the expected size came from, for the message that refuses an image of another size
        self._size_origin = "as image_size says"
        self.generate = generate
        self.generate_limit = generate_limit
        self.classes: list[str] | None = None
        self.mean: float | None = None
        self.std: float | None = None
        self._example: torch.Tensor | None = None
        self._datasets: dict[str, TensorDataset] = {}
        self._preprocessor: ImagePreprocessor | None = None

    @property
    def num_classes(self) -> int | None:
        """How many classes the training split has (None before ``setup`` or a restored state)."""
        return None if self.classes is None else len(self.classes)

    # -- optional pipeline hooks ------------------------------------------------------------------------

    def data_sources(self) -> list[str]:
        """The split folders (local paths or ``s3://`` prefixes) whose listings identify the data."""
        return [join_uri(self.root, split) for split in SPLITS]

    def preprocessor(self) -> ImagePreprocessor:
        """Raw uint8 ``(N, H, W)`` images to the model's input; the module the loaders themselves apply."""
        if self.mean is None or self.std is None:
            raise RuntimeError(
                "ImageFolderDataModule.preprocessor() needs the training statistics: "
                "call setup('fit') or load_state_dict(...) first."
            )
        if self._preprocessor is None:
            self._preprocessor = ImagePreprocessor(self.mean, self.std)
        return self._preprocessor

    def serving_example(self) -> torch.Tensor:
        """Up to eight raw uint8 ``(N, H, W)`` images spread over the validation split, for a signature."""
        if self._example is None:
            raise RuntimeError(
                "ImageFolderDataModule.serving_example() needs images: call setup(...) or load_state_dict(...) first."
            )
        return self._example.clone()

    # -- data -------------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Write the digits PNGs to ``root`` when ``generate`` asks for it (rank zero only; no state set)."""
        if self.generate:
            write_digits_pngs(self.root, limit=self.generate_limit)

    def setup(self, stage: str | None = None) -> None:
        """Read the splits the stage needs (once); the training split too while its statistics are unknown."""
        needed = list(_STAGE_SPLITS.get(stage or "", SPLITS))
        if (self.mean is None or self.classes is None) and "train" not in needed:
            needed.insert(0, "train")
        missing = [split for split in needed if split not in self._datasets]
        if not missing:
            return
        if not is_remote(self.root) and not os.path.isdir(local_path(self.root)):
            raise FileNotFoundError(
                f"Expected root to be an existing folder or an s3://bucket/prefix, received {self.root!r}"
                " (no such folder). Pass generate=True to write the digits dataset there."
            )
        store = open_store(self.root)
        for split in missing:
            self._datasets[split] = self._load_split(store, split)
        if self.mean is None:
            self._fit_statistics(self._datasets["train"].tensors[0])
        if self._example is None:
            split = next(s for s in ("val", "test", "train") if s in self._datasets)
            images = self._datasets[split].tensors[0]
            # spread over the split, which is ordered by class, so the example shows several classes
            rows = torch.linspace(0, len(images) - 1, min(SERVING_EXAMPLE_SIZE, len(images))).long()
            self._example = images[rows].clone()

    def _list_split(self, store: ObjectStore, split: str) -> dict[str, list[str]]:
        """The PNG keys of each class folder of ``split``; other and hidden files are ignored."""
        listing = store.list(f"{split}/")
        by_class: dict[str, list[str]] = {}
        for info in listing:
            parts = info.key.split("/")
            # hidden files (".DS_Store", macOS's "._name.png" companions) are not images of the dataset
            if len(parts) >= 3 and parts[-1].lower().endswith(".png") and not parts[-1].startswith("."):
                by_class.setdefault(parts[1], []).append(info.key)
        if not by_class:
            found = f"{len(listing)} other files" if listing else "nothing"
            raise ValueError(
                f"Expected {join_uri(self.root, split)} to hold one folder per class with PNG images"
                f" (<class>/<name>.png), received {found}."
            )
        return by_class

    def _load_split(self, store: ObjectStore, split: str) -> TensorDataset:
        by_class = self._list_split(store, split)
        if self.classes is None:
            if split != "train":
                raise RuntimeError("The classes come from the training split; it must be read first.")
            self.classes = sorted(by_class)
        unknown = sorted(set(by_class) - set(self.classes))
        if unknown:
            raise ValueError(
                f"Expected the class folders of {join_uri(self.root, split)} to be training classes"
                f" {self.classes}, received {unknown}."
            )
        keys = [key for name in self.classes for key in sorted(by_class.get(name, []))]
        labels = [label for label, name in enumerate(self.classes) for _ in by_class.get(name, [])]
        images = _map_io(lambda key: self._decode(key, store.get_bytes(key)), keys)
        self._check_sizes(keys, images)
        return TensorDataset(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long))

    def _decode(self, key: str, data: bytes) -> np.ndarray:
        uri = join_uri(self.root, key)
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.format != "PNG":
                    raise ValueError(f"it is a {image.format} image")
                return np.asarray(image.convert("L"), dtype=np.uint8)
        # what Pillow raises for a corrupt, foreign or implausibly large file
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ValueError(
                f"Expected {uri} to be a readable PNG image, received an unreadable file: {exc}"
            ) from exc

    def _check_sizes(self, keys: list[str], images: list[np.ndarray]) -> None:
        if self.image_size is None:
            self.image_size = (int(images[0].shape[0]), int(images[0].shape[1]))
            self._size_origin = f"like {join_uri(self.root, keys[0])}"
        for key, pixels in zip(keys, images):
            if pixels.shape != self.image_size:
                height, width = self.image_size
                raise ValueError(
                    f"Expected every image to be {height}x{width} (height x width) {self._size_origin},"
                    f" received {pixels.shape[0]}x{pixels.shape[1]} in {join_uri(self.root, key)}."
                )

    def _fit_statistics(self, images: torch.Tensor) -> None:
        scaled = images.to(torch.float32) / 255.0
        self.mean = float(scaled.mean())
        std = float(scaled.std()) if scaled.numel() > 1 else 0.0
        # a blank training set has no spread: leave the scale alone rather than divide by ~0
        self.std = std if std > 1e-6 else 1.0
        self._preprocessor = None

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        dataset = self._datasets.get(split)
        if dataset is None:
            raise RuntimeError(
                f"ImageFolderDataModule.setup() must load the {split} split before its dataloader."
            )
        collate = _PreprocessBatch(self.preprocessor())
        return seeded_loader(dataset, self.batch_size, self.seed, shuffle, self.num_workers, collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")

    # -- checkpoint state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Classes, image size, pixel statistics and the serving images, as plain data (``weights_only``)."""
        if self.mean is None or self.std is None or self.classes is None or self.image_size is None:
            return {}
        state: dict[str, Any] = {
            "classes": list(self.classes),
            "image_size": list(self.image_size),
            "mean": self.mean,
            "std": self.std,
        }
        if self._example is not None:
            state["serving_example"] = self._example.tolist()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        size = _image_size(state_dict["image_size"])
        if self.image_size is not None and self.image_size != size:
            raise ValueError(
                f"Expected the checkpoint's image size to be image_size {list(self.image_size)},"
                f" received {list(size) if size else size}."
            )
        self.classes = list(state_dict["classes"])
        self.image_size = size
        self._size_origin = "like the checkpoint's training images"
        self.mean = float(state_dict["mean"])
        self.std = float(state_dict["std"])
        self._preprocessor = None
        if "serving_example" in state_dict:
            self._example = torch.tensor(state_dict["serving_example"], dtype=torch.uint8)


# -- the model ----------------------------------------------------------------------------------------


class DigitsCNN(pl.LightningModule):
    """Two convolutions and an MLP head over ``(N, 1, H, W)`` images; accuracy as torchmetrics objects.

    ``val_acc`` and ``test_acc`` are epoch accuracies computed by the metric at the epoch's end (and reset
    for the next one); ``train_acc`` is logged per step and per epoch (``train_acc_step`` / ``_epoch``).
    """

    def __init__(
        self,
        num_classes: int = 10,
        channels: int = 16,
        hidden: int = 128,
        dropout: float = 0.1,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value, least in (
            ("num_classes", num_classes, 2),
            ("channels", channels, 1),
            ("hidden", hidden, 1),
        ):
            if value < least:
                raise ValueError(f"Expected {name} >= {least}, received {value}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Expected 0 <= dropout < 1, received {dropout}.")
        if lr <= 0:
            raise ValueError(f"Expected lr > 0, received {lr}.")
        if weight_decay < 0:
            raise ValueError(f"Expected weight_decay >= 0, received {weight_decay}.")
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            nn.ReLU(),
            # a fixed 4x4 grid whatever the image size, so the head does not depend on it
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * channels * 16, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        # micro averaging: the fraction of images classified correctly, what "accuracy" means to a reader
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)  # forward: updates the epoch state and returns this batch's accuracy
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", self.train_acc, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc.update(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), sync_dist=True)
        # the metric object, not a number: it is computed over the whole epoch (across processes too)
        self.log("val_acc", self.val_acc, prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.test_acc.update(logits, y)
        self.log("test_loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("test_acc", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self(x).argmax(dim=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
