"""``TrainConfig``: one validated description of a training run.

It is three things at once (DESIGN.md, *Configuration*): the parameter schema of the flows, so the
Prefect UI renders it as a form; what is logged to MLflow (:meth:`TrainConfig.to_flat_params`); and what
``reproduce`` rebuilds from a past run (:meth:`TrainConfig.from_flat_params`). Validation happens when
the model is built, before any work: bad Trainer arguments, import paths outside the allowed prefixes
and anything that looks like a credential are refused, with the field named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, JsonValue, Strict, field_validator, model_validator

from lightning_lib.loggers.redact import is_secret_name, redact_text, secret_env_values
from lightning_lib.storage import is_remote, local_path, parse_s3_uri
from tasks.imports import IMPORT_PATH_PATTERN, check_import_path, import_path_pattern, load_class
from tasks.params import apply_overrides, flatten, load_yaml_file, unflatten
from tasks.trainer_config import CheckpointConfig, TrainerConfig, require_every_field

PARAMS_PREFIX = "config."
# Bounds on the conventional data module arguments (issue 14): each DataLoader worker is a process with
# its own copy of the dataset, and a batch is held in memory (and on the device) at once. The data
# module is user code, so only these well-known names are bounded here; its other arguments are its own
# to check (``examples.tabular`` refuses batch_size < 1 itself).
MAX_DATALOADER_WORKERS = 64
MAX_CLASSES = 2**24
MAX_BATCH_SIZE = 2**20
_BOUNDED_DATAMODULE_KWARGS = {"num_workers": (0, MAX_DATALOADER_WORKERS), "batch_size": (1, MAX_BATCH_SIZE)}
# The data module that reads the splits ``prepare_data`` makes of a table (``data``); any other is the
# project's own, which reads its data itself.
TABLE_DATAMODULE = "examples.tabular:TabularDataModule"
RUN_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_STRICT = ConfigDict(
    extra="forbid", frozen=True, hide_input_in_errors=True, json_schema_extra=require_every_field
)
_NO_SECRETS_HINT = (
    "Keep secrets out of the config: boto3 reads AWS credentials from its own chain (environment, "
    "profile, role) and MLflow from MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN."
)


class DataConfig(BaseModel):
    """Where the raw table is and how it becomes train/val/test splits (see ``tasks.data``)."""

    model_config = ConfigDict(**_STRICT, title="Data")

    source: str = Field(
        min_length=1, description="CSV or Parquet file: a local path or an `s3://bucket/key` URI."
    )
    format: Literal["csv", "parquet"] | None = Field(
        default=None, description="File format; `None` means the extension's (`.csv`, `.parquet`, `.pq`)."
    )
    target: str = Field(min_length=1, description="The column to predict.")
    features: list[str] | None = Field(
        default=None, description="Feature columns; `None` means every column but the target."
    )
    val_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="Share of rows in the validation split."
    )
    test_fraction: float = Field(default=0.15, gt=0, lt=1, description="Share of rows in the test split.")
    split_seed: int | None = Field(
        default=None, ge=0, description="Seed of the split; `None` means the run's `seed`."
    )
    data_root: str | None = Field(
        default=None,
        description="Where prepared splits are written; `None` means a `data` folder beside `checkpoint_root`.",
    )
    num_classes: int | None = Field(
        default=None,
        ge=2,
        le=MAX_CLASSES,
        description="Classes of a classifier: the target must hold whole numbers from 0 to `num_classes - 1`, "
        "checked when the data is prepared. `None` means the model's: `model_kwargs.num_classes`, else the "
        "model class's `num_classes` attribute, else no check (a regression target).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        total = self.val_fraction + self.test_fraction
        if total >= 1:
            raise ValueError(
                f"Expected val_fraction + test_fraction < 1, received {self.val_fraction} + "
                f"{self.test_fraction} = {total}."
            )
        if self.features is not None:
            if not self.features:
                raise ValueError(
                    "Expected features to name at least one column, or to be empty (all but the target)."
                )
            duplicates = sorted({f for f in self.features if self.features.count(f) > 1})
            if duplicates:
                raise ValueError(f"Expected each feature column once, received {duplicates} more than once.")
            if self.target in self.features:
                raise ValueError(f"Expected the target column {self.target!r} not to be a feature as well.")
        if self.format is None and self.source_format() is None:
            raise ValueError(
                f"Expected data.source to end in .csv, .parquet or .pq, or data.format to be set; "
                f"received {self.source!r}."
            )
        return self

    def source_format(self) -> Literal["csv", "parquet"] | None:
        """The configured format, else the one the source's extension says."""
        return self.format if self.format is not None else table_format(self.source)


