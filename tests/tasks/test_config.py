"""TrainConfig: validation names the field, imports only from allowed prefixes, YAML, flat params, schema."""

from __future__ import annotations

import json
import re
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import lightning_lib as pl
from lightning_lib.loggers.redact import is_secret_name
from lightning_lib.plugins.precision import PRECISIONS
from tasks.config import DataConfig, TrainConfig, TrainerConfig, load_class
from tasks.imports import ALLOWED_IMPORTS_ENV, DisallowedImportError, allowed_prefixes, check_import_path
from tasks.trainer_config import PrecisionName
from tests.tasks.configs import make, only_error


def test_defaults_are_the_bundled_example_and_local_folders() -> None:
    config = make()
    assert config.datamodule == "examples.tabular:TabularDataModule"
    assert config.trainer == TrainerConfig()
    assert config.prepared_data_root() == "runs/data"
    assert config.split_seed() == 0
    assert make(seed=5).split_seed() == 5
    assert make(seed=5, data={"source": "a.csv", "target": "y", "split_seed": 1}).split_seed() == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_epochs", -5, "Expected max_epochs >= -1, received -5."),
        ("max_epochs", True, "Expected max_epochs to be an int or None >= -1, received True."),
        ("max_steps", 1.5, "Expected max_steps to be an int >= -1, received 1.5."),
        ("accumulate_grad_batches", 0, "Expected accumulate_grad_batches >= 1, received 0."),
        (
            "limit_train_batches",
            1.5,
            "Expected limit_train_batches to be a float in [0.0, 1.0] or an int >= 0",
        ),
        ("val_check_interval", 0, "Expected val_check_interval > 0, received 0."),
        ("val_check_interval", "soon", 'Expected val_check_interval to be a "DD:HH:MM:SS" string'),
        ("check_val_every_n_epoch", 0, "Expected check_val_every_n_epoch >= 1, received 0."),
        ("log_every_n_steps", -1, "Expected log_every_n_steps >= 0, received -1."),
        ("gradient_clip_val", -1.0, "Expected gradient_clip_val to be a finite number >= 0 or None"),
        ("gradient_clip_algorithm", "max", "Expected gradient_clip_algorithm to be one of"),
        ("deterministic", "always", "Expected deterministic to be one of"),
        ("precision", "8-true", "Expected precision to be one of"),
        (
            "devices",
            0,
            'Expected devices to be "auto", an int >= 1, -1, a list of device indices or a string like "0,1", received 0',
        ),
        ("num_nodes", 0, "Expected num_nodes >= 1, received 0"),
        ("max_time", "tomorrow", 'Expected max_time to be a "DD:HH:MM:SS" string'),
    ],
)
def test_trainer_errors_name_the_field_with_the_trainers_message(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        make(trainer={field: value})
    error = only_error(exc)
    assert error["loc"] == ("trainer", field)
    assert message in error["msg"]


def test_trainer_refuses_unknown_arguments_by_name() -> None:
    with pytest.raises(ValidationError) as exc:
        make(trainer={"max_epoch": 3})
    assert only_error(exc)["loc"] == ("trainer", "max_epoch")


def test_trainer_aliases_become_canonical_and_the_kwargs_build_a_trainer(tmp_path: Path) -> None:
    trainer = TrainerConfig(
        accelerator="CPU",
        precision=64,
        max_epochs=2,
        limit_train_batches=0.5,
        val_check_interval=10,
        max_time="00:00:10:00",
        gradient_clip_val=1,
        deterministic="warn",
        enable_progress_bar=False,
    )
    assert (trainer.accelerator, trainer.precision) == ("cpu", "64-true")
    built = pl.Trainer(**trainer.to_kwargs(), logger=False, default_root_dir=tmp_path)
    assert (built.max_epochs, built.precision, built.val_check_interval) == (2, "64-true", 10)
    assert TrainerConfig(precision="bf16").precision == "bf16-mixed"


def test_precision_choices_follow_the_library() -> None:
    assert set(typing.get_args(PrecisionName)) == set(PRECISIONS)


@pytest.mark.parametrize("field", ["model", "datamodule"])
def test_disallowed_import_prefix_is_refused_before_importing(
    field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sneaky_module_xyz.py").write_text("raise SystemExit('imported!')\nclass Thing: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(ALLOWED_IMPORTS_ENV, raising=False)
    with pytest.raises(ValidationError) as exc:
        make(**{field: "sneaky_module_xyz:Thing"})
    error = only_error(exc)
    assert error["loc"] == (field,)
    assert "outside the allowed module prefixes ['examples.', 'datamodules.']" in error["msg"]
    assert ALLOWED_IMPORTS_ENV in error["msg"]
    with pytest.raises(DisallowedImportError, match="it was not imported"):
        load_class("sneaky_module_xyz:Thing")
    assert "sneaky_module_xyz" not in sys.modules


def test_the_deployment_allows_more_prefixes_on_package_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "allowed_pkg_xyz.py").write_text("class Thing: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(ALLOWED_IMPORTS_ENV, " allowed_pkg_xyz , other.models. ")
    assert allowed_prefixes() == ("examples.", "datamodules.", "allowed_pkg_xyz", "other.models.")
    assert load_class("allowed_pkg_xyz:Thing").__name__ == "Thing"
    check_import_path("other.models.mlp:MLP")
    for outside in ("allowed_pkg_xyz_evil:Thing", "other.modelsx:M", "other:M", "examples_x.m:M"):
        with pytest.raises(DisallowedImportError):
            check_import_path(outside)


@pytest.mark.parametrize(
    "path", ["examples.digits", "examples.digits:", "examples..digits:X", "1x:Y", "a:b.c"]
)
def test_malformed_import_paths_are_refused(path: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make(model=path)
    assert only_error(exc)["loc"] == ("model",)


def test_load_class_checks_the_base_class() -> None:
    config = make(model="examples.digits:DigitsDataModule")  # allowed and well formed, but not a model
    with pytest.raises(TypeError, match="subclass of LightningModule"):
        config.load_model_class()
    with pytest.raises(TypeError, match="to name a class, found nothing"):
        load_class("examples.digits:Missing")
    assert make().load_model_class().__name__ == "DigitsClassifier"
    assert make().load_datamodule_class().__name__ == "TabularDataModule"


SECRET = "hunter2-very-secret"


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"checkpoint_root": f"s3://user:{SECRET}@bucket/ckpt"}, "checkpoint_root"),
        ({"data": {"source": f"s3://AKIAABCDEFGHIJKLMNOP:{SECRET}@b/t.csv", "target": "y"}}, "data.source"),
        (
            {"data": {"source": "s3://b/t.csv", "target": "y", "data_root": "s3://someone@b/x"}},
            "data.data_root",
        ),
        ({"mlflow": {"tracking_uri": f"https://{SECRET}@mlflow.example.com"}}, "mlflow.tracking_uri"),
        (
            {"mlflow": {"tracking_uri": f"https://mlflow.example.com/?X-Amz-Credential={SECRET}"}},
            "mlflow.tracking_uri",
        ),
        ({"model_kwargs": {"api_key": SECRET}}, "model_kwargs.api_key"),
        ({"datamodule_kwargs": {"nested": {"password": SECRET}}}, "datamodule_kwargs.nested.password"),
        ({"model_kwargs": {"note": "AKIAABCDEFGHIJKLMNOP"}}, "model_kwargs.note"),
        ({"model_kwargs": {"dsn": f"postgresql://u:{SECRET}@db/x"}}, "model_kwargs.dsn"),
    ],
)
def test_credentials_are_refused_and_never_repeated(overrides: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make(**overrides)
    text = str(exc.value)
    assert where in text and "credential" in text
    assert SECRET not in text and "AKIAABCDEFGHIJKLMNOP" not in text


def test_credential_names_across_levels_and_secret_environment_values_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(
        ValidationError, match=r"model_kwargs\.access\.key looks like the name of a credential"
    ):
        make(model_kwargs={"access": {"key": "abc"}})  # the logger would see "access key" in the name
    monkeypatch.setenv("MY_SERVICE_TOKEN", "t0k3n-value-123")
    with pytest.raises(ValidationError, match=r"data\.source looks like it contains a credential") as exc:
        make(data={"source": "s3://bucket/t0k3n-value-123/t.csv", "target": "y"})
    assert "t0k3n-value-123" not in str(exc.value)


def test_no_field_of_the_schema_looks_like_a_credential() -> None:
    def names(schema: Any) -> list[str]:
        found: list[str] = []
        if isinstance(schema, dict):
            found += list(schema.get("properties", {}))
            for value in schema.values():
                found += names(value)
        elif isinstance(schema, list):
            for value in schema:
                found += names(value)
        return found

    fields = names(TrainConfig.model_json_schema())
    assert "run_key" in fields and "tracking_uri" in fields
    assert [f for f in fields if is_secret_name(f)] == []


@pytest.mark.parametrize("key", ["../escape", ".hidden", "a/b", "with space", "x" * 129, ""])
def test_run_key_is_pattern_restricted(key: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make(run_key=key)
    assert only_error(exc)["loc"] == ("run_key",)
    assert make(run_key="nightly-2024_05.01").run_key == "nightly-2024_05.01"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction + test_fraction < 1"),
        ({"features": ["a", "label"]}, "not to be a feature as well"),
        ({"features": ["a", "a"]}, "more than once"),
        ({"features": []}, "at least one column"),
        ({"source": "data/table.txt"}, "data.format to be set"),
        ({"val_fraction": 0}, "greater than 0"),
    ],
)
def test_data_section_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)) as exc:
        make(data={"source": "data/table.csv", "target": "label", **data})
    assert only_error(exc)["loc"][0] == "data"
    assert DataConfig(source="t.bin", target="y", format="parquet").source_format() == "parquet"


