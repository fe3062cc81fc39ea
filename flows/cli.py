"""``lightning-lib``: the pipeline from a terminal.

    lightning-lib train                        # the bundled example on embedded defaults
    lightning-lib train --config run.yaml trainer.max_epochs=5 seed=1
    lightning-lib retrain --config run.yaml --metric test_acc --mode max
    lightning-lib reproduce RUN_ID
    lightning-lib predict data/new.csv --model digits-classifier
    lightning-lib serve                        # deployments + nightly retraining, from this process
    lightning-lib worker --pool cpu            # run a process work pool's runs (deployed by serve --work-pool)
    lightning-lib config --config run.yaml     # validate and print a config (or --schema)

Every command validates its input before any work. An input error (a flag, a config key or value, a
file, a name that does not exist, a refused reproduction) is one line on stderr naming the flag or key as
typed, with the nearest valid one when it looks like a typo, and exit status 2; the flow run's log in
Prefect keeps the full traceback. Any other failure keeps its traceback and exits 1.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import difflib
import json
import logging
import os
import re
import signal
import sys
import textwrap
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError

if TYPE_CHECKING:
    from flows.embedded import TemporaryApi

EPILOG = """Config files are YAML with the fields of TrainConfig (`lightning-lib train --help-config` lists
them; examples/pipeline.yaml is a complete one). Overrides are dotted.name=value, values parsed as YAML.
Servers are optional: without PREFECT_API_URL / MLFLOW_TRACKING_URI / AWS_ENDPOINT_URL the run uses
Prefect's temporary local API, MLflow on a local SQLite file and local folders."""


# a shell's status for a command ended by SIGINT (128 + 2)
_INTERRUPTED_EXIT = 130


class _InputError(Exception):
    """An input error the CLI finds itself (flags, arguments): one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports an error as one line (no usage block), with the nearest valid choice."""

    commands: dict[str, _Parser]

    def error(self, message: str) -> NoReturn:
        raise _InputError(f"{self.prog}: {_choice_hint(message)}")

    def flags(self) -> list[str]:
        """The long flags this parser takes (``--allow-code-change``, ...)."""
        return [o for action in self._actions for o in action.option_strings if o.startswith("--")]


def _choice_hint(message: str) -> str:
    invalid = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if invalid:
        given, choices = invalid.group(1), re.findall(r"'([^']*)'", invalid.group(2))
        close = difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
        if close:
            return f"{message}; did you mean {close[0]!r}?"
    return message


