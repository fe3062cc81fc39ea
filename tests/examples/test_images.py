"""The image example: PNG dataset writing (local and S3), the folder data module, the CNN, export."""

from __future__ import annotations

import importlib
import io
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import lightning_lib as pl
from lightning_lib.storage import open_store
from tests.helpers import quiet_trainer_kwargs

pytest.importorskip("sklearn")
pytest.importorskip("PIL")
pytest.importorskip("torchmetrics")

from PIL import Image

from examples.images import (
    DigitsCNN,
    ImageFolderDataModule,
    ImagePreprocessor,
    write_digits_pngs,
)

DIGITS = 1797


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as the uint8 pixels the PNGs hold, and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.rint(digits.images * (255.0 / 16)).astype(np.uint8), digits.target


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("digits_png")
    assert write_digits_pngs(str(root)) == DIGITS
    return root


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    root = tmp_path / "small"
    write_digits_pngs(str(root), limit=60)
    return root


@pytest.fixture(scope="module")
def fitted(digits_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.Trainer, DigitsCNN, Any]:
    pl.seed_everything(0)
    datamodule = ImageFolderDataModule(str(digits_root), batch_size=64)
    model = DigitsCNN()
    trainer = pl.Trainer(**quiet_trainer_kwargs(tmp_path_factory.mktemp("fit"), max_epochs=3))
    trainer.fit(model, datamodule=datamodule)
    return trainer, model, datamodule


# -- the dataset writer ---------------------------------------------------------------------------------


def test_layout_splits_and_labels(digits_root: Path) -> None:
    pixels, targets = _digits()
    files = _files(digits_root)
    assert len(files) == DIGITS
    seen: dict[str, set[int]] = {}
    for key, data in files.items():
        split, label, name = key.split("/")
        index = int(name.removesuffix(".png"))
        assert label == str(targets[index])
        seen.setdefault(split, set()).add(index)
        if index % 97 == 0:  # a sample of the files holds exactly the digit's pixels
            with Image.open(io.BytesIO(data)) as image:
                assert image.format == "PNG" and image.mode == "L"
                np.testing.assert_array_equal(np.asarray(image), pixels[index])
    assert {k: len(v) for k, v in seen.items()} == {"train": 1257, "val": 270, "test": 270}
    assert set().union(*seen.values()) == set(range(DIGITS))
    # the same split as the table example for the same seed
    from examples.digits import DigitsDataModule

    table = DigitsDataModule(seed=0)
    table.setup("fit")
    assert table.val_set is not None
    val_rows = sorted(table.val_set.tensors[1].tolist())
    assert val_rows == sorted(int(targets[i]) for i in seen["val"])


def test_writing_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert write_digits_pngs(str(first), limit=80) == 80
    assert write_digits_pngs(str(second), limit=80) == 80
    assert _files(first) == _files(second)

    mtimes = {p: p.stat().st_mtime_ns for p in first.rglob("*.png")}
    assert write_digits_pngs(str(first), limit=80) == 0
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*.png")} == mtimes

    # an interrupted write is completed, and only what is missing is written
    victim = sorted(mtimes)[5]
    victim.unlink()
    assert write_digits_pngs(str(first), limit=80) == 1
    assert _files(first) == _files(second)
    assert write_digits_pngs(str(first), limit=100) == 20


def test_writing_refuses_a_layout_made_with_other_arguments(tmp_path: Path) -> None:
    write_digits_pngs(str(tmp_path), limit=30)
    with pytest.raises(ValueError, match=r"seed=1.*from another split") as info:
        write_digits_pngs(str(tmp_path), seed=1, limit=30)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 0.0}, "0 < val_fraction < 1, received 0.0"),
        ({"test_fraction": 1.5}, "0 < test_fraction < 1, received 1.5"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction \\+ test_fraction < 1"),
        ({"limit": 0}, "limit >= 1 or None, received 0"),
    ],
)
def test_writing_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_digits_pngs(str(tmp_path / "never"), **kwargs)
    assert not (tmp_path / "never").exists()


