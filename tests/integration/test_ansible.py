"""Checks on the Ansible provisioning that need no target host.

ansible-lint and `ansible-playbook --syntax-check` run in CI (`make lint-ansible`); these tests hold
the project's own rules: every role documents its variables in meta/argument_specs.yml with its
own prefix, handlers are named `Restart <service>`, the appliance's unit is sandboxed, the
settings file the playbook writes is one the app accepts, and the bundle's SBOM describes what is
in the bundle.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from appliance.config import Settings

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
ROLES = sorted(p for p in (ANSIBLE / "roles").iterdir() if p.is_dir())
REQUIRED_ROLES = {"base", "ollama", "appliance", "reverse_proxy", "postgresql", "backup"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_every_required_role_exists() -> None:
    assert {role.name for role in ROLES} >= REQUIRED_ROLES


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_variables_are_prefixed_and_specified(role: Path) -> None:
    defaults = _load(role / "defaults" / "main.yml") or {}
    spec = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    unprefixed = [name for name in list(defaults) + list(spec) if not name.startswith(role.name)]
    assert unprefixed == [], f"{role.name}: variables without the role prefix: {unprefixed}"
    assert set(defaults) == set(spec), (
        f"{role.name}: defaults and argument_specs differ: {sorted(set(defaults) ^ set(spec))}"
    )
    for name, option in spec.items():
        assert option.get("description"), f"{role.name}: {name} has no description"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_handlers_are_named_restart_service(role: Path) -> None:
    handlers = _load(role / "handlers" / "main.yml") or []
    assert handlers, f"{role.name} has no handlers"
    for handler in handlers:
        assert handler["name"].startswith("Restart "), handler["name"]
        module = next(k for k in handler if k not in {"name", "listen", "when"})
        assert module == "ansible.builtin.systemd_service"
        assert handler[module]["state"] == "restarted"
        assert handler["name"] == f"Restart {handler[module]['name']}"


def _tasks(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for task in node or []:
        if "block" in task:
            found += _tasks(task["block"]) + _tasks(task.get("always")) + _tasks(task.get("rescue"))
        else:
            found.append(task)
    return found


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_tasks_use_fully_qualified_module_names(role: Path) -> None:
    keywords = {
        "name",
        "when",
        "loop",
        "loop_control",
        "register",
        "changed_when",
        "failed_when",
        "notify",
        "args",
        "environment",
        "no_log",
        "until",
        "retries",
        "delay",
        "become",
        "become_user",
        "tags",
        "vars",
        "run_once",
        "delegate_to",
    }
    for task in _tasks(_load(role / "tasks" / "main.yml")):
        modules = [k for k in task if k not in keywords]
        assert len(modules) == 1, (role.name, task.get("name"), modules)
        assert modules[0].startswith("ansible.builtin."), (role.name, task["name"], modules[0])


def _render(template: str, **variables: Any) -> str:
    env = jinja2.Environment(  # noqa: S701 - renders config files, not HTML
        loader=jinja2.FileSystemLoader(ANSIBLE / "roles" / "appliance" / "templates"),
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.do"],
    )
    env.filters["to_json"] = json.dumps
    env.filters["dirname"] = lambda p: str(Path(p).parent)
    defaults = _load(ANSIBLE / "roles" / "appliance" / "defaults" / "main.yml")
    context = {**defaults, "ansible_managed": "managed", **variables}
    return env.get_template(template).render(**context)


def test_unit_is_sandboxed() -> None:
    unit = _render("appliance.service.j2", appliance_ip_allow=["192.0.2.31"])
    lines = set(unit.splitlines())
    for directive in [
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "IPAddressDeny=any",
        "IPAddressAllow=localhost",
        "IPAddressAllow=192.0.2.31",
        "PrivateDevices=yes",
        "ProtectHome=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures=native",
        "User=appliance",
    ]:
        assert directive in lines, f"appliance.service lacks {directive}"
    assert "ReadWritePaths=/var/lib/appliance" in lines


def test_unit_exposure_is_at_most_two(tmp_path: Path) -> None:
    """systemd's own score of the rendered unit, offline (the VM converge measures it live)."""
    import re
    import shutil
    import subprocess

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "appliance.service"
    unit.write_text(_render("appliance.service.j2", appliance_ip_allow=["192.0.2.31"]))
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for appliance.service: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout


