"""``lightning-lib``: the pipeline from a terminal.

    lightning-lib train                        # the bundled example on embedded defaults
    lightning-lib train --config run.yaml trainer.max_epochs=5 seed=1
    lightning-lib retrain --config run.yaml --metric test_acc --mode max
    lightning-lib reproduce RUN_ID
    lightning-lib predict data/new.csv --model digits-classifier
    lightning-lib serve                        # deployments + nightly retraining, from this process
    lightning-lib config --config run.yaml     # validate and print a config (or --schema)

Every command validates its input before any work and exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

EPILOG = """Config files are YAML with the fields of TrainConfig (`lightning-lib config --schema` lists them;
examples/pipeline.yaml is a complete one). Overrides are dotted.name=value, values parsed as YAML.
Servers are optional: without PREFECT_API_URL / MLFLOW_TRACKING_URI / AWS_ENDPOINT_URL the run uses
Prefect's temporary local API, MLflow on a local SQLite file and local folders."""


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE.yaml", help="run configuration (default: the bundled example)"
    )
    parser.add_argument(
        "--run-key", help="name of the run; the same key continues its checkpoints and MLflow run"
    )
    parser.add_argument("overrides", nargs="*", metavar="a.b.c=value", help="override config fields")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        help="Parquet URI for the predictions, under the same roots (default: under the model's data root,"
        " which must lie there); never replaces a file that predict did not write",
    )
    predict.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else runs/mlflow/mlflow.db")

    serve = commands.add_parser("serve", help="serve the deployments here, or deploy them to a work pool")
    serve.add_argument("--config", metavar="FILE.yaml", help="default parameters of the deployments")
    serve.add_argument("--cron", default=None, help='retraining schedule (default "0 3 * * *")')
    serve.add_argument("--work-pool", help="deploy to this work pool instead of serving from this process")
    serve.add_argument("--source", default=".", help="where workers get the code (git URL or folder)")
    serve.add_argument("--image", help="container image for Docker/Kubernetes work pools")

    config = commands.add_parser("config", help="validate and print a config, or print its JSON schema")
    _add_config_args(config)
    config.add_argument("--schema", action="store_true", help="print the JSON schema (the Prefect form)")
    return parser


def _config(args: argparse.Namespace) -> Any:
    from flows.defaults import load_config

    overrides = list(args.overrides) + ([f"run_key={args.run_key}"] if args.run_key else [])
    return load_config(args.config, overrides)


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
    if PREFECT_API_URL.value():
        return f"{PREFECT_UI_URL.value() or PREFECT_API_URL.value().removesuffix('/api')}{page}"
    return f"prefect server start   then http://127.0.0.1:4200{page}"


def run(args: argparse.Namespace) -> int:
    if args.command == "config":
        from tasks.config import TrainConfig

        if args.schema:
            print(json.dumps(TrainConfig.model_json_schema(), indent=2))
        else:
            print(json.dumps(_config(args).model_dump(mode="json"), indent=2))
        return 0
    if args.command == "train":
        from flows.training import training

        _print_training(training(_config(args)))
        return 0
    if args.command == "retrain":
        from flows.retraining import retraining

        result = retraining(
            _config(args),
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

        scored = predict_flow(
            args.source,
            args.model,
            args.alias,
            args.output,
            args.tracking_uri,
            apply_overrides({}, args.datamodule_arg) or None,
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

            config = load_config(args.config)
        cron = args.cron or deploy.DEFAULT_CRON
        if args.work_pool:
            ids = deploy.deploy(args.work_pool, args.source, args.image, config, cron)
            print(f"Deployed {len(ids)} deployments to work pool {args.work_pool!r}.")
        else:
            deploy.serve(config, cron)
        return 0
    raise AssertionError(args.command)  # argparse only accepts the commands above


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # the temporary local API must not try to reach the internet (telemetry) from a user's machine or CI
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        return run(args)
    except (ValidationError, ValueError, LookupError, FileNotFoundError, PermissionError) as exc:
        # input errors: one clear message, no traceback (the flow run's log has the details)
        print(f"lightning-lib {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
