"""Issue 14, point 10: where predict may read and write (the end-to-end refusals are in
tests/flows/test_reproduce_predict.py); the rules on their own, without a model."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import build_parser
from tasks.config import TrainConfig
from tasks.prediction import (
    DATA_ROOTS_ENV,
    PredictionRefused,
    _predictions_parquet,
    check_allowed,
    check_default_output_root,
    check_output,
    data_roots,
    output_beside,
    score,
    written_by_predict,
)


def config(root: str, data_root: str | None = None) -> TrainConfig:
    return TrainConfig(
        model="examples.digits:DigitsClassifier",
        checkpoint_root=f"{root}/checkpoints",
        data={"source": "a.csv", "target": "y", "data_root": data_root},
    )


def test_s3_roots_are_prefixes_on_folder_boundaries() -> None:
    roots = ["s3://bucket/data"]
    check_allowed("source", "s3://bucket/data/new.csv", roots)
    for uri in ("s3://bucket/database/new.csv", "s3://other/data/new.csv", "s3://bucket/new.csv"):
        with pytest.raises(PredictionRefused, match=r"Refusing the source 's3://.*under the data roots"):
            check_allowed("source", uri, roots)
    with pytest.raises(PredictionRefused, match=r"without '\.\.' segments"):
        check_allowed("source", "s3://bucket/data/../secrets/x.csv", roots)
    check_allowed("output", "s3://bucket/x/y.parquet", ["s3://bucket"])  # a whole bucket


def test_the_deployment_roots_replace_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATA_ROOTS_ENV, raising=False)
    assert data_roots() == [str(tmp_path)]
    monkeypatch.setenv(DATA_ROOTS_ENV, "s3://incoming/scoring, /srv/tables")
    assert data_roots() == ["s3://incoming/scoring", "/srv/tables"]
    with pytest.raises(PredictionRefused, match=DATA_ROOTS_ENV):
        check_allowed("source", str(tmp_path / "x.csv"), data_roots())


def test_the_model_s_data_root_never_widens_the_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding 5: a model trained with data.data_root="/" (its config was a parameter) must not
    open the whole machine to predict. Every refusal comes before the checkpoint is even read (it does
    not exist here)."""
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "new.csv").write_text("a,b\n1,2\n")
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tables))
    hostile = config(str(tmp_path), data_root="/")  # accepted by the config's own validation
    assert hostile.prepared_data_root() == "/" and data_roots() == [str(tables)]
    missing = str(tmp_path / "no-such.ckpt")
    for source, output, message in (
        (
            "/etc/anything/secret.csv",
            str(tables / "out.parquet"),
            "Refusing the source '/etc/anything/secret.csv'",
        ),
        (str(tables / "new.csv"), "/home/x/out.parquet", "Refusing the output '/home/x/out.parquet'"),
        (str(tables / "new.csv"), "/home/x/new.parquet", "Refusing the output '/home/x/new.parquet'"),
    ):
        with pytest.raises(PredictionRefused, match=re.escape(message)) as info:
            score(hostile, missing, source, output)
        assert str(tables) in str(info.value)  # names the roots that do apply
    # a table's default output lies beside it, so the hostile data root plays no part: the checks pass
    # and the missing checkpoint is what stops it
    with pytest.raises(FileNotFoundError):
        score(hostile, missing, str(tables / "new.csv"), None)
    # a project data module's default output still goes under the model's data root, refused here
    with pytest.raises(PredictionRefused, match=re.escape("the model's data root '/'")):
        check_default_output_root(hostile, data_roots())
    # a model whose data root lies under the deployment's roots keeps its default output there
    inside = config(str(tmp_path), data_root=str(tables / "model"))
    check_default_output_root(inside, data_roots())


def test_only_a_file_predict_wrote_is_replaced(tmp_path: Path) -> None:
    roots = [str(tmp_path)]
    ours = tmp_path / "ours.parquet"
    ours.write_bytes(_predictions_parquet(pd.DataFrame({"prediction": [1, 2]}), {"source": "x"}))
    assert written_by_predict(ours.read_bytes())
    check_output(str(ours), roots)
    check_output(str(tmp_path / "new" / "p.parquet"), roots)  # nothing there yet
    theirs = tmp_path / "theirs.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(theirs)
    folder = tmp_path / "folder.parquet"
    folder.mkdir()
    link = tmp_path / "link.parquet"
    link.symlink_to(ours)
    for path, message in (
        (theirs, "a file is there that predict did not write"),
        (folder, "it is a link or a folder"),
        (link, "it is a link or a folder"),
        (tmp_path / "config.yaml", "Expected the output to be a .parquet or .pq name"),
    ):
        with pytest.raises(PredictionRefused, match=message):
            check_output(str(path), roots)


def test_cli_flags() -> None:
    args = build_parser().parse_args(["reproduce", "run-1", "--allow-unfinished-run"])
    assert args.allow_unfinished_run is True
    assert build_parser().parse_args(["reproduce", "run-1"]).allow_unfinished_run is False


def test_a_table_s_predictions_default_to_beside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert output_beside("data/new.csv") == os.path.join("data", "new.predictions.parquet")
    assert output_beside("/srv/in/batch.PQ") == "/srv/in/batch.predictions.parquet"
    assert output_beside("s3://lake/in/2026/new.parquet") == "s3://lake/in/2026/new.predictions.parquet"
    # the default passes the output's checks before any work: a file there that predict did not write
    # is refused, naming it
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "new.csv").write_text("a,b\n1,2\n")
    pd.DataFrame({"a": [1]}).to_parquet(tables / "new.predictions.parquet")
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tables))
    missing = str(tmp_path / "no-such.ckpt")
    expected = f"Refusing to replace {str(tables / 'new.predictions.parquet')!r}"
    with pytest.raises(PredictionRefused, match=re.escape(expected)):
        score(config(str(tmp_path)), missing, str(tables / "new.csv"), None)