def table_format(source: str) -> Literal["csv", "parquet"] | None:
    """The table format a file name's extension says (.csv, .parquet, .pq), or None."""
    name = source.lower().rstrip("/")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return None


class MlflowConfig(BaseModel):
    """Where runs are tracked; credentials come from MLflow's environment variables, never from here."""

    model_config = ConfigDict(**_STRICT, title="MLflow")

    tracking_uri: str | None = Field(
        default=None,
        description="Where runs are tracked; `None` means `MLFLOW_TRACKING_URI`, else a local SQLite file.",
    )
    experiment_name: str = Field(default="lightning_lib", min_length=1, description="The MLflow experiment.")
    registered_model_name: str | None = Field(
        default=None, description="Register the trained model under this name; `None` means do not register."
    )


class TrainConfig(BaseModel):
    """A training run: model, data module, Trainer arguments, data, storage and tracking."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        title="Training run configuration",
        json_schema_extra=lambda schema: _form_schema(schema),
    )

    model: str = Field(
        pattern=IMPORT_PATH_PATTERN,
        description="The LightningModule, as `package.module:Class` under an allowed module prefix.",
        examples=["examples.digits:DigitsClassifier"],
    )
    # json_schema_extra: a default the form shows (pydantic puts none in the schema for a factory)
    model_kwargs: dict[str, JsonValue] = Field(
        default_factory=dict,
        json_schema_extra={"default": {}},
        description="Keyword arguments of the model's `__init__` (plain JSON values).",
    )
    datamodule: str = Field(
        default=TABLE_DATAMODULE,
        pattern=IMPORT_PATH_PATTERN,
        description="The LightningDataModule, as `package.module:Class` under an allowed module prefix: your "
        "project's own (then `data` is `None`: the pipeline calls its `prepare_data` and `setup` as Lightning "
        "does), or the one that reads the splits the pipeline makes of a table (`data` set).",
    )
    datamodule_kwargs: dict[str, JsonValue] = Field(
        default_factory=dict,
        json_schema_extra={"default": {}},
        description="Keyword arguments of the data module's `__init__` (plain JSON values; with a table, besides "
        "the prepared splits). String values may hold `{window_start}` and `{window_end}`, which retraining "
        f"replaces with its window's dates. `batch_size` must be from 1 to {MAX_BATCH_SIZE} and "
        f"`num_workers` from 0 to {MAX_DATALOADER_WORKERS} when given.",
    )
    trainer: TrainerConfig = Field(default=TrainerConfig(), description="Arguments of the Trainer.")
    # strict: a seed given as text is refused as the form refuses it, never converted
    seed: Annotated[int, Strict()] = Field(
        default=0, ge=0, le=2**32 - 1, description="Seed of python, numpy and torch (`seed_everything`)."
    )
    checkpoint_root: str = Field(
        default="runs/checkpoints",
        min_length=1,
        description="Checkpoints go under `<checkpoint_root>/<run_key>`: a local folder or `s3://bucket/prefix`.",
    )
    checkpoint: CheckpointConfig = Field(
        default=CheckpointConfig(), description="Which checkpoints the fit keeps and how often."
    )
    mlflow: MlflowConfig = Field(default=MlflowConfig(), description="MLflow tracking and registry.")
    run_key: str | None = Field(
        default=None,
        pattern=RUN_KEY_PATTERN,
        description="Names the run's checkpoints and MLflow run, so a retry continues them; `None` means derived "
        "from the flow run.",
    )
    data: DataConfig | None = Field(
        default=None,
        description="A table (CSV or Parquet) the pipeline checks and splits for the data module; `None` when "
        "the data module reads its own data.",
    )

    @field_validator("model", "datamodule")
    @classmethod
    def _allowed_import(cls, value: str) -> str:
        return check_import_path(value)  # on the string: nothing is imported here

    @field_validator("datamodule_kwargs")
    @classmethod
    def _bounded_loader(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        for name, (low, high) in _BOUNDED_DATAMODULE_KWARGS.items():
            if name not in value:
                continue
            given = value[name]
            if isinstance(given, bool) or not isinstance(given, int) or not low <= given <= high:
                raise ValueError(
                    f"Expected datamodule_kwargs.{name} to be an int in [{low}, {high}], received {given!r}."
                )
        return value

    @field_validator("checkpoint_root")
    @classmethod
    def _valid_root(cls, value: str) -> str:
        if is_remote(value):
            parse_s3_uri(value)
        else:
            # found here rather than when the first checkpoint is committed, an epoch into training
            _check_local_folder("checkpoint_root", value)
        return value

    @model_validator(mode="after")
    def _no_credentials(self) -> TrainConfig:
        # The same rules as the MLflow logger's scrubbing, applied to the names it will see (the flat
        # params) and to every key and text inside: what is accepted here is logged unchanged there.
        for name in self.to_flat_params(prefix=""):
            if is_secret_name(name):
                raise ValueError(f"{name} looks like the name of a credential. {_NO_SECRETS_HINT}")
        env_secrets = secret_env_values()
        for where, key, value in _walk(self.model_dump(mode="json")):
            if not where:
                continue
            if key is not None and is_secret_name(key):
                raise ValueError(f"{where}: {key!r} looks like the name of a credential. {_NO_SECRETS_HINT}")
            if isinstance(value, str) and _looks_secret(value, env_secrets):
                # the value is never repeated (hide_input_in_errors keeps pydantic from showing it too)
                raise ValueError(
                    f"{where} looks like it contains a credential (not shown). {_NO_SECRETS_HINT}"
                )
        return self

    @model_validator(mode="after")
    def _some_data(self) -> TrainConfig:
        if self.data is None and self.datamodule == TABLE_DATAMODULE:
            raise ValueError(
                f"Expected data (a table the pipeline splits for {TABLE_DATAMODULE}) or datamodule (your "
                "project's own LightningDataModule, which reads its data itself), received neither."
            )
        return self

    @model_validator(mode="after")
    def _data_root_is_a_folder(self) -> TrainConfig:
        if self.data is not None and self.data.data_root and not is_remote(self.data.data_root):
            _check_local_folder("data.data_root", self.data.data_root)
        return self

    @model_validator(mode="after")
    def _separate_roots(self) -> TrainConfig:
        data_root = _norm(self.prepared_data_root())  # raises for a bare bucket without data.data_root
        ckpt_root = _norm(self.checkpoint_root)
        if data_root == ckpt_root or data_root.startswith(ckpt_root + "/"):
            raise ValueError(
                f"Expected data.data_root outside checkpoint_root (whose folders are run keys), received "
                f"{self.prepared_data_root()!r} under {self.checkpoint_root!r}."
            )
        return self

    # -- derived values ---------------------------------------------------------------------------

    def prepared_data_root(self) -> str:
        """``data.data_root``, else a ``data`` folder beside ``checkpoint_root``."""
        if self.data is not None and self.data.data_root:
            return self.data.data_root
        root = self.checkpoint_root.rstrip("/")
        if is_remote(root):
            bucket, prefix = parse_s3_uri(root)
            if not prefix:
                raise ValueError(
                    f"Expected data.data_root to be set when checkpoint_root is a bucket root ({root!r}): "
                    "there is no folder beside it to put the prepared data in."
                )
            parent = prefix.rpartition("/")[0]
            return f"s3://{bucket}/{parent}/data" if parent else f"s3://{bucket}/data"
        parent = os.path.dirname(os.path.normpath(local_path(root)))
        return os.path.join(parent, "data") if parent else "data"

    def class_count(self) -> int | None:
        """How many classes the target must fit: ``data.num_classes``, else ``model_kwargs.num_classes``,
        else the model class's ``num_classes`` attribute (importing it, from an allowed prefix only);
        None when none says (a regression model, or one that does not declare it: nothing is checked)."""
        if self.data is not None and self.data.num_classes is not None:
            return self.data.num_classes
        given = self.model_kwargs.get("num_classes")
        if isinstance(given, int) and not isinstance(given, bool):
            return given
        declared = getattr(self.load_model_class(), "num_classes", None)
        if isinstance(declared, int) and not isinstance(declared, bool):
            return declared
        return None

    def split_seed(self) -> int:
        """The seed of the data split: ``data.split_seed``, else the run's seed."""
        return self.seed if self.data is None or self.data.split_seed is None else self.data.split_seed

    def table(self) -> DataConfig:
        """The table section; raises, naming the data module, when the run reads its own data."""
        if self.data is None:
            raise ValueError(
                f"Expected a table (data) for this step, but the run's data module {self.datamodule!r} reads its "
                "own data."
            )
        return self.data

    def load_model_class(self) -> type[Any]:
        """Import the LightningModule class (only from an allowed prefix)."""
        from lightning_lib import LightningModule

        return load_class(self.model, base=LightningModule)

    def load_datamodule_class(self) -> type[Any]:
        """Import the LightningDataModule class (only from an allowed prefix)."""
        from lightning_lib import LightningDataModule

        return load_class(self.datamodule, base=LightningDataModule)

    # -- construction and serialisation -----------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> TrainConfig:
        """Load a YAML file and apply ``a.b.c=value`` overrides (values parsed as YAML) in order."""
        return cls.model_validate(apply_overrides(load_yaml_file(path), overrides))

    def with_overrides(self, overrides: Sequence[str]) -> TrainConfig:
        """A validated copy with overrides applied (``model_copy(update=...)`` would skip validation)."""
        return type(self).model_validate(apply_overrides(self.model_dump(mode="json"), overrides))

    def to_flat_params(self, prefix: str = PARAMS_PREFIX) -> dict[str, str]:
        """Every field as ``{prefix}dotted.name -> text`` for ``mlflow.log_params``; see ``tasks.params``.

        The prefix keeps the config apart from the model's own hyper-parameters logged to the same run.
        """
        return flatten(self.model_dump(mode="json"), prefix)

    @classmethod
    def from_flat_params(cls, params: Mapping[str, str], prefix: str = PARAMS_PREFIX) -> TrainConfig:
        """Rebuild the config from a run's params (other params are ignored); validates as usual."""
        return cls.model_validate(unflatten(params, prefix))


