"""Static checks of the deployment files under platform/ (no Docker, Kubernetes or network).

What they cannot show — that the image builds, the cluster starts, the manifests apply — is
listed in platform/README.md."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import REPO

ROOT = REPO
PLATFORM = ROOT / "platform"
COMPOSE = PLATFORM / "mlflow" / "docker-compose.yaml"
RAYCLUSTER = PLATFORM / "kuberay" / "raycluster.yaml"
RAYJOB = PLATFORM / "kuberay" / "rayjob.yaml"
LAUNCHER = PLATFORM / "ray-cluster.yaml"
DOCKERFILE = PLATFORM / "Dockerfile"
RUNBOOK = PLATFORM / "README.md"

YAML_FILES = sorted(p for p in PLATFORM.rglob("*") if p.suffix in (".yaml", ".yml"))
SHELL_STOP = {"&&", "||", "|", ";", "&"}
PLD_WORD = re.compile(r"(?:^|\s)pld(?=\s|$)")


def _docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined."""
    return text.replace("\\\n", " ").splitlines()


def _pld_argvs(line: str) -> list[list[str]]:
    """Every `pld …` command in one shell line, as argv after `pld`."""
    if not PLD_WORD.search(line):
        return []
    tokens = shlex.split(line, comments=True)
    out = []
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i else ""
        # in command position: first, after `--` (ray job submit), a shell operator, or an image
        # (docker run IMAGE pld …) — not an argument such as `kubectl create namespace pld`
        command_position = not i or prev in SHELL_STOP | {"--", "exec"} or (":" in prev and "/" in prev)
        if (tok == "pld" or tok.endswith("/bin/pld")) and command_position:
            argv = []
            for t in tokens[i + 1:]:
                if t in SHELL_STOP or t.startswith(">") or t.startswith("2>"):
                    break
                argv.append(t)
            out.append(argv)
    return out


def _runbook_blocks() -> list[str]:
    return re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", RUNBOOK.read_text(), flags=re.S)


def _dockerfile_runs() -> list[str]:
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    return [ln[len("RUN "):] for ln in _logical_lines("\n".join(lines)) if ln.startswith("RUN ")]


def _pld_commands() -> dict[str, list[list[str]]]:
    """Source → the `pld` command lines it holds."""
    found: dict[str, list[list[str]]] = {}
    found["Dockerfile"] = [a for run in _dockerfile_runs() for a in _pld_argvs(run)]
    for path in (LAUNCHER, RAYCLUSTER, RAYJOB):
        # string values that are command lines (a bare name such as `cluster_name: pld` is not)
        found[path.name] = [a for doc in _docs(path) for s in _strings(doc) if " " in s.strip()
                            for line in _logical_lines(s) for a in _pld_argvs(line)]
    found["README.md"] = [a for block in _runbook_blocks() for line in _logical_lines(block)
                          for a in _pld_argvs(line)]
    return found


def _local_config(arg: str) -> Path | None:
    """configs/X.yaml (relative, or inside the image's checkout) → the repository's file."""
    if "configs/" not in arg:
        return None
    return ROOT / "configs" / arg.split("configs/", 1)[1]


def test_platform_is_not_a_python_package():
    assert PLATFORM.is_dir()
    assert not (PLATFORM / "__init__.py").exists()
    assert [p for p in PLATFORM.rglob("*") if p.suffix in (".py", ".pyc", ".pyi")] == []
    # nothing importable as `platform` next to the code (it would shadow the standard library)
    for where in (ROOT, ROOT / "distill", ROOT / "tests"):
        assert not (where / "platform.py").exists() and not (where / "platform" / "__init__.py").exists()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(PLATFORM)))
def test_yaml_parses(path):
    docs = _docs(path)
    assert docs and all(isinstance(d, dict) for d in docs)


def test_expected_files_exist():
    for path in (DOCKERFILE, LAUNCHER, RAYCLUSTER, RAYJOB, COMPOSE, RUNBOOK, PLATFORM / "mlflow" / ".env.example"):
        assert path.is_file(), path
    assert len(YAML_FILES) >= 5