class _HelpConfig(argparse.Action):
    """``--help-config``: print every config key with its type, default and description, then exit."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(config_help())
        parser.exit()


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE.yaml", help="run configuration (default: the bundled example)"
    )
    parser.add_argument(
        "--help-config",
        action=_HelpConfig,
        help="list the config keys (YAML fields and a.b.c=value overrides) with type, default and description",
    )
    parser.add_argument(
        "--run-key", help="name of the run; the same key continues its checkpoints and MLflow run"
    )
    parser.add_argument("overrides", nargs="*", metavar="a.b.c=value", help="override config fields")


def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-lib`` command line: one sub-command per flow, plus ``serve`` and ``config``."""
    parser = _Parser(
        prog="lightning-lib",
        description=(__doc__ or "").replace("``", ""),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="prepare data, fit, validate, test, register", epilog=EPILOG)
    _add_config_args(train)

    retrain = commands.add_parser("retrain", help="train a challenger; promote it if it beats the champion")
    _add_config_args(retrain)
    retrain.add_argument("--metric", default="test_loss", help="test metric that decides (default test_loss)")
    retrain.add_argument("--mode", choices=("min", "max"), default="min", help="lower or higher is better")
    retrain.add_argument("--warm-start", action="store_true", help="start from the champion's weights")
    retrain.add_argument(
        "--window-end", type=dt.date.fromisoformat, help="YYYY-MM-DD for {window_end} in data.source"
    )
    retrain.add_argument("--window-days", type=int, default=1, help="days in the data window (default 1)")

    reproduce = commands.add_parser("reproduce", help="rerun a past MLflow run and compare its metrics")
    reproduce.add_argument("run_id", help="the MLflow run id")
    reproduce.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else runs/mlflow/mlflow.db")
    reproduce.add_argument(
        "--allow-code-change", action="store_true", help="run even if the git commit differs"
    )
    reproduce.add_argument(
        "--allow-data-change", action="store_true", help="run even if the data digest differs"
    )
    reproduce.add_argument(
        "--allow-unfinished-run",
        action="store_true",
        help="rerun a run that ended FAILED or KILLED (or is still RUNNING); refused by default",
    )
    reproduce.add_argument("--rel-tol", type=float, default=0.0, help="relative tolerance (default 0: exact)")

    predict = commands.add_parser(
        "predict",
        help="score a table, or the model's own data module's predict data, with a registered model",
    )
    predict.add_argument(
        "source",
        nargs="?",
        help="table to score (a model trained on a table): local path or s3://bucket/key, under"
        " LIGHTNING_LIB_DATA_ROOTS (else the working directory); none for a model trained on its own data module",
    )
    predict.add_argument(
        "--datamodule-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an argument of the model's own data module over its training config's (value parsed as YAML),"
        " e.g. predict=s3://bucket/new/; repeatable",
    )
    predict.add_argument("--model", required=True, help="registered model name")
    predict.add_argument("--alias", default="champion", help="registry alias (default champion)")
    predict.add_argument(
        "--output",
        help="Parquet URI for the predictions, under the same roots (default for a table: next to it,"
        " SOURCE_STEM.predictions.parquet; for a data module: under the model's data root, which must lie"
        " there); never replaces a file that predict did not write",
    )
    predict.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else runs/mlflow/mlflow.db")

    serve = commands.add_parser("serve", help="serve the deployments here, or deploy them to a work pool")
    serve.add_argument("--config", metavar="FILE.yaml", help="default parameters of the deployments")
    serve.add_argument("--cron", default=None, help='retraining schedule (default "0 3 * * *")')
    serve.add_argument("--work-pool", help="deploy to this work pool instead of serving from this process")
    serve.add_argument("--source", default=".", help="where workers get the code (git URL or folder)")
    serve.add_argument("--image", help="container image for Docker/Kubernetes work pools")

    worker = commands.add_parser(
        "worker",
        help="run a process work pool's flow runs, each forked from a process that imported the flows",
    )
    worker.add_argument("--pool", required=True, help="the process work pool (created if missing)")
    worker.add_argument("--name", help="the worker's name in Prefect (default: a generated one)")
    worker.add_argument("--limit", type=int, help="at most this many runs at once (default: no limit)")

    config = commands.add_parser("config", help="validate and print a config, or print its JSON schema")
    _add_config_args(config)
    config.add_argument("--schema", action="store_true", help="print the JSON schema (the Prefect form)")
    parser.commands = {
        name: command
        for name, command in commands.choices.items()
        if isinstance(command, _Parser)  # always: add_parser makes parsers of the parent's class
    }
    return parser


def _config(args: argparse.Namespace) -> Any:
    from flows.defaults import load_config

    _check_config_file(args.config)
    overrides = list(args.overrides) + ([f"run_key={args.run_key}"] if args.run_key else [])
    return load_config(args.config, overrides)


def _check_config_file(path: str | None) -> None:
    if path is not None and not Path(path).is_file():
        what = "a folder" if Path(path).is_dir() else "no such file"
        raise _InputError(f"Expected --config to name a YAML file, received {path!r} ({what}).")


# -- the config's keys: --help-config, and "did you mean" for a mistyped key or flag -------------------


def _schema_entries() -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """``(dotted key, its JSON schema, when it is required)`` for every leaf of TrainConfig's schema (the
    Prefect form's), sections flattened: ``trainer.max_epochs``, ``data.source``, ... The last item is
    None for an optional key, "" for a required one, and the section for one required when its optional
    section is given."""
    from tasks.config import TrainConfig

    schema = TrainConfig.model_json_schema()
    defs = schema.get("$defs", {})

    def section(node: Mapping[str, Any]) -> Mapping[str, Any] | None:
        for option in [node, *node.get("anyOf", ())]:
            ref = option.get("$ref", "")
            target = defs.get(ref.rpartition("/")[2]) if ref else None
            if target is not None and "properties" in target:
                return target
        return None

    def walk(
        node: Mapping[str, Any], prefix: str, within: str
    ) -> Iterator[tuple[str, dict[str, Any], str | None]]:
        # The form's schema lists every field as required (a cleared field must not fall back silently);
        # a file or an override may still leave out any field that has a default.
        required = {n for n in node.get("required", ()) if "default" not in node["properties"][n]}
        for name, prop in node["properties"].items():
            inner = section(prop)
            if inner is not None:
                optional = name not in required
                yield from walk(inner, f"{prefix}{name}.", f"{prefix}{name}" if optional else within)
            else:
                yield f"{prefix}{name}", prop, within if name in required else None

    yield from walk(schema, "", "")