def test_data_root_defaults_beside_checkpoint_root() -> None:
    assert make(checkpoint_root="s3://bucket/ml/checkpoints/").prepared_data_root() == "s3://bucket/ml/data"
    assert make(checkpoint_root="s3://bucket/checkpoints").prepared_data_root() == "s3://bucket/data"
    assert make(checkpoint_root="/srv/ml/ckpt").prepared_data_root() == "/srv/ml/data"
    with pytest.raises(
        ValidationError, match=r"data\.data_root to be set when checkpoint_root is a bucket root"
    ):
        make(checkpoint_root="s3://bucket")
    bare = make(
        checkpoint_root="s3://bucket", data={"source": "a.csv", "target": "y", "data_root": "s3://d/x"}
    )
    assert bare.prepared_data_root() == "s3://d/x"
    with pytest.raises(ValidationError, match="outside checkpoint_root"):
        make(checkpoint_root="/srv/ckpt", data={"source": "a.csv", "target": "y", "data_root": "/srv/ckpt/d"})


def test_yaml_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "model: examples.digits:DigitsClassifier\n"
        "model_kwargs: {hidden: 32}\n"
        "trainer: {max_epochs: 5}\n"
        "data:\n  source: examples/data/digits.csv\n  target: target\n"
        "mlflow: {registered_model_name: digits}\n"
    )
    config = TrainConfig.from_yaml(
        path,
        [
            "trainer.max_epochs=3",
            "model_kwargs.lr=1e-3",  # PyYAML alone would read this as the string "1e-3"
            "model_kwargs.scheduler=step",
            "run_key=2024-05-01",  # stays text, not a date
            "data.features=[pixel_0, pixel_1]",
            "mlflow.registered_model_name=",  # empty means None
            "datamodule_kwargs.batch_size=16",
        ],
    )
    assert config.trainer.max_epochs == 3
    assert config.model_kwargs == {"hidden": 32, "lr": 0.001, "scheduler": "step"}
    assert config.run_key == "2024-05-01"
    assert config.data.features == ["pixel_0", "pixel_1"]
    assert config.mlflow.registered_model_name is None
    assert config.datamodule_kwargs == {"batch_size": 16}
    assert config.with_overrides(["seed=7"]).seed == 7
    with pytest.raises(ValidationError, match="Expected max_epochs >= -1"):
        config.with_overrides(["trainer.max_epochs=-3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs", "of the form 'a.b.c=value'"),
        ("=3", "of the form 'a.b.c=value'"),
        ("seed.value=3", "'seed' is a value, not a section"),
    ],
)
def test_bad_overrides_are_named(tmp_path: Path, override: str, message: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: examples.digits:DigitsClassifier\nseed: 1\ndata: {source: a.csv, target: y}\n")
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_yaml(path, [override])


def test_yaml_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: examples.digits:DigitsClassifier\nepochs: 3\ndata: {source: a.csv, target: y}\n")
    with pytest.raises(ValidationError) as exc:
        TrainConfig.from_yaml(path)
    assert only_error(exc)["loc"] == ("epochs",)
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ValueError, match="Expected a mapping at the top"):
        TrainConfig.from_yaml(tmp_path / "list.yaml")


