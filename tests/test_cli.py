"""LightningCLI: the same command lines and config files on pytorch_lightning and lightning_lib give the
same Trainer arguments, model and datamodule arguments, optimizers and saved ``config.yaml``."""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import yaml

import lightning_lib
from tests.helpers import reference_lightning

pytest.importorskip("jsonargparse")


def _cli(pl: ModuleType) -> ModuleType:
    return importlib.import_module(f"{pl.__name__}.cli")


def _demos(pl: ModuleType) -> ModuleType:
    return importlib.import_module(f"{pl.__name__}.demos.boring_classes")


def _model_class(pl: ModuleType) -> type:
    class SizedModel(_demos(pl).BoringModel):  # type: ignore[name-defined,misc]
        def __init__(self, hidden: int = 4, dropout: float = 0.1, name: str = "boring") -> None:
            super().__init__()
            self.save_hyperparameters()

    return SizedModel


def _quiet(root: Path) -> list[str]:
    return [
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.accelerator=cpu",
    ]


def _saved_config(root: Path) -> dict[str, Any]:
    """The config.yaml the run saved, without what names the library or the folder."""
    (path,) = root.rglob("config.yaml")
    text = path.read_text()
    assert text.startswith("# ")  # the dump header names the library and its version
    config = yaml.safe_load(text)
    config["trainer"].pop("default_root_dir")
    # the callbacks' own arguments differ between the libraries (Lightning has more); their classes do not
    config["trainer"]["callbacks"] = [
        cb["class_path"].rsplit(".", 1)[1] for cb in config["trainer"]["callbacks"] or []
    ]
    return config


def _trainer_args(trainer: Any) -> dict[str, Any]:
    names = ["max_epochs", "max_steps", "limit_train_batches", "limit_val_batches", "accumulate_grad_batches"]
    return {name: getattr(trainer, name) for name in names} | {
        "callbacks": sorted(type(cb).__name__ for cb in trainer.callbacks),
        "loggers": [type(lg).__name__ for lg in trainer.loggers],
    }


@pytest.mark.parity
def test_fit_from_the_command_line_matches_lightning(tmp_path: Any) -> None:
    def run(pl: ModuleType, root: Path) -> tuple[Any, ...]:
        args = [
            "fit",
            *_quiet(root),
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.callbacks+=ModelCheckpoint",
            "--trainer.callbacks.save_top_k=0",
            "--trainer.logger=false",
            "--model.hidden=7",
            "--model.name=cli",
            "--seed_everything=3",
            "--optimizer=Adam",
            "--optimizer.lr=0.01",
            "--lr_scheduler=StepLR",
            "--lr_scheduler.step_size=1",
        ]
        cli = _cli(pl).LightningCLI(_model_class(pl), _demos(pl).BoringDataModule, args=args)
        optimizer = cli.trainer.optimizers[0]
        weights = {k: v.clone() for k, v in cli.model.state_dict().items()}
        return (
            dict(cli.model.hparams),
            _trainer_args(cli.trainer),
            type(optimizer).__name__,
            optimizer.param_groups[0]["lr"],
            cli.trainer.global_step,
            _saved_config(root),
            weights,
        )

    expected = run(reference_lightning(), tmp_path / "pl")
    ours = run(lightning_lib, tmp_path / "ours")
    hparams, reference_hparams = ours[0], dict(expected[0])
    reference_hparams.pop(
        "_instantiator", None
    )  # Lightning's load_from_checkpoint support (not carried over)
    assert hparams == reference_hparams == {"hidden": 7, "dropout": 0.1, "name": "cli"}
    assert ours[1:6] == expected[1:6]
    for name, value in expected[6].items():
        torch.testing.assert_close(ours[6][name], value)


@pytest.mark.parity
def test_a_config_file_and_subclass_mode_parse_like_lightning(tmp_path: Any) -> None:
    def run(pl: ModuleType, root: Path) -> tuple[Any, ...]:
        root.mkdir(parents=True)
        config = root / "run.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "trainer": {"max_steps": 3, "accumulate_grad_batches": 2, "logger": False},
                    "model": {"class_path": f"{pl.__name__}.demos.boring_classes.BoringModel"},
                    "data": {"class_path": f"{pl.__name__}.demos.boring_classes.BoringDataModule"},
                }
            )
        )
        cli = _cli(pl).LightningCLI(
            args=["validate", f"--config={config}", *_quiet(root)],
            trainer_defaults={"max_epochs": 5},
            seed_everything_default=11,
            save_config_callback=None,
        )
        return (
            type(cli.model).__name__,
            type(cli.datamodule).__name__,
            _trainer_args(cli.trainer),
            cli.config["validate"]["seed_everything"],
            cli.subcommand,
            cli.trainer.state.fn,
        )

    assert run(lightning_lib, tmp_path / "ours") == run(reference_lightning(), tmp_path / "pl")