def config_keys() -> list[str]:
    """Every config key as it is typed in a YAML file's sections or an override: ``trainer.max_epochs``."""
    return [key for key, _, _ in _schema_entries()]


_INT32_MAX = 2**31 - 1  # the schema's bound on counts: a storage limit, not worth showing


def _type_text(prop: Mapping[str, Any]) -> str:
    options = list(prop.get("anyOf", [prop]))
    texts: list[str] = []
    for option in options:
        if option.get("type") == "null":
            continue
        if "enum" in option or "const" in option:
            values = option.get("enum", [option.get("const")])
            text = " | ".join(json.dumps(v) for v in values)
        elif option.get("type") == "array":
            text = f"list of {_type_text(option.get('items', {}))}"
        elif option.get("type") == "object" or "$ref" in option:
            text = "mapping"
        else:
            text = str(option.get("type", "value"))
        texts.append(f"{text} {bounds}" if (bounds := _bounds_text(option)) else text)
    text = " or ".join(texts) or "value"
    return f"{text}, or empty" if len(texts) < len(options) else text


def _bounds_text(option: Mapping[str, Any]) -> str:
    """``in [-1, 256]``, ``in (0, 1)``, ``>= 1``: a schema's numeric bounds as the config checks them."""
    low = next(
        ((option[k], b) for k, b in (("minimum", "["), ("exclusiveMinimum", "(")) if k in option), None
    )
    high = next(
        ((option[k], b) for k, b in (("maximum", "]"), ("exclusiveMaximum", ")")) if k in option), None
    )
    if high is not None and high[0] == _INT32_MAX:
        high = None
    if low is not None and high is not None:
        return f"in {low[1]}{low[0]}, {high[0]}{high[1]}"
    if low is not None:
        return f"{'>=' if low[1] == '[' else '>'} {low[0]}"
    if high is not None:
        return f"{'<=' if high[1] == ']' else '<'} {high[0]}"
    return ""


def config_help() -> str:
    """``--help-config``: each key of the config with its type, bounds, default and description."""
    lines = [
        "Config keys: YAML fields (sections are the part before the dot) or key=value overrides on the",
        "command line (values parsed as YAML; an empty value clears a field). examples/pipeline.yaml is a",
        "complete config.",
        "",
    ]
    for key, prop, required in _schema_entries():
        if required is not None:
            default = f"required when {required} is given" if required else "required"
        elif "default" in prop:
            default = "default " + ("empty" if prop["default"] is None else json.dumps(prop["default"]))
        else:
            default = "default empty"
        lines.append(f"{key}  ({_type_text(prop)}; {default})")
        description = prop.get("description", "")
        if description:
            lines += textwrap.wrap(description, width=100, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def _closest_key(typed: str, keys: Sequence[str]) -> str | None:
    """The config key ``typed`` most likely meant: the one with the same last name, else the nearest."""
    leaf = typed.rpartition(".")[2]
    same_leaf = [key for key in keys if key.rpartition(".")[2] == leaf]
    if same_leaf:
        return min(same_leaf, key=lambda key: -difflib.SequenceMatcher(None, typed, key).ratio())
    close = difflib.get_close_matches(typed, keys, n=1, cutoff=0.6)
    if close:
        return close[0]
    by_leaf = {key.rpartition(".")[2]: key for key in keys}
    close = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.75)
    return by_leaf[close[0]] if close else None


def _typed_keys(loc: str, given: Any) -> list[str]:
    """The dotted keys the user typed under an unknown ``loc`` (a whole unknown section has several)."""
    if isinstance(given, Mapping) and given:
        return [key for name, value in given.items() for key in _typed_keys(f"{loc}.{name}", value)]
    return [loc]