def test_settings_file_is_accepted_by_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _render(
        "appliance.toml.j2",
        appliance_inference_backends=[{"name": "gpu", "kind": "ollama", "nodes": []}],
        appliance_settings={
            "model_tiers": {"smollm2-135m": "small", "qwen2.5:7b": "large"},
            "phone_regions": ["US", "DE"],
            "login_max_failures": 7,
            "router_model_enabled": True,
        },
    )
    path = tmp_path / "appliance.toml"
    path.write_text(text, encoding="utf-8")
    for name in list(os.environ):
        if name.startswith("APPLIANCE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("APPLIANCE_CONFIG_FILE", str(path))
    settings = Settings()
    assert settings.data_dir == Path("/var/lib/appliance")
    assert settings.web_dir == Path("/opt/appliance/current/share/web")
    assert settings.policies_dir == Path("/opt/appliance/current/share/policies")
    assert settings.tls_terminated_by_proxy is True
    assert settings.inference_file == Path("/etc/appliance/inference.toml")
    assert settings.model_tiers["qwen2.5:7b"] == "large"
    assert settings.phone_regions == ("US", "DE")
    assert settings.login_max_failures == 7
    assert settings.router_model_enabled is True


def test_inference_file_is_accepted_by_the_app(tmp_path: Path) -> None:
    from appliance.inference.registry import load_spec

    text = _render(
        "inference.toml.j2",
        appliance_inference_backends=[
            {
                "name": "gpu-pool",
                "kind": "ollama",
                "tier": "large",
                "nodes": [{"url": "http://192.0.2.21:11434", "max_concurrency": 4}],
                "models": [{"name": "qwen2.5:7b", "tier": "large", "context_length": 8192}],
            }
        ],
    )
    path = tmp_path / "inference.toml"
    path.write_text(text, encoding="utf-8")
    spec = load_spec(path)
    assert spec.backends[0].nodes[0].url == "http://192.0.2.21:11434"
    assert spec.backends[0].models[0].context_length == 8192


def test_sbom_lists_wheels_and_models_with_hashes(tmp_path: Path) -> None:
    import hashlib
    import importlib.util

    spec = importlib.util.spec_from_file_location("sbom", ANSIBLE / "scripts" / "sbom.py")
    assert spec and spec.loader
    sbom = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sbom)
    (tmp_path / "wheelhouse").mkdir()
    (tmp_path / "models").mkdir()
    wheel = tmp_path / "wheelhouse" / "Demo_Pkg-1.2.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(
            "Demo_Pkg-1.2.3.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: Demo_Pkg\nVersion: 1.2.3\nLicense-Expression: MIT\n",
        )
    model = tmp_path / "models" / "tiny.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    lock = tmp_path / "package-lock.json"
    lock.write_text(
        json.dumps({"packages": {"": {}, "node_modules/htmx.org": {"version": "2.0.11"}}})
    )
    document = sbom.build(tmp_path, "0.1.0", lock)
    assert document["bomFormat"] == "CycloneDX"
    by_ref = {c["bom-ref"]: c for c in document["components"]}
    demo = by_ref["pkg:pypi/demo-pkg@1.2.3"]
    assert demo["hashes"][0]["content"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert demo["licenses"] == [{"expression": "MIT"}]
    gguf = by_ref["model:tiny.gguf"]
    assert gguf["type"] == "machine-learning-model"
    assert gguf["hashes"][0]["content"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert "pkg:npm/htmx.org@2.0.11" in by_ref


def test_vm_local_mirror_holds_every_package_the_playbook_installs() -> None:
    """The converge tests' machines have no network: their local mirror must carry what any host
    gets."""
    import re
    import shlex

    script = (ANSIBLE / "tests" / "build-local-mirror.sh").read_text(encoding="utf-8")
    found = re.search(r"^packages=\((.*?)\)", script, re.MULTILINE | re.DOTALL)
    assert found, "build-local-mirror.sh has no packages=(...) list"
    mirror = set(shlex.split(found.group(1).replace("\\\n", " ")))
    base = set(_load(ANSIBLE / "roles" / "base" / "defaults" / "main.yml")["base_packages"])
    wiring = _load(ANSIBLE / "group_vars" / "all.yml")["base_extra_packages"]
    # Every group's list (app, database, load balancer): the multi-node test installs them all.
    lists = re.findall(r"\(\[([^\]]*)\] if inventory_hostname in site_", wiring)
    assert len(lists) >= 4, wiring
    app = {name.strip(" '") for found in lists for name in found.split(",")}
    bootstrap = _load(ANSIBLE / "site.yml")[0]["tasks"][0]["ansible.builtin.raw"]
    assert "install -y -qq --no-install-recommends python3 python3-apt" in bootstrap
    wanted = base | app | {"python3", "python3-apt"}
    assert wanted - mirror == set(), f"missing from the VM's local mirror: {wanted - mirror}"


def test_monitoring_rules_and_prometheus_config_pass_promtool(tmp_path: Path) -> None:
    """The alert rules and the Prometheus configuration the monitoring role writes, checked by
    Prometheus's own tool (Debian's `prometheus` package); every variant of the template."""
    import shutil
    import subprocess

    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    role = ANSIBLE / "roles" / "monitoring"
    rules = tmp_path / "appliance-alerts.yml"
    shutil.copy(role / "files" / "appliance-alerts.yml", rules)
    key = tmp_path / "key"
    key.write_text("slm_example\n")
    env = jinja2.Environment(  # noqa: S701 - renders config files, not HTML
        loader=jinja2.FileSystemLoader(role / "templates"), undefined=jinja2.StrictUndefined
    )
    env.filters["to_json"] = json.dumps
    defaults = _load(role / "defaults" / "main.yml")
    variants: list[dict[str, Any]] = [
        {},
        {
            "monitoring_alertmanagers": ["127.0.0.1:9093"],
            "monitoring_scrape_scheme": "https",
            "monitoring_scrape_ca_file": str(key),
            "monitoring_scrape_targets": ["192.0.2.11:443", "192.0.2.12:443"],
        },
    ]
    for variant in variants:
        text = env.get_template("prometheus.yml.j2").render(
            {**defaults, "ansible_managed": "managed", **variant}
        )
        text = text.replace("/etc/prometheus/appliance-alerts.yml", str(rules))
        text = text.replace(defaults["monitoring_api_key_file"], str(key))
        config = tmp_path / "prometheus.yml"
        config.write_text(text)
        result = subprocess.run(
            ["promtool", "check", "config", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 11 rules found" in result.stdout