@pytest.mark.services
def test_s3_dataset_matches_the_local_one(s3_endpoint: str, tmp_path: Path) -> None:
    root = f"{s3_endpoint}/{uuid.uuid4().hex}/digits"
    local = tmp_path / "local"
    assert write_digits_pngs(root, limit=150) == 150
    assert write_digits_pngs(str(local), limit=150) == 150
    store = open_store(root)
    listed = store.list()
    assert write_digits_pngs(root, limit=150) == 0
    assert store.list() == listed  # nothing rewritten: same keys, sizes and times
    expected = _files(local)
    assert {info.key: store.get_bytes(info.key) for info in listed} == expected

    on_s3, on_disk = (
        ImageFolderDataModule(root, batch_size=32),
        ImageFolderDataModule(str(local), batch_size=32),
    )
    assert on_s3.data_sources() == [f"{root}/train", f"{root}/val", f"{root}/test"]
    on_s3.setup("fit")
    on_disk.setup("fit")
    assert on_s3.state_dict() == on_disk.state_dict()
    for split in ("train_dataloader", "val_dataloader"):
        for (x_s3, y_s3), (x_disk, y_disk) in zip(getattr(on_s3, split)(), getattr(on_disk, split)()):
            assert torch.equal(x_s3, x_disk) and torch.equal(y_s3, y_disk)


@pytest.mark.services
def test_generate_on_s3_then_an_unreadable_object_is_named(s3_endpoint: str) -> None:
    root = f"{s3_endpoint}/{uuid.uuid4().hex}/digits"
    datamodule = ImageFolderDataModule(root, generate=True, generate_limit=40)
    datamodule.prepare_data()
    assert len(open_store(root).list()) == 40
    open_store(root).put_bytes("val/3/broken.png", b"not a png")
    with pytest.raises(ValueError, match=f"{re.escape(root)}/val/3/broken.png to be a readable PNG"):
        datamodule.setup("fit")
    with pytest.raises(ValueError, match="received nothing"):
        ImageFolderDataModule(f"{s3_endpoint}/{uuid.uuid4().hex}/absent").setup("fit")


# -- the data module ------------------------------------------------------------------------------------


def test_loaders_hold_each_split_with_its_labels(digits_root: Path) -> None:
    pixels, targets = _digits()
    datamodule = ImageFolderDataModule(str(digits_root), batch_size=50)
    datamodule.setup("fit")
    datamodule.setup("test")
    assert datamodule.classes == [str(c) for c in range(10)] and datamodule.num_classes == 10
    assert datamodule.image_size == (8, 8)
    preprocess = datamodule.preprocessor()
    for split, loader in (("val", datamodule.val_dataloader()), ("test", datamodule.test_dataloader())):
        keys = sorted(p.relative_to(digits_root).as_posix() for p in (digits_root / split).rglob("*.png"))
        indices = [int(k.rsplit("/", 1)[1].removesuffix(".png")) for k in keys]
        x = torch.cat([batch[0] for batch in loader])
        y = torch.cat([batch[1] for batch in loader])
        # the loader's input is exactly the preprocessor applied to the raw images, in folder order
        raw = torch.from_numpy(pixels[indices])
        assert torch.equal(x, preprocess(raw))
        assert y.tolist() == targets[indices].tolist()
    assert sum(len(y) for _, y in datamodule.train_dataloader()) == 1257


def test_preprocessor_standardises_with_the_training_pixels(digits_root: Path) -> None:
    datamodule = ImageFolderDataModule(str(digits_root), batch_size=64)
    datamodule.setup("fit")
    preprocess = datamodule.preprocessor()
    assert preprocess is datamodule.preprocessor()  # one module for the loaders and for serving
    assert isinstance(preprocess, ImagePreprocessor)
    x = torch.cat([x for x, _ in datamodule.train_dataloader()])
    assert x.dtype == torch.float32 and x.shape == (1257, 1, 8, 8)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1.0) < 1e-3
    assert {name for name, _ in preprocess.named_buffers()} == {"scale", "mean", "std"}


