"""ModelSummary: the table, counts and sizes, compared with Lightning's where they overlap."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from lightning_lib.callbacks.model_summary import ModelSummary, get_human_readable_count, summarize


class Net(nn.Module):
    def __init__(self, example: bool = False) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.BatchNorm1d(64))
        self.head = nn.Linear(64, 2)
        self.scale = nn.Parameter(torch.ones(3))  # held by the root: "other params"
        self.head.bias.requires_grad_(False)
        self.encoder[2].eval()
        self.example_input_array = torch.zeros(4, 32) if example else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (0, "0  "),
        (123, "123  "),
        (1234, "1.2 K"),
        (2e6, "2.0 M"),
        (3e9, "3.0 B"),
        (4e14, "400 T"),
        (5e15, "5,000 T"),
    ],
)
def test_human_readable_count(number: float, text: str) -> None:
    assert get_human_readable_count(number) == text


def test_table_depth_one() -> None:
    summary = summarize(Net(), max_depth=1)
    lines = str(summary).splitlines()
    assert lines[0].split("|")[1:] == [" Name         ", " Type       ", " Params ", " Mode "]
    assert lines[2] == "0 | encoder      | Sequential | 2.2 K  | train"
    assert lines[3] == "1 | head         | Linear     | 130    | train"
    assert lines[4] == "  | other params | n/a        | 3      | n/a  "
    total = 32 * 64 + 64 + 128 + 130 + 3
    assert summary.total_parameters == total and summary.trainable_parameters == total - 2
    assert lines[6:] == [
        "2.4 K     Trainable params",
        "2         Non-trainable params",
        "2.4 K     Total params",
        f"{total * 4e-6:,.3f}     Total estimated model params size (MB)",
        "4         Modules in train mode",
        "1         Modules in eval mode",
    ]
    assert len(lines[1]) == len(lines[0]) + 6 and set(lines[1]) == {"-"}


def test_depth_all_and_zero_and_sizes() -> None:
    model = Net(example=True)
    summary = summarize(model, max_depth=-1)
    assert summary.layer_names == ["encoder", "encoder.0", "encoder.1", "encoder.2", "head"]
    data = dict(summary.summary_data())
    assert data["In sizes"] == ["[4, 32]", "[4, 32]", "[4, 64]", "[4, 64]", "[4, 64]"]
    assert data["Out sizes"][-1] == "[4, 2]"
    assert model.training and not model.encoder[2].training  # modes restored after the forward
    assert summarize(model, max_depth=2).layer_names == summary.layer_names
    assert summarize(model, max_depth=0).layer_names == []
    with pytest.raises(ValueError, match="`max_depth` can be -1, 0 or > 0, got -2"):
        summarize(model, max_depth=-2)


def test_precision_changes_size() -> None:
    model = Net()
    model._trainer = SimpleNamespace(precision="bf16-true")  # type: ignore[assignment]
    assert summarize(model).model_size == pytest.approx(summarize(Net()).model_size / 2)


def test_callback_logs_at_fit_start(caplog: pytest.LogCaptureFixture) -> None:
    trainer = SimpleNamespace(is_global_zero=True)
    with caplog.at_level(logging.INFO, logger="lightning_lib.callbacks.model_summary"):
        ModelSummary(max_depth=1).on_fit_start(trainer, Net())  # type: ignore[arg-type]
        ModelSummary(max_depth=0).on_fit_start(trainer, Net())  # type: ignore[arg-type]
    assert caplog.text.count("Total params") == 1 and "encoder" in caplog.text


@pytest.mark.parity
@pytest.mark.parametrize("max_depth", [1, -1])
@pytest.mark.parametrize("example", [False, True])
def test_table_matches_lightning_without_flops(max_depth: int, example: bool) -> None:
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.utilities.model_summary import model_summary as pl_summary

    class PLNet(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            net = Net(example)
            self.encoder, self.head, self.scale = net.encoder, net.head, net.scale
            self.example_input_array = net.example_input_array

        def forward(self, x: torch.Tensor) -> Any:
            return self.head(self.encoder(x))

    torch.manual_seed(0)
    theirs = pl_summary.summarize(PLNet(), max_depth=max_depth)
    cols = [c for c in theirs._get_summary_data() if c[0] != "FLOPs"]
    expected = pl_summary._format_summary_table(
        theirs.total_parameters,
        theirs.trainable_parameters,
        theirs.model_size,
        theirs.total_training_modes,
        0,
        *cols,
    )
    expected = expected.rsplit("\n", 1)[0]  # drop "Total Flops"
    assert str(summarize(Net(example), max_depth=max_depth)) == expected


def test_fit_logs_the_summary_by_default(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    import lightning_lib
    from tests.helpers import make_classes, quiet_trainer_kwargs

    classes = make_classes(lightning_lib)
    model = classes["ClassifierModel"]()
    model.example_input_array = torch.zeros(3, 32)
    trainer = lightning_lib.Trainer(
        **quiet_trainer_kwargs(tmp_path, max_epochs=1, enable_model_summary=None, limit_train_batches=1)
    )
    with caplog.at_level(logging.INFO, logger="lightning_lib.callbacks.model_summary"):
        trainer.fit(model, datamodule=classes["ClassifierDataModule"]())
    assert "0 | net  | Sequential | 2.8 K  | train | [3, 32]  | [3, 10]  " in caplog.text
    assert "2.8 K     Total params" in caplog.text
    assert model.training  # the example forward ran in eval mode and restored the mode