_SECTION_TITLES = {"trainer": "Trainer", "checkpoint": "Checkpoints", "mlflow": "MLflow", "data": "Data"}


def _form_schema(schema: dict[str, JsonValue]) -> None:
    """The config's JSON schema as the Prefect form needs it: every field required (see
    :func:`require_every_field`) and import paths held to the allowed prefixes of the process that renders
    the schema (the serving or deploying process), so a model outside them is refused on submission."""
    require_every_field(schema)
    properties = schema["properties"]
    assert isinstance(properties, dict)
    for name in ("model", "datamodule"):
        prop = properties[name]
        assert isinstance(prop, dict)
        prop["pattern"] = import_path_pattern()
    # pydantic leaves the title off a field that references a section; the form labels the field with
    # the property's own title (with nothing when an empty section is chosen)
    for name, title in _SECTION_TITLES.items():
        prop = properties[name]
        assert isinstance(prop, dict)
        prop.setdefault("title", title)


def _walk(value: Any, where: str = "", key: str | None = None) -> Any:
    """Yield ``(dotted location, mapping key or None, value)`` for every node of plain data."""
    yield where, key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{where}.{k}" if where else str(k), str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{where}[{i}]", None)


def _looks_secret(text: str, env_secrets: list[str]) -> bool:
    """The logger's redaction rules (patterns, and the values of secret-named environment variables),
    plus URIs with user info (``s3://user:pass@bucket``, ``https://token@host``) or credential-looking
    query names."""
    if redact_text(text, env_secrets) != text:
        return True
    if "://" in text:
        parts = urlsplit(text)
        if "@" in parts.netloc:
            return True
        if any(is_secret_name(name) for name, _ in parse_qsl(parts.query, keep_blank_values=True)):
            return True
    return False


def _check_local_folder(field: str, value: str) -> None:
    """A local root must be a folder or not exist yet; nor may any existing parent be a file."""
    path = os.path.abspath(local_path(value))
    probe = path
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent
    if not os.path.isdir(probe):
        what = "is" if probe == path else f"is under {probe!r}, which is"
        raise ValueError(
            f"Expected {field} to be a folder (or not to exist yet), but {value!r} {what} a file."
        )


def _norm(uri: str) -> str:
    if is_remote(uri):
        return uri.rstrip("/")
    return os.path.abspath(local_path(uri))


__all__ = [
    "PARAMS_PREFIX",
    "TABLE_DATAMODULE",
    "CheckpointConfig",
    "DataConfig",
    "MlflowConfig",
    "TrainConfig",
    "TrainerConfig",
    "load_class",
]