def test_train_order_is_seeded_and_leaves_the_global_rng_alone(digits_root: Path) -> None:
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first, other = (
        ImageFolderDataModule(str(digits_root), seed=1),
        ImageFolderDataModule(str(digits_root), seed=2),
    )
    first.setup("fit")
    other.setup("fit")
    labels = [torch.cat([y for _, y in dm.train_dataloader()]) for dm in (first, first, other)]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(labels[0], labels[1]) and not torch.equal(labels[0], labels[2])


def test_generate_writes_in_prepare_data_without_setting_state(tmp_path: Path) -> None:
    root = tmp_path / "generated"
    datamodule = ImageFolderDataModule(str(root), generate=True, generate_limit=50)
    datamodule.prepare_data()
    assert len(list(root.rglob("*.png"))) == 50
    assert datamodule.classes is None and datamodule.mean is None and datamodule.state_dict() == {}
    datamodule.prepare_data()  # a second call finds the dataset complete
    assert len(list(root.rglob("*.png"))) == 50


def test_restored_state_needs_no_training_split(small_root: Path, tmp_path: Path) -> None:
    trained = ImageFolderDataModule(str(small_root))
    trained.setup("fit")
    state = trained.state_dict()
    assert set(state) == {"classes", "image_size", "mean", "std", "serving_example"}

    # a root holding the test split alone: the restored state stands in for the training split
    only_test = tmp_path / "only_test"
    only_test.mkdir()
    (small_root / "test").rename(only_test / "test")
    restored = ImageFolderDataModule(str(only_test))
    restored.load_state_dict(state)
    restored.setup("predict")
    assert restored.classes == trained.classes
    assert torch.equal(restored.serving_example(), trained.serving_example())
    assert restored.preprocessor().state_dict().keys() == trained.preprocessor().state_dict().keys()
    for name, buffer in restored.preprocessor().state_dict().items():
        assert torch.equal(buffer, trained.preprocessor().state_dict()[name])
    assert len(list(restored.predict_dataloader())) >= 1


def test_before_setup_the_hooks_say_what_is_missing(small_root: Path) -> None:
    datamodule = ImageFolderDataModule(str(small_root))
    with pytest.raises(RuntimeError, match=r"setup\('fit'\) or load_state_dict"):
        datamodule.preprocessor()
    with pytest.raises(RuntimeError, match="serving_example"):
        datamodule.serving_example()
    with pytest.raises(RuntimeError, match="must load the train split"):
        datamodule.train_dataloader()
    assert datamodule.data_sources() == [str(small_root / s) for s in ("train", "val", "test")]


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"root": ""}, "root to be a folder or an s3://bucket/prefix"),
        ({"batch_size": 0}, "batch_size >= 1, received 0"),
        ({"num_workers": -1}, "num_workers >= 0, received -1"),
        ({"image_size": [8]}, r"image_size to be a positive int or \[height, width\]"),
        ({"image_size": 0}, "image_size to be a positive int"),
        ({"generate_limit": 0}, "generate_limit >= 1 or None, received 0"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"root": "somewhere", **kwargs}
    with pytest.raises(ValueError, match=message):
        ImageFolderDataModule(**arguments)


def test_a_missing_root_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*no such folder.*generate=True"):
        ImageFolderDataModule(str(missing)).setup("fit")


def test_a_split_without_class_folders_is_named(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "README.txt").write_text("images go in class folders")
    with pytest.raises(ValueError, match=r"train to hold one folder per class.*received 1 other files"):
        ImageFolderDataModule(str(tmp_path)).setup("fit")
    digits = tmp_path / "digits"
    write_digits_pngs(str(digits), limit=40)
    for png in (digits / "val").rglob("*.png"):
        png.unlink()
    with pytest.raises(ValueError, match=r"val to hold one folder per class.*received nothing"):
        ImageFolderDataModule(str(digits)).setup("fit")