def describe_validation_error(exc: ValidationError) -> str:
    """A config's validation errors as one line, each naming its dotted key; an unknown key gets the
    nearest known one (``unknown key trainer.max_epoch (did you mean trainer.max_epochs?)``)."""
    keys = config_keys()
    parts: list[str] = []
    for error in exc.errors(include_url=False):
        # union members add their type to the location (trainer.devices.int): keep the key's part
        loc = ".".join(str(p) for p in error["loc"] if not str(p).startswith(("function-", "tagged-union")))
        if error["type"] == "extra_forbidden":
            for typed in _typed_keys(loc, error.get("input")):
                near = _closest_key(typed, keys)
                parts.append(f"unknown key {typed}" + (f" (did you mean {near}?)" if near else ""))
            continue
        message = " ".join(str(error["msg"]).removeprefix("Value error, ").split())
        part = f"{loc}: {message}" if loc else message
        if part not in parts:
            parts.append(part)
    return "; ".join(parts)


def _print_training(result: Any) -> None:
    from tasks.tracking import run_url, ui_command

    fitted = result.fit
    print("\nTraining finished")
    for name, value in sorted({**result.validation_metrics, **result.test_metrics}.items()):
        print(f"  {name:<22}{value:.4f}")
    print(f"  run key               {result.run_key}")
    print(f"  steps                 {fitted.global_step} ({fitted.steps_this_attempt} in this attempt)")
    print(f"  best checkpoint       {fitted.best_checkpoint_uri}")
    print(f"  checkpoints           {fitted.checkpoint_dir}")
    if result.model_version is not None:
        champion = " (champion)" if result.champion else ""
        print(
            f"  registered            {result.model_version.name} v{result.model_version.version}{champion}"
        )
    print(
        f"  MLflow run            {run_url(fitted.tracking_uri, fitted.mlflow_experiment_id, fitted.mlflow_run_id)}"
    )
    command = ui_command(fitted.tracking_uri)
    if command:
        print(f"  open MLflow UI        {command}")
    print(f"  Prefect flow run      {prefect_ui_hint(result.flow_run_id)}")


