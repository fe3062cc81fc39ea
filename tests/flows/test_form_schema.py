"""Issue 13: the Prefect form refuses what the config refuses.

The schema checked here is the one the UI receives: each served deployment's parameter schema, which the
form renders and the server validates a run's parameters against (``enforce_parameter_schema``) with
Prefect's own validator, used here too. Boundary values go to both that validator and ``TrainConfig``:
what one accepts the other accepts. The one deliberate difference is a missing field: the form drops a
cleared field (or a number typed as text) from what it sends, so the schema requires every field where
Python callers and YAML files get the model's default.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import build_error_obj, validate
from pydantic import ValidationError

from flows.deploy import FLOWS, build_deployments, deployment_options
from tasks.config import TrainConfig
from tasks.imports import ALLOWED_IMPORTS_ENV
from tasks.trainer_config import MAX_COUNT
from tests.tasks.configs import make

# Fields that have no default: the form must be given them (the table's source and target only when a
# table is given at all).
NO_DEFAULT = {"TrainConfig.model", "DataConfig.source", "DataConfig.target"}
# Outside code spans, these change what Markdown shows: HTML tags vanish ("<checkpoint_root>"), stars and
# underscores at a word's edge turn text italic or bold ("__init__"), brackets make links.
_MARKDOWN = re.compile(r"[<>*\[\]#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    """Each served deployment's parameter schema, as the server stores it and the UI receives it."""
    return {
        deployment.name: deployment._parameter_openapi_schema.model_dump_for_openapi()
        for deployment in build_deployments()
    }