def test_an_unreadable_png_is_named(small_root: Path) -> None:
    bad = small_root / "train" / "4" / "corrupt.png"
    bad.write_bytes(_png(np.zeros((8, 8), np.uint8))[:30])  # a truncated file
    with pytest.raises(ValueError, match=f"{re.escape(str(bad))} to be a readable PNG image"):
        ImageFolderDataModule(str(small_root)).setup("fit")
    bad.write_bytes(b"\xff\xd8\xff not an image")
    with pytest.raises(ValueError, match=f"{re.escape(str(bad))} to be a readable PNG image"):
        ImageFolderDataModule(str(small_root)).setup("fit")


def test_an_image_of_another_format_is_refused(small_root: Path) -> None:
    bad = small_root / "train" / "4" / "really_a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad, format="BMP")
    with pytest.raises(ValueError, match=f"{re.escape(str(bad))} to be a readable PNG image.*BMP"):
        ImageFolderDataModule(str(small_root)).setup("fit")


def test_mixed_image_sizes_are_named(small_root: Path) -> None:
    odd = sorted((small_root / "val").iterdir())[0] / "odd.png"
    odd.write_bytes(_png(np.zeros((9, 8), np.uint8)))
    with pytest.raises(
        ValueError, match=rf"8x8 \(height x width\) like .*, received 9x8 in {re.escape(str(odd))}"
    ):
        ImageFolderDataModule(str(small_root)).setup("fit")
    with pytest.raises(ValueError, match=r"be 16x16 \(height x width\) as image_size says, received 8x8"):
        ImageFolderDataModule(str(small_root), image_size=16).setup("fit")


def test_a_class_unknown_to_training_is_named(small_root: Path) -> None:
    stray = small_root / "val" / "cat"
    stray.mkdir()
    (stray / "0001.png").write_bytes(_png(np.zeros((8, 8), np.uint8)))
    with pytest.raises(ValueError, match=r"val to be training classes .*, received \['cat'\]"):
        ImageFolderDataModule(str(small_root)).setup("fit")


def test_hidden_and_other_files_are_ignored(small_root: Path) -> None:
    reference = ImageFolderDataModule(str(small_root))
    reference.setup("fit")
    folder = sorted((small_root / "train").iterdir())[0]
    (folder / "._0001.png").write_bytes(b"macOS metadata, not an image")
    (folder / "notes.txt").write_text("not an image either")
    datamodule = ImageFolderDataModule(str(small_root))
    datamodule.setup("fit")
    assert datamodule.state_dict() == reference.state_dict()


def test_loader_workers_give_the_same_batches(small_root: Path) -> None:
    in_process = ImageFolderDataModule(str(small_root), batch_size=16, seed=3)
    with_workers = ImageFolderDataModule(str(small_root), batch_size=16, seed=3, num_workers=1)
    in_process.setup("fit")
    with_workers.setup("fit")
    for (x, y), (x_worker, y_worker) in zip(
        in_process.train_dataloader(), with_workers.train_dataloader(), strict=True
    ):
        assert torch.equal(x, x_worker) and torch.equal(y, y_worker)


def test_colour_images_are_read_as_grayscale(small_root: Path) -> None:
    colour = small_root / "train" / "0" / "colour.png"
    Image.new("RGB", (8, 8), (255, 255, 255)).save(colour)
    datamodule = ImageFolderDataModule(str(small_root))
    datamodule.setup("fit")
    x = torch.cat([x for x, _ in datamodule.train_dataloader()])
    white = datamodule.preprocessor()(torch.full((1, 8, 8), 255, dtype=torch.uint8))
    assert any(torch.equal(row, white[0]) for row in x)


# -- the model ------------------------------------------------------------------------------------------


def test_the_pipeline_can_import_both_classes() -> None:
    module = importlib.import_module("examples.images")
    assert issubclass(module.DigitsCNN, pl.LightningModule)
    assert issubclass(module.ImageFolderDataModule, pl.LightningDataModule)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, "num_classes >= 2, received 1"),
        ({"channels": 0}, "channels >= 1, received 0"),
        ({"dropout": 1.0}, "0 <= dropout < 1, received 1.0"),
        ({"lr": 0.0}, "lr > 0, received 0.0"),
        ({"weight_decay": -1.0}, "weight_decay >= 0, received -1.0"),
    ],
)
def test_bad_model_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DigitsCNN(**kwargs)