def prefect_ui_hint(flow_run_id: str | None) -> str:
    """The flow run's page: on the configured server, or on a local ``prefect server start``, which reads
    the same database the temporary API wrote to."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    page = f"/runs/flow-run/{flow_run_id}" if flow_run_id else "/runs"
    from flows.embedded import is_temporary

    api_url = PREFECT_API_URL.value()
    if api_url and not is_temporary(api_url):
        return f"{PREFECT_UI_URL.value() or api_url.removesuffix('/api')}{page}"
    return f"prefect server start   then http://127.0.0.1:4200{page}"


_FLOW_COMMANDS = ("train", "retrain", "reproduce", "predict", "serve")


def _start_embedded(command: str) -> TemporaryApi | None:
    """For a flow command whose environment names no Prefect server: no telemetry, and Prefect's temporary
    API started now, first thing, so that its start (5-16 s here) overlaps the CLI's imports and checks
    (``flows.embedded``)."""
    if command not in _FLOW_COMMANDS:
        return None
    from flows import embedded

    if not embedded.is_embedded():
        return None
    if "prefect.settings" in sys.modules and not embedded.settings_allow_temporary_api():
        return None  # Prefect already loaded (the CLI called from Python): its settings are free to read
    embedded.quiet_telemetry()  # before Prefect is imported: its SDK telemetry starts at import
    return embedded.launch_temporary_api()  # a malformed start limit is an input error before it starts


def _adopt(api: TemporaryApi | None) -> TemporaryApi | None:
    """The temporary API as the run's Prefect API, unless Prefect's settings name a server (then it is
    stopped); Prefect's console logging set up with the CLI's filter."""
    if api is not None:
        from flows import embedded

        if not embedded.adopt(api):
            api = None
    _watch_console()
    return api


def _ready(api: TemporaryApi | None, config: Any = None) -> None:
    """Wait for the temporary API (progress on stderr), after the command's own imports and checks and
    what the run will need first (its imports, its local MLflow store), done while the API starts."""
    if api is not None:
        from flows.embedded import warm_imports, warm_tracking

        if config is not None:
            warm_tracking(config)
        warm_imports(api)
        api.wait()


def run(args: argparse.Namespace) -> int:
    """Run the parsed command."""
    if args.command == "config":
        from tasks.config import TrainConfig

        if args.schema:
            print(json.dumps(TrainConfig.model_json_schema(), indent=2))
        else:
            print(json.dumps(_config(args).model_dump(mode="json"), indent=2))
        return 0
    configured = args.command in ("train", "retrain")
    if configured or (args.command == "serve" and args.config):
        _check_config_file(args.config)
    # the temporary API starts first and runs while the config is checked and the flows are imported; an
    # input error found meanwhile stops it before any run begins
    api = _start_embedded(args.command)
    try:
        config = _config(args) if configured else None
        api = _adopt(api)
    except BaseException:
        if api is not None:
            api.stop(wait=False)
        raise
    if api is None:
        return _dispatch(args, api, config)
    from flows.embedded import run_settings

    with run_settings():
        return _dispatch(args, api, config)


class _Interrupted(Exception):
    """A run stopped by Ctrl-C (or SIGINT) after Prefect recorded it Crashed; ``run_key`` continues it."""

    def __init__(self, run_key: str | None = None) -> None:
        super().__init__(run_key)
        self.run_key = run_key


class _CtrlC:
    """Remembers that SIGINT arrived (then raises ``KeyboardInterrupt`` as Python's own handler does).

    What reaches the CLI after a Ctrl-C is not always a ``KeyboardInterrupt``: the Trainer ends its graceful
    shutdown with ``SystemExit`` (as Lightning does), pydantic wraps one raised inside a serializer, a
    library's bare ``except`` swallows one in the middle of an import that then fails later. Whatever
    surfaces, the command was interrupted."""

    def __init__(self) -> None:
        self.received = False

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Watch for SIGINT in the block (over Python's default handler only: an embedding application's
        own handler is left alone), then put the default back."""
        self.received = False
        installed = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )
        if installed:
            signal.signal(signal.SIGINT, self._handle)
        try:
            yield
        finally:
            if installed:
                signal.signal(signal.SIGINT, signal.default_int_handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True
        signal.default_int_handler(signum, frame)


_CTRL_C = _CtrlC()


class _CrashedRun:
    """A flow's ``on_crashed`` hook that remembers the crashed flow run's id (the run key derives from it)."""

    def __init__(self) -> None:
        self.flow_run_id: str | None = None

    def remember_crashed_flow_run(self, flow: Any, flow_run: Any, state: Any) -> None:
        self.flow_run_id = str(flow_run.id)


def _dispatch(args: argparse.Namespace, api: TemporaryApi | None, config: Any) -> int:
    if args.command == "train":
        from flows.training import RUN_KEY_PREFIX, training

        _ready(api, config)
        assert config is not None  # checked above, before the API started
        crashed = _CrashedRun()
        try:
            trained = training.with_options(on_crashed=[crashed.remember_crashed_flow_run])(config)
        except BaseException as exc:
            if crashed.flow_run_id is not None and _CTRL_C.received:
                from tasks.run_key import run_key_of_flow_run

                raise _Interrupted(run_key_of_flow_run(config, RUN_KEY_PREFIX, crashed.flow_run_id)) from exc
            raise
        _print_training(trained)
        return 0
    if args.command == "retrain":
        from flows.retraining import retraining

        _ready(api, config)
        assert config is not None
        result = retraining(
            config,
            metric=args.metric,
            mode=args.mode,
            warm_start=args.warm_start,
            window_end=args.window_end,
            window_days=args.window_days,
        )
        print(
            ("Promoted" if result.decision.promote else "Kept the champion") + f": {result.decision.reason}."
        )
        return 0
    if args.command == "reproduce":
        from flows.reproduce import reproduce

        _ready(api)
        outcome = reproduce(
            args.run_id,
            tracking_uri=args.tracking_uri,
            allow_code_change=args.allow_code_change,
            allow_data_change=args.allow_data_change,
            rel_tol=args.rel_tol,
            allow_unfinished_run=args.allow_unfinished_run,
        )
        print(outcome.message)
        return 0 if outcome.match else 3
    if args.command == "predict":
        from flows.predict import predict_flow
        from tasks.params import apply_overrides

        datamodule_args = apply_overrides({}, args.datamodule_arg) or None
        _ready(api)
        scored = predict_flow(
            args.source, args.model, args.alias, args.output, args.tracking_uri, datamodule_args
        )
        print(
            f"Wrote {scored.rows} predictions to {scored.uri} (sha256 {scored.sha256}) with {scored.model}."
        )
        return 0
    if args.command == "serve":
        from flows import deploy

        config = None
        if args.config:
            from flows.defaults import load_config

            config = load_config(args.config)  # the file was checked before the temporary API started
        cron = args.cron or deploy.DEFAULT_CRON
        if args.work_pool and api is not None:
            raise _InputError(
                f"Expected a Prefect server for --work-pool {args.work_pool} (set PREFECT_API_URL): "
                "deployments registered on the temporary local API would be gone when this command ends."
            )
        _ready(api)
        if args.work_pool:
            ids = deploy.deploy(args.work_pool, args.source, args.image, config, cron)
            print(f"Deployed {len(ids)} deployments to work pool {args.work_pool!r}.")
        else:
            deploy.serve(config, cron)
        return 0
    if args.command == "worker":
        from flows.worker import run_worker

        run_worker(args.pool, args.name, args.limit)
        return 0
    raise AssertionError(args.command)  # argparse only accepts the commands above


# -- errors: input errors in one line, the rest with their detail -------------------------------------

_INPUT_ERROR_TYPES = (ValueError, LookupError, FileNotFoundError, PermissionError)  # ValidationError too
# Where the pipeline's own checks raise. The same exception types raised from the user's model or data
# module, torch or a library are failures to debug, not input errors: they keep their traceback.
_CHECKING_PACKAGES = ("tasks", "flows", "lightning_lib", "pydantic")


def _checking_folders() -> tuple[str, ...]:
    import importlib.util

    folders = []
    for name in _CHECKING_PACKAGES:
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            folders.append(os.path.join(os.path.realpath(location), ""))
    return tuple(folders)


def is_input_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the pipeline refusing its input (a value, a key, a file, a name, a reproduction),
    raised by its own checks, rather than a failure inside the user's code or a library."""
    if isinstance(exc, _InputError):
        return True
    if not isinstance(exc, _INPUT_ERROR_TYPES):
        return False
    tb = exc.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    return os.path.realpath(tb.tb_frame.f_code.co_filename).startswith(_checking_folders())


def describe_input_error(exc: BaseException) -> str:
    """The error's text in one line, with the CLI's flags where the flows name Python arguments:
    ``allow_code_change=True (--allow-code-change)`` becomes ``--allow-code-change``."""
    text = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
    text = re.sub(r"\b[a-z_]+(?:=True)? \((--[a-z][a-z-]*)\)", r"\1", text)
    return " ".join(text.split())


class _ConsoleFilter(logging.Filter):
    """On the terminal only, drop Prefect's records of a failure that is an input error: its traceback
    (task and flow) and the "Finished in state Failed" lines that repeat it. The flow run's log on the
    Prefect API keeps them all; the CLI prints the one line. Other failures pass, and are noted as shown
    so that the CLI does not print their traceback a second time."""

    def __init__(self) -> None:
        super().__init__()
        self.reset()

    def reset(self) -> None:
        self.input_error_seen = False
        self.shown: list[BaseException] = []

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_input_error(exc):
            self.input_error_seen = True
            return False
        if exc is not None:
            self.shown.append(exc)
        message = record.getMessage()
        if _CrashedRun.remember_crashed_flow_run.__name__ in message:  # Prefect's lines about the CLI's hook
            return False
        return not (self.input_error_seen and message.startswith("Finished in state Failed"))


_CONSOLE = _ConsoleFilter()
# the name lightning_lib gives the handler it adds when the app configured no logging (lightning_lib/__init__)
_LIBRARY_CONSOLE_HANDLER = "lightning_lib.console"


def _watch_console() -> None:
    """Put the filter on Prefect's console handlers, once (set up first: a process where Prefect's
    logging is not configured yet would configure it at the first flow run, without the filter)."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()

    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in ("prefect", "uvicorn", "fastapi"))]
    for handler in {h for log in loggers for h in log.handlers if isinstance(h, PrefectConsoleHandler)}:
        if _CONSOLE not in handler.filters:
            handler.addFilter(_CONSOLE)
    if any(isinstance(h, PrefectConsoleHandler) for h in logging.getLogger().handlers):
        # the library's records reach Prefect's console handler on the root logger; its own fallback
        # handler (for apps that configure no logging) would print each line a second time
        library = logging.getLogger("lightning_lib")
        for fallback in [h for h in library.handlers if h.get_name() == _LIBRARY_CONSOLE_HANDLER]:
            library.removeHandler(fallback)


_VALUE_FLAGS_WITH_CONFIG = ("train", "retrain", "config")


def _unknown_arguments(parser: _Parser, command: str, extras: list[str], argv: list[str]) -> str:
    """One line for arguments the command does not take: a mistyped flag gets the nearest flag, and a
    config key written as a flag (``--max-epochs 3``) gets its override (``trainer.max_epochs=3``)."""
    prog = f"{parser.prog} {command}"
    flags = parser.commands[command].flags()
    token = next((t for t in extras if t.startswith("-")), None)
    if token is None:
        return f"{prog}: unexpected argument {extras[0]!r} (see {prog} --help)"
    flag, sep, value = token.partition("=")
    if not sep:
        after = argv[argv.index(token) + 1 :] if token in argv else []
        value = after[0] if after and not after[0].startswith("-") else "VALUE"
    message = f"{prog}: unknown flag {flag}"
    if command in _VALUE_FLAGS_WITH_CONFIG:
        keys = config_keys()
        typed = flag.lstrip("-").replace("-", "_")
        exact = [k for k in keys if k == typed or k.rpartition(".")[2] == typed]
        near_flag = difflib.get_close_matches(flag, flags, n=1, cutoff=0.75)
        if not exact and near_flag:
            return f"{message} (did you mean {near_flag[0]}?)"
        key = exact[0] if exact else _closest_key(typed, keys)
        if key:
            return f"{message}: config keys are set as key=value, did you mean {key}={value}?"
    near_flag = difflib.get_close_matches(flag, flags, n=1, cutoff=0.6)
    if near_flag:
        return f"{message} (did you mean {near_flag[0]}?)"
    return f"{message} (see {prog} --help)"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    assert isinstance(parser, _Parser)
    args, extras = parser.parse_known_args(argv)
    if extras:
        raise _InputError(_unknown_arguments(parser, args.command, extras, argv))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for an input error, 1 for another failure, 130 when
    interrupted by Ctrl-C)."""
    tokens = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse(tokens)
    except _InputError as exc:
        print(exc, file=sys.stderr)
        return 2
    # the temporary local API must not try to reach the internet (telemetry) from a user's machine or CI
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    prefix = f"lightning-lib {args.command}"
    _CONSOLE.reset()
    try:
        with _CTRL_C.watching():
            return run(args)
    except BaseException as exc:
        if not _CTRL_C.received:
            if isinstance(exc, Exception):
                return _failed(prefix, exc)
            raise
        # the flow run's log keeps the detail (Crashed); the run can be continued from its last checkpoint
        run_key = exc.run_key if isinstance(exc, _Interrupted) else None
        hint = (
            f"; to continue from its last checkpoint, run it again (same config and overrides) with --run-key {run_key}"
            if run_key
            else ""
        )
        print(f"{prefix}: interrupted{hint}", file=sys.stderr)
        return _INTERRUPTED_EXIT


def _failed(prefix: str, exc: Exception) -> int:
    """Show a failed command: one line for an input error (exit 2), else the traceback once and a last
    line naming the error (exit 1)."""
    if is_input_error(exc):
        # one line; the flow run's log in Prefect keeps the traceback
        print(f"{prefix}: {describe_input_error(exc)}", file=sys.stderr)
        return 2
    if not any(shown is exc for shown in _CONSOLE.shown):
        traceback.print_exception(exc)  # not shown by a flow run's log: the detail is needed here
    where = "above and in the flow run's log" if _CONSOLE.shown else "above"
    print(
        f"{prefix}: failed with {type(exc).__name__}: {' '.join(str(exc).split())} (traceback {where})",
        file=sys.stderr,
    )
    return 1


def console() -> NoReturn:
    """The ``lightning-lib`` console script: :func:`main`, then a quick exit."""
    _exit_now(main())


def _exit_now(status: int) -> NoReturn:
    """End the process as the interpreter would, without its last step: freeing every object of every
    module (1.5-3 s after a run, with torch, MLflow and Prefect loaded). Non-daemon threads are waited for
    and the exit handlers run (Prefect's delivery of logs and events, the temporary API's stop, logging's
    flush) exactly as at a normal exit; only the teardown is skipped. Falls back to a normal exit where
    this Python lacks those steps."""
    wait_for_threads = getattr(threading, "_shutdown", None)
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if wait_for_threads is None or run_exit_handlers is None:
        sys.exit(status)
    wait_for_threads()
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        # a closed or broken pipe: nothing more can be shown
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    console()