def test_flat_params_round_trip() -> None:
    config = make(
        model_kwargs={
            "hidden": 64,
            "lr": 0.1 + 0.2,
            "name": "10",
            "flag": "true",
            "nothing": None,
            "empty": "",
            "layers": [32, {"k": "v"}],
            "opts": {"a.b": 1},
            "odd": {"a:b c": 2},
            "nested": {"deep": {"x": False}},
            "blank": {},
        },
        trainer={"max_epochs": 3, "devices": [0], "limit_val_batches": 0.25, "precision": "bf16-mixed"},
        run_key="123",
        data={"source": "s3://bucket/raw/t.csv", "target": "label", "features": ["a", "b"], "split_seed": 4},
        mlflow={"tracking_uri": "http://127.0.0.1:5000", "registered_model_name": "digits"},
    )
    params = config.to_flat_params()
    assert all(isinstance(v, str) and k.startswith("config.") for k, v in params.items())
    assert params["config.model_kwargs.hidden"] == "64"
    assert params["config.model_kwargs.name"] == '"10"'  # would read back as an int otherwise
    assert params["config.data.source"] == "s3://bucket/raw/t.csv"  # plain strings stay readable
    assert params["config.model_kwargs.nested.deep.x"] == "false"
    assert params["config.model_kwargs.odd"] == '{"a:b c": 2}'  # not a name MLflow keeps as it is
    logged = {**params, "lr": "0.1", "hidden": "64"}  # what the model's own hparams add to the run
    assert TrainConfig.from_flat_params(logged) == config
    assert TrainConfig.from_flat_params(make().to_flat_params()) == make()
    with pytest.raises(ValidationError, match="Expected max_epochs >= -1"):
        TrainConfig.from_flat_params({**params, "config.trainer.max_epochs": "-4"})


