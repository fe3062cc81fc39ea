"""Issue 13, "The CLI shows tracebacks": every input error of every command is one line on stderr naming the
flag or key as typed (with the nearest valid one), exit status 2, no traceback; the flow run's log keeps the
detail. And ``--help-config``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows import cli
from flows.defaults import EXAMPLE_CONFIG
from tasks.config import TrainConfig
from tasks.params import flatten
from tests.flows.conftest import digits_config


@pytest.fixture(autouse=True)
def _prefect_console_on_this_test_s_stderr() -> None:
    """Each ``main()`` here runs in one pytest process: Prefect's console handler, set up once per process,
    would keep writing to an earlier test's captured (and since closed) stderr. A real CLI process sets it
    up once, on its own stderr."""
    from prefect.logging.configuration import setup_logging

    setup_logging(incremental=False)


def one_error_line(code: int, err: str, command: str) -> str:
    """The CLI's single stderr line, after checking the exit status and that nothing else is there."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(" ".join(["lightning-lib", command]).rstrip() + ":"), lines[0]
    return lines[0]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def test_a_config_key_given_as_a_flag_is_answered_with_its_override(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = one_error_line(*run_cli(capsys, "train", "--max-epochs", "3"), "train")
    assert "unknown flag --max-epochs" in line and "trainer.max_epochs=3" in line
    line = one_error_line(*run_cli(capsys, "retrain", "--seed=7"), "retrain")
    assert "seed=7" in line
    assert "usage:" not in line


def test_a_mistyped_key_gets_the_nearest_one(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_error_line(*run_cli(capsys, "train", "trainer.max_epoch=3"), "train")
    assert line == "lightning-lib train: unknown key trainer.max_epoch (did you mean trainer.max_epochs?)"
    # a mistyped section, and a key missing its section, are both found
    line = one_error_line(*run_cli(capsys, "config", "traner.max_epochs=3", "max_epochs=4"), "config")
    assert "unknown key traner.max_epochs (did you mean trainer.max_epochs?)" in line
    assert "unknown key max_epochs (did you mean trainer.max_epochs?)" in line


def test_a_bad_value_names_the_key_and_the_bound(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_error_line(*run_cli(capsys, "train", "trainer.max_epochs=-5"), "train")
    assert "trainer.max_epochs:" in line and ">= -1" in line and "-5" in line
    line = one_error_line(
        *run_cli(capsys, "config", "data.val_fraction=0.6", "data.test_fraction=0.6"), "config"
    )
    assert "data:" in line and "val_fraction + test_fraction < 1" in line
    line = one_error_line(*run_cli(capsys, "config", "seed=abc"), "config")
    assert line.startswith("lightning-lib config: seed: ") and "integer" in line


def test_a_yaml_config_with_a_python_tag_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("model: !!python/object/apply:os.system ['echo owned']\n")
    line = one_error_line(*run_cli(capsys, "train", "--config", str(evil)), "train")
    assert (
        repr(str(evil)) in line and "!!python/object/apply:os.system" in line and "line 1, column 8" in line
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer: [1\nseed: 2\n")
    line = one_error_line(*run_cli(capsys, "config", "--config", str(broken)), "config")
    assert "Expected valid YAML" in line and "line 2" in line
    line = one_error_line(*run_cli(capsys, "config", "seed=!!python/name:os.system"), "config")
    assert "the override 'seed=!!python/name:os.system'" in line
    line = one_error_line(*run_cli(capsys, "train", "--config", str(tmp_path / "nope.yaml")), "train")
    assert "--config" in line and "no such file" in line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["trian"], "invalid choice: 'trian'"),
        (
            ["reproduce", "abc", "--allow-code-chnge"],
            "unknown flag --allow-code-chnge (did you mean --allow-code-change?)",
        ),
        (["predict", "x.csv", "--model", "m", "--outptu", "y.parquet"], "did you mean --output?"),
        (["predict", "x.csv"], "the following arguments are required: --model"),
        (["retrain", "--mode", "mx"], "invalid choice: 'mx'"),
        (["retrain", "--window-end", "yesterday"], "argument --window-end"),
        (["serve", "--crn", "0 3 * * *"], "did you mean --cron?"),
        (["reproduce"], "the following arguments are required: run_id"),
        (["serve", "--config", "no-such.yaml"], "Expected --config to name a YAML file"),
    ],
)
def test_flag_errors_of_every_command_are_one_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_error_line(*run_cli(capsys, *argv), argv[0] if argv[0] != "trian" else "")
    assert expected in line
    if argv[0] == "trian":
        assert "did you mean 'train'?" in line


def test_help_config_lists_every_key_with_type_default_and_description(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in ("train", "retrain"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help-config"])
        assert exit_info.value.code == 0
        shown = capsys.readouterr().out
        assert "trainer.max_epochs  (integer >= -1, or empty; default empty)" in shown
        assert "trainer.accumulate_grad_batches  (integer >= 1; default 1)" in shown
        assert (
            "model  (string; required)" in shown
            and "data.source  (string; required when data is given)" in shown
        )
        assert "    Stop after this many epochs" in shown  # the schema's description
    # every key of the bundled example (the file whose header points here) is listed
    listed = {line.split("  (")[0] for line in shown.splitlines() if "  (" in line and line[0] != " "}
    example = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    free = ("model_kwargs.", "datamodule_kwargs.")  # the model's and data module's own arguments
    assert {key for key in flatten(example) if not key.startswith(free)} <= listed
    assert "--help-config" in EXAMPLE_CONFIG.read_text().splitlines()[1]
    assert set(cli.config_keys()) == listed


def test_refusals_name_the_cli_flags_not_the_python_arguments() -> None:
    from flows.reproduce import ReproductionRefused

    refused = ReproductionRefused(
        "Not reproducing MLflow run r1: the code differs. Pass allow_code_change=True (--allow-code-change) "
        "and allow_data_change=True (--allow-data-change) to run it anyway."
    )
    text = cli.describe_input_error(refused)
    assert "Pass --allow-code-change and --allow-data-change to run it anyway" in text
    assert "allow_code_change" not in text


# -- the flows: the error comes from inside a Prefect flow run ------------------------------------------


@pytest.fixture
def tracked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A working directory with an MLflow store holding one finished pipeline run (no git commit, no data
    digest) and a registered model 'digits-classifier' without versions."""
    from mlflow import MlflowClient
    from prefect.logging.configuration import ensure_logging_setup

    # Prefect's console handler takes sys.stderr when logging is set up: do it before capfd replaces it
    ensure_logging_setup()
    monkeypatch.chdir(tmp_path)
    config = digits_config(tmp_path)
    uri = str(config.mlflow.tracking_uri)
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("cli-errors")
    run = client.create_run(experiment)
    for name, value in config.to_flat_params().items():
        client.log_param(run.info.run_id, name, value)
    client.log_metric(run.info.run_id, "test_acc", 0.5)
    client.set_terminated(run.info.run_id, "FINISHED")
    client.create_registered_model("digits-classifier")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return tmp_path, run.info.run_id


def flow_error_line(code: int, err: str, command: str) -> str:
    """Prefect's own progress lines may come before it; the error is the one line that says it."""
    assert code == 2, err
    assert "Traceback" not in err and "| ERROR" not in err, err
    ours = [line for line in err.splitlines() if line.startswith(f"lightning-lib {command}:")]
    assert len(ours) == 1, err
    assert (
        err.rstrip().splitlines()[-1] == ours[0]
        or "Stopping temporary server" in err.rstrip().splitlines()[-1]
    )
    return ours[0]


@pytest.mark.usefixtures("prefect_harness")
def test_flow_input_errors_are_one_line_and_the_flow_log_keeps_the_traceback(
    tracked: tuple[Path, str], capfd: pytest.CaptureFixture[str]
) -> None:
    folder, run_id = tracked
    uri = f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}"
    (folder / "new.csv").write_text("a,b\n1,2\n")

    code = cli.main(["predict", "new.csv", "--model", "digits-clasifier", "--tracking-uri", uri])
    line = flow_error_line(code, capfd.readouterr().err, "predict")
    assert "No registered model 'digits-clasifier'" in line and "registered models: digits-classifier" in line
    assert "Did you mean 'digits-classifier'?" in line and "alias" not in line

    code = cli.main(["reproduce", "0123456789abcdef0123456789abcdef", "--tracking-uri", uri])
    line = flow_error_line(code, capfd.readouterr().err, "reproduce")
    assert "'0123456789abcdef0123456789abcdef': no such run" in line

    code = cli.main(["reproduce", run_id, "--tracking-uri", uri])
    line = flow_error_line(code, capfd.readouterr().err, "reproduce")
    assert "no git commit tag" in line and "Pass --allow-code-change and --allow-data-change" in line
    assert "allow_code_change" not in line

    code = cli.main(["train", "--config", "run.yaml", f"data.source={folder / 'missing.csv'}"])
    line = flow_error_line(code, capfd.readouterr().err, "train")
    assert line.endswith(
        f"Expected data.source to name an existing file, received {str(folder / 'missing.csv')!r}: there is none."
    )

    # the flow run's log on the Prefect API keeps the full traceback of the last one
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # sends what the background worker holds
    with get_client(sync_client=True) as client:
        (latest,) = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[latest.id])))
    assert any("Traceback" in log.message and "missing.csv" in log.message for log in logs)