def test_fit_reaches_a_useful_accuracy_with_epoch_metrics(fitted: tuple[pl.Trainer, DigitsCNN, Any]) -> None:
    trainer, model, datamodule = fitted
    metrics = trainer.callback_metrics
    assert {"train_loss", "train_acc_step", "train_acc_epoch", "val_loss", "val_acc"} <= set(metrics)
    assert float(metrics["val_acc"]) > 0.9

    # val_acc is the metric computed over the whole validation epoch, not a mean of batch values
    results = trainer.validate(model, datamodule=datamodule, verbose=False)
    model.eval()
    with torch.no_grad():
        correct = [(model(x).argmax(1) == y) for x, y in datamodule.val_dataloader()]
    expected = torch.cat(correct).float().mean().item()
    assert results[0]["val_acc"] == pytest.approx(expected, abs=1e-6)
    # reset after each epoch: a second validate gives the same value, not an accumulation
    assert trainer.validate(model, datamodule=datamodule, verbose=False)[0]["val_acc"] == pytest.approx(
        expected
    )
    tested = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    assert tested["test_acc"] > 0.9

    predictions = torch.cat(trainer.predict(model, datamodule=datamodule))
    labels = torch.cat([y for _, y in datamodule.predict_dataloader()])
    assert predictions.dtype == torch.int64
    assert (predictions == labels).float().mean().item() == pytest.approx(tested["test_acc"], abs=1e-6)


def test_checkpoint_round_trip_with_weights_only(
    fitted: tuple[pl.Trainer, DigitsCNN, Any], tmp_path: Path
) -> None:
    trainer, model, datamodule = fitted
    path = tmp_path / "digits.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["num_classes"] == 10
    assert checkpoint["datamodule_hyper_parameters"]["root"] == datamodule.root

    restored_model = DigitsCNN.load_from_checkpoint(path)
    restored_data = ImageFolderDataModule(**checkpoint["datamodule_hyper_parameters"])
    restored_data.load_state_dict(checkpoint["ImageFolderDataModule"])
    restored_data.setup("predict")
    model.eval()
    restored_model.eval()
    with torch.no_grad():
        for (x, _), (x_restored, _) in zip(datamodule.test_dataloader(), restored_data.test_dataloader()):
            assert torch.equal(x, x_restored)
            assert torch.equal(model(x), restored_model(x_restored))


def test_exported_preprocessor_and_model_give_the_loader_s_logits(
    fitted: tuple[pl.Trainer, DigitsCNN, Any], digits_root: Path
) -> None:
    _, model, datamodule = fitted
    model.eval()
    example = datamodule.serving_example()
    assert example.dtype == torch.uint8 and example.shape == (8, 8, 8)
    exported = torch.export.export(nn.Sequential(datamodule.preprocessor(), model), (example,))

    # the loader's rows holding the example's images (raw pixels from the files, in the loader's order)
    pixels, _ = _digits()
    keys = sorted(p.relative_to(digits_root).as_posix() for p in (digits_root / "val").rglob("*.png"))
    raw = torch.from_numpy(pixels[[int(k.rsplit("/", 1)[1].removesuffix(".png")) for k in keys]])
    rows = [next(i for i, image in enumerate(raw) if torch.equal(image, wanted)) for wanted in example]
    x = torch.cat([batch[0] for batch in datamodule.val_dataloader()])
    labels = torch.cat([batch[1] for batch in datamodule.val_dataloader()])
    assert len(set(labels[rows].tolist())) >= 5  # the example shows several classes
    with torch.no_grad():
        expected = model(x[rows])
        torch.testing.assert_close(exported.module()(example), expected, rtol=1e-5, atol=1e-6)
