"""The production stack's files in infra/: parsed and checked (services, healthchecks, volumes, auth, no
secrets), and rendered by ``docker compose config`` where the compose plugin is installed."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightning_lib.loggers.redact import is_secret_name

INFRA = Path(__file__).resolve().parents[2] / "infra"
REFERENCE = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(:?[-?][^}]*)?\}$")
SERVICES = {
    "minio",
    "minio-init",
    "postgres",
    "mlflow",
    "prefect-server",
    "prefect-worker",
    "prefect-worker-gpu",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {str(k): str(v) for k, v in env.items()}


def test_compose_has_the_stack_with_healthchecks_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        if name != "minio-init":  # a one-shot job; the rest must tell compose when they are ready
            assert "healthcheck" in service, name
    assert set(compose["volumes"]) == {"minio-data", "postgres-data"}
    assert "minio-data:/data" in services["minio"]["volumes"]
    assert any(v.startswith("postgres-data:") for v in services["postgres"]["volumes"])
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert (
        services["prefect-worker"]["depends_on"]["minio-init"]["condition"]
        == "service_completed_successfully"
    )


def _only_references(value: str) -> bool:
    """The whole value is a ``${VAR}`` reference, or a URI whose user info is made of references only."""
    if REFERENCE.match(value):
        return True
    userinfo = re.findall(r"://([^@/]*)@", value)
    return bool(userinfo) and all(part.startswith("${") for info in userinfo for part in info.split(":"))


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in _env(service).items():
            if is_secret_name(key) or "PASSWORD" in key or "SECRET" in key:
                assert _only_references(value), f"{name}.{key} must come from infra/.env, found {value!r}"
            if "@" in value:  # credentials inside URIs: references only
                assert _only_references(value), f"{name}.{key}"


def test_env_example_has_no_secret_values() -> None:
    entries = dict(
        line.split("=", 1)
        for line in (INFRA / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for key, value in entries.items():
        if is_secret_name(key) or "PASSWORD" in key or "SECRET" in key or "AUTH" in key:
            assert value == "", f"{key} must be empty in .env.example"
    compose_text = (INFRA / "docker-compose.yml").read_text()
    for variable in set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", compose_text)):
        assert variable in entries, f"{variable} is used by the compose file but missing from .env.example"


def test_auth_is_enabled_on_mlflow_and_prefect(compose: dict[str, Any]) -> None:
    services = compose["services"]
    entrypoint = (INFRA / "mlflow" / "entrypoint.sh").read_text()
    assert "--app-name basic-auth" in entrypoint and "admin_password" not in entrypoint
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in _env(services["mlflow"])
    assert _env(services["mlflow"])["ARTIFACTS_DESTINATION"].startswith("s3://")
    assert _env(services["mlflow"])["BACKEND_STORE_URI"].startswith("postgresql://")
    assert "PREFECT_SERVER_API_AUTH_STRING" in _env(services["prefect-server"])
    assert _env(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://"
    )
    worker = _env(services["prefect-worker"])
    assert {
        "PREFECT_API_AUTH_STRING",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "AWS_ENDPOINT_URL",
    } <= set(worker)


def test_gpu_worker_reserves_gpus_only_in_its_profile(compose: dict[str, Any]) -> None:
    gpu = compose["services"]["prefect-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "deploy" not in compose["services"]["prefect-worker"]


def test_bucket_lifecycle_aborts_incomplete_multipart_uploads() -> None:
    rules = json.loads((INFRA / "minio" / "lifecycle.json").read_text())["Rules"]
    assert any(
        r["Status"] == "Enabled" and r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
        for r in rules
    )
    init = (INFRA / "minio" / "init.sh").read_text()
    assert "mc mb --ignore-existing" in init and "mc ilm import" in init


def _placeholders(value: Any) -> set[str]:
    return set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", json.dumps(value)))


@pytest.mark.parametrize("name", ["docker-gpu.json", "kubernetes-gpu.json"])
def test_work_pool_templates_declare_every_variable_they_use(name: str) -> None:
    template = json.loads((INFRA / "work-pools" / name).read_text())
    used = _placeholders(template["job_configuration"])
    declared = set(template["variables"]["properties"])
    assert used <= declared, f"undeclared: {sorted(used - declared)}"
    assert "gpu" in json.dumps(template).lower()


def test_kubernetes_template_requests_gpus() -> None:
    template = json.loads((INFRA / "work-pools" / "kubernetes-gpu.json").read_text())
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    assert container["envFrom"][0]["secretRef"]["name"] == "{{ credentials_secret }}"


def test_multinode_job_is_consistent() -> None:
    documents = list(yaml.safe_load_all((INFRA / "k8s" / "multinode-training.yaml").read_text()))
    service = next(d for d in documents if d["kind"] == "Service")
    job = next(d for d in documents if d["kind"] == "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
    container = pod["containers"][0]
    args = dict(a.lstrip("-").split("=", 1) for a in container["args"] if a.startswith("--") and "=" in a)
    assert int(args["nnodes"]) == spec["completions"]
    assert int(args["nproc-per-node"]) == container["resources"]["limits"]["nvidia.com/gpu"]
    assert args["rdzv-endpoint"].startswith(f"{job['metadata']['name']}-0.{service['metadata']['name']}:")
    assert args["node-rank"] == "$(JOB_COMPLETION_INDEX)"
    assert not any(is_secret_name(e["name"]) for e in container["env"])  # secrets only through the Secret
    # each rank runs the distributed fit worker with a config and the run key its checkpoints are found by
    module = container["args"][container["args"].index("-m") + 1]
    assert module == "tasks.distributed_fit" and importlib.util.find_spec(module) is not None
    assert args["config"].startswith("/config/") and args["run-key"] == "$(RUN_KEY)"
    mount = next(m for m in container["volumeMounts"] if args["config"].startswith(m["mountPath"]))
    assert any(v["name"] == mount["name"] and "configMap" in v for v in pod["volumes"])


def test_project_image_installs_the_pinned_project() -> None:
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert "-c constraints.txt" in dockerfile and "pipeline" in dockerfile
    # every package the project installs is in the image (datamodules.parquet is allowed by default)
    pyproject = (INFRA.parent / "pyproject.toml").read_text()
    include = re.search(r"\[tool\.setuptools\.packages\.find\]\s*include = \[(.*?)\]", pyproject)
    assert include is not None
    packages = [name.strip(' "*') for name in include.group(1).split(",")]
    assert "datamodules" in packages
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile, package


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed",
)
def test_docker_compose_config_renders(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    lines = (INFRA / ".env.example").read_text().splitlines()
    env_file.write_text(
        "\n".join(
            f"{line}dummy-value" if line.endswith("=") else line for line in lines if not line.startswith("#")
        )
    )
    result = subprocess.run(
        [
            "docker",
            "compose",
            "-f",
            str(INFRA / "docker-compose.yml"),
            "--env-file",
            str(env_file),
            "config",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


ROOT = INFRA.parent


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


@pytest.mark.skipif(
    shutil.which("git") is None or _git("rev-parse", "--git-dir").returncode != 0,
    reason="not a git checkout",
)
def test_env_files_with_secrets_are_ignored_by_git_and_the_example_is_tracked() -> None:
    # --no-index: the rules themselves, so the test also fails if someone force-adds a .env later and
    # the ignore rule is then dropped
    for secret in ("infra/.env", "infra/.env.local", ".env", "examples/.env.production"):
        result = _git("check-ignore", "--no-index", "-q", secret)
        assert result.returncode == 0, f"{secret} is not ignored by git: {result.stderr}"
    result = _git("check-ignore", "--no-index", "-q", "infra/.env.example")
    assert result.returncode == 1, "infra/.env.example must stay tracked, but git ignores it"
    assert _git("ls-files", "--error-unmatch", "infra/.env.example").returncode == 0
    tracked = [p for p in _git("ls-files").stdout.splitlines() if Path(p).name.startswith(".env")]
    assert tracked == ["infra/.env.example"], f"only the example may be tracked, found {tracked}"