@pytest.mark.parity
def test_print_config_prints_what_lightning_prints(tmp_path: Any) -> None:
    def run(pl: ModuleType) -> dict[str, Any]:
        out = io.StringIO()
        with redirect_stdout(out), pytest.raises(SystemExit):
            _cli(pl).LightningCLI(
                _model_class(pl), args=["fit", "--print_config", "--model.hidden=3", "--trainer.max_epochs=4"]
            )
        printed: dict[str, Any] = yaml.safe_load(out.getvalue())
        return printed

    assert run(lightning_lib) == run(reference_lightning())


@pytest.mark.parity
def test_run_false_with_a_dict_of_arguments_matches_lightning(tmp_path: Any) -> None:
    def run(pl: ModuleType, root: Path) -> tuple[Any, ...]:
        args = {
            "trainer": {
                "max_epochs": 2,
                "default_root_dir": str(root),
                "callbacks": [{"class_path": "ModelSummary"}],
                "logger": False,
                "enable_progress_bar": False,
            },
            "model": {"hidden": 9},
            "seed_everything": False,
        }
        cli = _cli(pl).LightningCLI(_model_class(pl), run=False, args=args)
        return cli.subcommand, cli.datamodule, cli.model.hparams.hidden, _trainer_args(cli.trainer)

    assert run(lightning_lib, tmp_path / "ours") == run(reference_lightning(), tmp_path / "pl")


@pytest.mark.parity
def test_reduce_lr_on_plateau_from_the_command_line_watches_its_metric(tmp_path: Any) -> None:
    def run(pl: ModuleType, root: Path) -> Any:
        args = [
            *_quiet(root),
            "--optimizer=SGD",
            "--optimizer.lr=0.5",
            f"--lr_scheduler={pl.__name__}.cli.ReduceLROnPlateau",
            "--lr_scheduler.monitor=train_loss",
            "--lr_scheduler.factor=0.5",
        ]
        cli = _cli(pl).LightningCLI(_model_class(pl), run=False, args=args)
        config = cli.model.configure_optimizers()
        return (
            config["lr_scheduler"]["monitor"],
            type(config["optimizer"]).__name__,
            config["optimizer"].param_groups[0]["lr"],
        )

    assert (
        run(lightning_lib, tmp_path / "ours")
        == run(reference_lightning(), tmp_path / "pl")
        == ("train_loss", "SGD", 0.5)
    )


def test_the_saved_config_is_not_overwritten(tmp_path: Any) -> None:
    from lightning_lib.cli import LightningCLI

    model_class = _model_class(lightning_lib)
    args = [
        "fit",
        *_quiet(tmp_path),
        "--trainer.max_steps=1",
        "--trainer.limit_val_batches=0",
        "--trainer.logger=false",
    ]
    LightningCLI(model_class, args=args)
    assert (tmp_path / "config.yaml").is_file()
    with pytest.raises(RuntimeError, match="to NOT exist"):
        LightningCLI(model_class, args=args)
    LightningCLI(model_class, args=args, save_config_kwargs={"overwrite": True})
    LightningCLI(model_class, args=args, save_config_callback=None)


def test_save_to_log_dir_false_needs_a_save_config_override(tmp_path: Any) -> None:
    from lightning_lib.cli import LightningArgumentParser, SaveConfigCallback

    parser = LightningArgumentParser()
    with pytest.raises(ValueError, match="only makes sense when subclassing"):
        SaveConfigCallback(parser, parser.parse_args([]), save_to_log_dir=False)
    saved: list[Any] = []

    class ToTracker(SaveConfigCallback):
        def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
            saved.append(self.config)

    callback = ToTracker(parser, parser.parse_args([]), save_to_log_dir=False)
    trainer = lightning_lib.Trainer(
        default_root_dir=tmp_path, logger=False, callbacks=[callback], max_steps=1
    )
    trainer.fit(_demos(lightning_lib).BoringModel())
    assert len(saved) == 1 and not list(tmp_path.rglob("config.yaml"))


def test_add_lightning_class_args_refuses_other_classes() -> None:
    from lightning_lib.cli import LightningArgumentParser
    from lightning_lib.utilities.exceptions import MisconfigurationException

    parser = LightningArgumentParser()
    with pytest.raises(MisconfigurationException, match="Cannot add arguments from"):
        parser.add_lightning_class_args(torch.nn.Linear, "linear")
    assert parser.add_lightning_class_args(lightning_lib.callbacks.EarlyStopping, "early_stopping")
    assert parser.callback_keys == ["early_stopping"]


def test_importing_the_library_does_not_import_jsonargparse() -> None:
    code = "import sys, lightning_lib, lightning_lib.callbacks, lightning_lib.tuner; print('jsonargparse' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_without_jsonargparse_the_error_says_what_to_install(monkeypatch: Any) -> None:
    from lightning_lib import cli

    monkeypatch.setattr(cli, "_JSONARGPARSE_AVAILABLE", False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'lightning-lib\[cli\]'"):
        cli.LightningCLI(run=False, args=[])