def test_a_failure_that_is_not_an_input_error_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the same ValueError raised by the user's own code (a model's training_step) is a bug to debug
    namespace: dict[str, object] = {}
    exec(
        compile("def training_step():\n    raise ValueError('bug')\n", "/project/my_model.py", "exec"),
        namespace,
    )
    with pytest.raises(ValueError) as users:
        namespace["training_step"]()  # type: ignore[operator]
    assert not cli.is_input_error(users.value)
    with pytest.raises(ValueError) as ours:
        TrainConfig.from_yaml(EXAMPLE_CONFIG, ["seed"])
    assert cli.is_input_error(ours.value)
    assert not cli.is_input_error(RuntimeError("CUDA out of memory"))

    def fail(args: object) -> int:
        raise RuntimeError("the worker ran out of memory")

    monkeypatch.setattr(cli, "run", fail)
    assert cli.main(["config"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "the worker ran out of memory" in err
    assert err.rstrip().splitlines()[-1] == (
        "lightning-lib config: failed with RuntimeError: the worker ran out of memory (traceback above)"
    )


@pytest.mark.parametrize("surfaces", ["wrapped", "swallowed", "system_exit"])
def test_whatever_surfaces_after_ctrl_c_is_one_interrupted_line_and_status_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], surfaces: str
) -> None:
    """After a Ctrl-C the CLI may see a KeyboardInterrupt wrapped by a library (pydantic's serializer), an
    error caused by one swallowed mid-import, or the Trainer's SystemExit: the command was interrupted."""
    import os
    import signal

    def interrupted_run(args: object) -> int:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.pthread_sigmask(signal.SIG_BLOCK, [])  # let the handler run
        except KeyboardInterrupt:
            if surfaces == "wrapped":
                raise ValueError("Error calling function `_ser_model`: KeyboardInterrupt:") from None
            if surfaces == "system_exit":
                raise SystemExit(1) from None
        raise AttributeError("module 'numpy._core' has no attribute '_multiarray_umath'")

    monkeypatch.setattr(cli, "run", interrupted_run)
    assert cli.main(["predict", "--model", "m"]) == 130
    err = capsys.readouterr().err
    assert err == "lightning-lib predict: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_failure_without_ctrl_c_is_still_a_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing_run(args: object) -> int:
        raise RuntimeError("the registry is down")

    monkeypatch.setattr(cli, "run", failing_run)
    assert cli.main(["predict", "--model", "m"]) == 1
    err = capsys.readouterr().err
    assert "failed with RuntimeError: the registry is down" in err and "interrupted" not in err