def test_json_schema_is_a_form_with_titles_and_descriptions() -> None:
    schema = TrainConfig.model_json_schema()
    assert schema["title"] == "Training run configuration"
    # every field is required in the form, so a cleared one is refused rather than defaulted; the Python
    # model still defaults all but the model (the table too: a project's data module reads its own)
    assert schema["required"] == list(schema["properties"])
    assert [n for n, f in TrainConfig.model_fields.items() if f.is_required()] == ["model"]
    for name, prop in schema["properties"].items():
        # a section is a reference (or a reference or null): its title is on the referenced definition
        ref = prop.get("$ref") or next((o["$ref"] for o in prop.get("anyOf", []) if "$ref" in o), None)
        titled = schema["$defs"][ref.rpartition("/")[2]] if ref else prop
        assert titled.get("title") and prop.get("description"), name
    titles = {sub: schema["$defs"][sub]["title"] for sub in ("TrainerConfig", "DataConfig", "MlflowConfig")}
    assert titles == {"TrainerConfig": "Trainer", "DataConfig": "Data", "MlflowConfig": "MLflow"}
    for sub in titles:
        for name, prop in schema["$defs"][sub]["properties"].items():
            assert prop.get("title") and prop.get("description"), f"{sub}.{name}"
    json.dumps(schema)  # plain JSON


def test_prefect_renders_the_config_as_the_flow_parameter_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from prefect.utilities.callables import parameter_schema

    def training(config: TrainConfig) -> None:
        """A flow's signature, as the training flow will have it."""

    schema = parameter_schema(training).model_dump_for_openapi()
    assert schema["properties"]["config"]["$ref"].endswith("TrainConfig")
    trainer = schema["definitions"]["TrainerConfig"]["properties"]
    assert trainer["accelerator"]["enum"] == ["auto", "cpu", "gpu", "cuda"]
    # What the UI submits for a valid config validates against what the server checks...
    good = {"config": make(run_key="r1").model_dump(mode="json")}
    jsonschema.validate(good, schema)
    # ...and the pattern of the run key is checked by the server already.
    bad = {"config": {**good["config"], "run_key": "../x"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_a_checkpoint_root_that_is_a_file_is_refused_when_validating(tmp_path: Path) -> None:
    # noticed only when the first checkpoint was committed, after a full epoch, before issue 14
    afile = tmp_path / "not-a-folder"
    afile.write_text("x")
    for root, where in ((afile, "is a file"), (afile / "sub", f"is under {str(afile)!r}, which is a file")):
        with pytest.raises(ValidationError) as exc:
            make(checkpoint_root=str(root))
        error = only_error(exc)
        assert error["loc"] == ("checkpoint_root",)
        assert (
            f"Expected checkpoint_root to be a folder (or not to exist yet), but {str(root)!r} {where}"
            in error["msg"]
        )
    with pytest.raises(ValidationError, match=r"Expected data.data_root to be a folder"):
        make(
            checkpoint_root=str(tmp_path / "ckpt"),
            data={"source": "a.csv", "target": "y", "data_root": str(afile)},
        )
    assert make(checkpoint_root=str(tmp_path / "new" / "ckpt")).checkpoint_root.endswith("ckpt")