def _properties(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(owner.name, property)`` for every flow parameter and every field of every config section."""
    for name, prop in schema["properties"].items():
        yield f"parameter.{name}", prop
    for owner, definition in schema.get("definitions", {}).items():
        for name, prop in definition.get("properties", {}).items():
            yield f"{owner}.{name}", prop


def _nullable(prop: dict[str, Any]) -> bool:
    return any(option.get("type") == "null" for option in prop.get("anyOf", []))


def test_the_ui_receives_every_flows_schema(schemas: dict[str, dict[str, Any]]) -> None:
    assert set(schemas) == set(FLOWS)
    for name, (flow, _) in FLOWS.items():
        assert schemas[name] == parameter_schema(flow).model_dump_for_openapi(), name


@pytest.mark.parametrize("flow_name", sorted(FLOWS))
def test_every_parameter_and_field_has_a_title_and_a_description_that_renders(
    schemas: dict[str, dict[str, Any]], flow_name: str
) -> None:
    for where, prop in _properties(schemas[flow_name]):
        assert prop.get("title"), where
        description = prop.get("description", "")
        assert description.strip(), f"{where} has no description"
        plain = re.sub(r"`[^`]*`", "", description)
        assert not _MARKDOWN.search(plain), f"{where}: Markdown would change {description!r}"
        if _nullable(prop) and prop.get("default", "absent") is None:
            # the form shows 'Property is type "None"' for it: the text must say what None means
            assert "`None`" in description, f"{where} does not say what None means: {description!r}"


@pytest.mark.parametrize("flow_name", sorted(FLOWS))
def test_defaults_are_shown_and_every_config_field_is_required(
    schemas: dict[str, dict[str, Any]], flow_name: str
) -> None:
    schema = schemas[flow_name]
    for where, prop in _properties(schema):
        if (
            where.startswith("parameter.")
            or where.partition(".")[0] + "." + where.partition(".")[2] in NO_DEFAULT
        ):
            continue
        assert "default" in prop, f"{where} shows no default"
    for owner, definition in schema.get("definitions", {}).items():
        if "properties" in definition:
            assert definition["required"] == list(definition["properties"]), owner
    # the form starts from the deployment's parameters: every config field has a value there
    initial = deployment_options()[flow_name].get("parameters", {})
    if "config" in initial:
        assert set(initial["config"]) == set(schema["definitions"]["TrainConfig"]["properties"])


def _set(config: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = config
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return config


def _both_verdicts(schema: dict[str, Any], config: dict[str, Any]) -> tuple[bool, bool]:
    form_accepts = not validate({"config": config}, schema)
    try:
        TrainConfig.model_validate(config)
    except ValidationError:
        return form_accepts, False
    return form_accepts, True


def _good() -> dict[str, Any]:
    return make(run_key="r1", seed=42).model_dump(mode="json")


@pytest.mark.parametrize(
    ("path", "value", "accepted"),
    [
        ("trainer.max_epochs", -5, False),
        ("trainer.max_epochs", -1, True),  # Lightning's "no limit"
        ("trainer.max_epochs", None, True),
        ("trainer.max_epochs", MAX_COUNT + 1, False),
        ("trainer.max_steps", -2, False),
        ("trainer.accumulate_grad_batches", 0, False),
        ("trainer.accumulate_grad_batches", 1, True),
        ("trainer.devices", 257, False),
        ("trainer.devices", -2, False),
        ("trainer.devices", [0, 256], False),
        ("trainer.devices", [], False),
        ("trainer.devices", 2, True),
        ("trainer.num_nodes", 0, False),
        ("trainer.max_time", "00:01:00:00", True),
        ("trainer.max_time", "an hour", False),
        ("trainer.val_check_interval", 0, False),
        ("trainer.val_check_interval", 0.0, False),
        ("trainer.val_check_interval", 0.5, True),
        ("trainer.val_check_interval", "00:00:30:00", True),
        ("trainer.val_check_interval", "often", False),
        ("trainer.limit_train_batches", 1.5, False),
        ("trainer.limit_train_batches", 0, True),
        ("trainer.check_val_every_n_epoch", 0, False),
        ("trainer.num_sanity_val_steps", -2, False),
        ("trainer.log_every_n_steps", -1, False),
        ("trainer.gradient_clip_val", -0.5, False),
        ("trainer.precision", "8-true", False),
        ("trainer.accelerator", "tpu", False),
        ("seed", "abc", False),
        ("seed", "42", False),
        ("seed", None, False),
        ("seed", -1, False),
        ("seed", 2**32, False),
        ("seed", 2**32 - 1, True),
        ("model", "os.path:join", False),
        ("model", "examples_evil.models:Net", False),
        ("model", "examples.digits:DigitsClassifier", True),
        ("datamodule", "subprocess:Popen", False),
        ("run_key", "../x", False),
        ("checkpoint_root", "", False),
        ("checkpoint.save_top_k", -2, False),
        ("checkpoint.every_n_train_steps", 0, False),
        ("data.val_fraction", 1.0, False),
        ("data.split_seed", -1, False),
        ("data.num_classes", 1, False),
        ("data.format", "xlsx", False),
        ("mlflow.experiment_name", "", False),
    ],
)
def test_the_form_accepts_exactly_what_the_config_accepts(
    schemas: dict[str, dict[str, Any]], path: str, value: Any, accepted: bool
) -> None:
    for flow_name in ("training", "retraining", "example-pipeline"):
        verdicts = _both_verdicts(schemas[flow_name], _set(_good(), path, value))
        assert verdicts == (accepted, accepted), (flow_name, path, value)


def test_the_import_pattern_carries_the_deployments_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.training import training

    monkeypatch.setenv(ALLOWED_IMPORTS_ENV, "myproject.models, teamlib")
    schema = parameter_schema(training).model_dump_for_openapi()
    cases = {
        "myproject.models.net:Net": True,
        "teamlib:Net": True,
        "myproject.other:Net": False,  # a sibling of the allowed package, not under it
        "teamlib_evil:Net": False,
        "examples.digits:DigitsClassifier": True,  # the defaults stay allowed
    }
    for model, accepted in cases.items():
        assert _both_verdicts(schema, _set(_good(), "model", model)) == (accepted, accepted), model


def test_a_cleared_or_garbled_field_is_refused_not_defaulted(schemas: dict[str, dict[str, Any]]) -> None:
    schema = schemas["training"]
    # What the form sends when the seed field is cleared or holds text: the key is left out. Prefect merges
    # a run's parameters over the deployment's at the top level only, so without "required" the config
    # silently took the model's default seed (0) instead of the deployment's (42).
    config = _good()
    del config["seed"]
    assert TrainConfig.model_validate(config).seed == 0  # what the run would have trained with
    errors = build_error_obj(validate({"config": config}, schema))
    assert errors == {
        "valid": False,
        "errors": [
            {
                "property": "config",
                "errors": [{"property": "seed", "errors": ["'seed' is a required property"]}],
            }
        ],
    }
    for section in ("trainer", "checkpoint", "mlflow", "data"):
        for field in list(_good()[section]):
            config = _good()
            del config[section][field]
            assert validate({"config": config}, schema), f"{section}.{field} left out was accepted"


@pytest.mark.parametrize(
    ("partition", "accepted"),
    [("2024-05-01", True), (None, True), ("2024/05/01", False), ("20240501", False), ("", False)],
)
def test_the_retraining_form_refuses_a_garbled_partition(
    schemas: dict[str, dict[str, Any]], partition: str | None, accepted: bool
) -> None:
    # the data-landed trigger's partition goes through the same schema: a garbled day starts no run
    errors = validate({"config": _good(), "partition": partition}, schemas["retraining"])
    assert (not errors) == accepted, errors


# The top-level parameters a flow cannot run without: the form marks them required and the API refuses a
# run that lacks them (or sends them empty) before any work, instead of the flow failing a minute later.
REQUIRED_PARAMETERS = {
    "training": ["config"],
    "retraining": ["config"],
    "example-pipeline": ["config"],
    "reproduce": ["run_id"],
    "predict": ["model_name"],
}


@pytest.mark.parametrize("flow_name", sorted(FLOWS))
def test_the_parameters_a_flow_needs_are_required_and_no_others(
    schemas: dict[str, dict[str, Any]], flow_name: str
) -> None:
    schema = schemas[flow_name]
    assert schema.get("required", []) == REQUIRED_PARAMETERS[flow_name]
    for name in REQUIRED_PARAMETERS[flow_name]:
        assert "default" not in schema["properties"][name], name
        errors = build_error_obj(validate({}, schema))["errors"]
        assert {"property": name, "errors": [f"'{name}' is a required property"]} in errors, errors
    # what the deployment starts the form with: complete, except what only the person running it knows
    initial = deployment_options()[flow_name].get("parameters", {})
    missing = [e["property"] for e in build_error_obj(validate(initial, schema))["errors"]]
    assert missing == (["run_id"] if flow_name == "reproduce" else []), missing


@pytest.mark.parametrize(
    ("flow_name", "parameters", "accepted"),
    [
        ("predict", {"model_name": "digits-classifier"}, True),
        ("predict", {"model_name": ""}, False),
        ("predict", {"model_name": "digits-classifier", "alias": ""}, False),
        ("predict", {"source": None, "model_name": "digits-classifier"}, True),
        ("reproduce", {"run_id": "0123456789abcdef0123456789abcdef"}, True),
        ("reproduce", {"run_id": ""}, False),
        ("reproduce", {"run_id": "r1", "rel_tol": -0.1}, False),
        ("reproduce", {"run_id": "r1", "rel_tol": 1e-6}, True),
        # retraining's partition is optional (the window then ends on the scheduled day), but a day
        ("retraining", {"partition": None}, True),
        ("retraining", {"window_days": 0}, False),
        ("retraining", {"window_days": 7}, True),
        ("retraining", {"lock_timeout_s": -1}, False),
        ("retraining", {"lock_timeout_s": None}, True),
    ],
)
def test_top_level_parameters_are_checked_as_the_flow_checks_them(
    schemas: dict[str, dict[str, Any]], flow_name: str, parameters: dict[str, Any], accepted: bool
) -> None:
    if "config" in REQUIRED_PARAMETERS[flow_name]:
        parameters = {"config": _good(), **parameters}
    errors = validate(parameters, schemas[flow_name])
    assert (not errors) == accepted, errors


@pytest.mark.usefixtures("prefect_harness")
def test_predict_called_from_python_without_a_model_name_is_refused_by_name() -> None:
    # Python callers keep passing model_name second, after the optional source; leaving it out is refused
    # with the same one line as before, not a traceback about a missing default
    from flows.predict import predict_flow

    with pytest.raises(ValueError, match="Expected model_name, the registered model to score with"):
        predict_flow("table.csv")