def test_compose_publishes_only_on_localhost_by_default():
    (compose,) = _docs(COMPOSE)
    published = {name: svc.get("ports", []) for name, svc in compose["services"].items()}
    assert published["mlflow"], "the tracking server is published"
    for name, ports in published.items():
        for port in ports:
            spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published', '')}"
            # "${MLFLOW_BIND:-127.0.0.1}:..." — resolve the default as docker compose would.
            resolved = re.sub(r"\$\{(\w+):?-([^}]*)\}", r"\2", spec)
            assert resolved.startswith("127.0.0.1:"), f"{name}: {port!r} is published beyond 127.0.0.1 by default"
    for name in ("postgres", "minio"):
        assert not published[name], f"{name} must not be published on the host"
    command = " ".join(compose["services"]["mlflow"]["command"])
    assert "--backend-store-uri" in command and "--artifacts-destination" in command and "--host 0.0.0.0" in command
    env = compose["services"]["mlflow"]["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert compose["services"]["create-bucket"]["restart"] == "no"
    assert "MLFLOW_BIND" in (PLATFORM / "mlflow" / ".env.example").read_text()
    assert "MLFLOW_BIND" in RUNBOOK.read_text()


def test_the_tracking_server_runs_its_authentication_app_and_pods_read_credentials_from_a_secret():
    (compose,) = _docs(COMPOSE)
    mlflow = compose["services"]["mlflow"]
    command = " ".join(mlflow["command"])
    assert "mlflow server --app-name basic-auth" in command and "mlflow[auth]==" in mlflow["build"]["dockerfile_inline"]
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"].startswith("/auth/") and "auth-data:/auth" in mlflow["volumes"]
    for var in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert ":?" in env[var], f"{var}: compose must refuse to start without it, not fall back to a default"
    example = (PLATFORM / "mlflow" / ".env.example").read_text()
    assert "MLFLOW_ADMIN_PASSWORD=" in example and "MLFLOW_SECRET_KEY=" in example
    assert "grant_user_permission" in RUNBOOK.read_text() and "create_user" in RUNBOOK.read_text()
    # every pod that sets the tracking URI gets the user and a password file from the Secret, no literal
    for path in (RAYCLUSTER, RAYJOB):
        text = path.read_text()
        assert "MLFLOW_TRACKING_PASSWORD:" not in text and "MLFLOW_TRACKING_PASSWORD\n" not in text
        for doc in _docs(path):
            for pod in _pods(doc):
                for container in pod["containers"]:
                    env = {e["name"]: e for e in container.get("env", [])}
                    if "MLFLOW_TRACKING_URI" not in env:
                        continue
                    assert env["MLFLOW_TRACKING_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] == "pld-mlflow-credentials"
                    folder = env["MLFLOW_TRACKING_PASSWORD_FILE"]["value"].rsplit("/", 1)[0]
                    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == folder)
                    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
                    assert volume["secret"]["secretName"] == "pld-mlflow-credentials" and mount["readOnly"]


def _pods(node):
    if isinstance(node, dict):
        if "containers" in node:
            yield node
        for value in node.values():
            yield from _pods(value)
    elif isinstance(node, list):
        for value in node:
            yield from _pods(value)


def test_kuberay_manifests():
    (cluster,) = [d for d in _docs(RAYCLUSTER) if d.get("kind") == "RayCluster"]
    (job,) = [d for d in _docs(RAYJOB) if d.get("kind") == "RayJob"]
    for doc in (cluster, job):
        assert doc["apiVersion"] == "ray.io/v1"
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
        assert {"cpu", "gpu"} <= set(groups)
        for name, group in groups.items():
            for container in group["template"]["spec"]["containers"]:
                limits = container["resources"]["limits"]
                if name == "gpu":
                    assert int(limits["nvidia.com/gpu"]) >= 1
                    assert container["image"].endswith("-gpu")
                else:
                    assert "nvidia.com/gpu" not in limits
        assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    assert "MLFLOW_TRACKING_URI" in yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    entry = job["spec"]["entrypoint"]
    assert "train.use_gpu=true" in entry and "storage.root=" in entry


def test_launcher_config_matches_ray_schema():
    from ray.autoscaler._private.util import validate_config

    (config,) = _docs(LAUNCHER)
    validate_config(config)  # jsonschema against the installed Ray's ray-schema.json
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert any(t.get("docker", {}).get("worker_image", "").endswith("-gpu") for t in types.values())
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--head" in head_start and "--dashboard-host 127.0.0.1" in head_start


def test_image_tags_match_installed_ray():
    import ray

    major_minor = ".".join(ray.__version__.split(".")[:2])
    texts = {p.name: p.read_text() for p in [DOCKERFILE, RUNBOOK, *YAML_FILES]}
    seen = 0
    for name, text in texts.items():
        for version in re.findall(r"rayproject/ray:(\d+\.\d+)\.\d+-py(\d+)", text):
            assert version == (major_minor, "311"), f"{name}: rayproject/ray:{version}"
            seen += 1
        for version in re.findall(r"/pld:ray(\d+\.\d+)\.\d+-py(\d+)", text):
            assert version == (major_minor, "311"), f"{name}: pld image built on Ray {version}"
            seen += 1
    for path in (RAYCLUSTER, RAYJOB):
        for doc in _docs(path):
            spec = doc["spec"].get("rayClusterSpec", doc["spec"])
            if "rayVersion" in spec:
                assert spec["rayVersion"].startswith(major_minor + "."), path.name
    dockerfile = DOCKERFILE.read_text()
    assert re.search(rf"ARG RAY_VERSION={re.escape(major_minor)}\.\d+", dockerfile)
    assert re.search(rf"ARG BASE_IMAGE=rayproject/ray:{re.escape(major_minor)}\.\d+-py311-cpu", dockerfile)
    assert seen >= 5


def test_dockerfile_essentials():
    text = DOCKERFILE.read_text()
    assert 'torch==2.14.1' in text and 'torchaudio==2.11.0' in text
    assert re.search(r"^USER ray$", text, flags=re.M), "runs as the base image's unprivileged user"
    assert re.search(r"^RUN pld --help", text, flags=re.M), "build-time smoke check"
    ignore = [ln.strip() for ln in (PLATFORM / "Dockerfile.dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*" and "!distill/" in ignore and "!pyproject.toml" in ignore


def test_pld_command_lines_parse():
    from distill.cli import build_parser

    commands = _pld_commands()
    assert commands["Dockerfile"], "the Dockerfile's smoke check runs pld"
    assert commands["rayjob.yaml"], "the RayJob's entrypoint runs pld"
    assert len(commands["README.md"]) >= 5, "the runbook shows run, resume and eval"
    verbs = set()
    for source, argvs in commands.items():
        for argv in argvs:
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                    args = build_parser().parse_args(argv)
            except SystemExit as exc:  # --help exits 0; a bad command line exits 2
                assert exc.code == 0, f"{source}: pld {shlex.join(argv)}\n{out.getvalue()}"
                continue
            verbs.add(args.command)
            config = _local_config(getattr(args, "config", "") or "")
            if args.command == "run":
                assert config is not None and config.is_file(), f"{source}: pld {shlex.join(argv)}: no such config"
    assert {"run", "resume", "eval"} <= verbs


def test_pld_run_overrides_are_config_fields():
    """`--set` keys and values in the deployment files load with the config they override."""
    from distill.cli import _parse_sets, build_parser
    from distill.config import load_config

    for source, argvs in _pld_commands().items():
        for argv in argvs:
            if argv[:1] != ["run"]:
                continue
            args = build_parser().parse_args(argv)
            load_config(_local_config(args.config), _parse_sets(args.set))  # raises ConfigError naming the field


def test_runbook_submits_with_tracking_uri():
    text = RUNBOOK.read_text()
    lines = [shlex.split(ln, comments=True) for block in _runbook_blocks() for ln in _logical_lines(block)]
    submits = [tokens for tokens in lines if tokens[:3] == ["ray", "job", "submit"]]
    assert len(submits) >= 4
    for tokens in submits:
        assert "--address" in tokens and "--" in tokens
        if "--runtime-env-json" in tokens:
            env = json.loads(tokens[tokens.index("--runtime-env-json") + 1])
            assert "MLFLOW_TRACKING_URI" in env["env_vars"]
    assert "pld resume" in text and "pld eval" in text and "8265" in text
