"""docker-compose.yml, profile by profile (deploy/check.sh validates its schema): each profile starts Redis, the
orchestrator, the trainer, the models job and one weak and one strong server under the names the others call;
only the orchestrator publishes a port; everything but the models job sits on the internal network, which has no
route out (the models job is on egress alone); the model servers read the adapters the trainer publishes. And
the orchestrator image's lock pins nothing app.lock does not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared import redis_keys

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def enabled(profile: str) -> dict[str, dict]:
    return {name: s for name, s in SERVICES.items() if "profiles" not in s or profile in s["profiles"]}


def aliases(service: dict) -> set[str]:
    networks = service.get("networks", [])
    if isinstance(networks, list):
        return set()
    return {a for n in networks.values() for a in (n or {}).get("aliases", [])}


def network_names(service: dict) -> set[str]:
    networks = service.get("networks", [])
    return set(networks if isinstance(networks, list) else networks)


@pytest.mark.parametrize("profile", ["cpu", "gpu", "gpu-api"])
def test_each_profile_starts_the_whole_stack_under_the_names_it_calls(profile):
    services = enabled(profile)
    assert {"redis", "orchestrator", "trainer", "models"} <= set(services)
    weak = [name for name, s in services.items() if "weak" in aliases(s)]
    strong = [name for name, s in services.items() if "strong" in aliases(s)]
    assert len(weak) == 1, weak
    assert len(strong) == (0 if profile == "gpu-api" else 1), strong  # gpu-api: COWEST_STRONG_URL from the env
    for name in weak + strong:
        assert services[name]["depends_on"]["models"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("profile", ["cpu", "gpu", "gpu-api"])
def test_only_the_orchestrator_is_published_and_the_rest_is_internal(profile):
    services = enabled(profile)
    assert [name for name, s in services.items() if s.get("ports")] == ["orchestrator"]
    assert COMPOSE["networks"]["internal"]["internal"] is True
    for name, service in services.items():
        if name != "models":
            assert "internal" in network_names(service), name
    assert network_names(services["models"]) == {"egress"}  # downloads, and reaches nothing of the stack


def test_weak_servers_read_the_adapters_the_trainer_publishes():
    trainer_mount = next(v for v in SERVICES["trainer"]["volumes"] if v.startswith("served-adapters:"))
    path = trainer_mount.split(":")[1]
    for name in ("weak-cpu", "weak-gpu"):
        assert any(v.startswith(f"served-adapters:{path}") for v in SERVICES[name]["volumes"]), name
    assert SERVICES["weak-gpu"]["environment"]["VLLM_LORA_RESOLVER_CACHE_DIR"] == path
    dockerfile = (ROOT / "deploy/docker/Dockerfile.vllm-cpu").read_text()
    assert f"COWEST_WEAK_LORA_RESOLVER_DIR={path}" in dockerfile  # the CPU image's weak server reads the same dir


def test_redis_keeps_its_data_and_requires_a_password():
    redis = SERVICES["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes --appendfsync always" in command and "--aclfile" in command  # durable when acked
    assert "user default on >%s" in command  # no user without a password
    assert any(v.startswith("redis-data:") for v in redis["volumes"])


def test_each_service_has_its_own_redis_user_with_the_projects_rules():
    env = SERVICES["redis"]["environment"]
    for service in ("orchestrator", "trainer"):
        assert env[f"{service.upper()}_ACL"].split() == redis_keys.acl_rules(service).split(), service
        url = SERVICES[service]["environment"]["COWEST_REDIS_URL"]
        assert url.startswith(f"redis://{service}:${{REDIS_{service.upper()}_PASSWORD:?"), url


def test_client_keys_are_required():
    """Nothing but health is open by default: compose refuses to start the orchestrator without client keys."""
    keys = SERVICES["orchestrator"]["environment"]["COWEST_API_KEYS"]
    assert keys.startswith("${COWEST_API_KEYS:?"), keys


def test_the_compose_redis_command_starts_redis_with_working_least_privilege_users(tmp_path):
    """The compose command itself, run against the machine's redis-server: each user gets in with its own
    password and only to its own keys (a typo in the rules or the script would fail here, not in production)."""
    import subprocess

    import redis as redis_py
    from redis.exceptions import AuthenticationError, NoPermissionError

    from cowest.redis_server import redis_server_binary
    from tests.support.redis import wait_for_ping
    from tests.support.servers import free_port

    service = SERVICES["redis"]
    script = service["command"][2].replace("$$", "$").replace("/tmp/users.acl", str(tmp_path / "users.acl"))
    passwords = {"REDIS_PASSWORD": "p0", "REDIS_ORCHESTRATOR_PASSWORD": "p1", "REDIS_TRAINER_PASSWORD": "p2"}
    acls = {k: service["environment"][k] for k in ("ORCHESTRATOR_ACL", "TRAINER_ACL")}
    binary_dir = str(Path(redis_server_binary()).parent)  # the one the stack uses (installed where missing)
    env = {"PATH": f"{binary_dir}:/usr/bin:/bin", **passwords, **acls}
    port = free_port()
    args = ["--port", str(port), "--dir", str(tmp_path), "--appendonly", "no", "--save", ""]
    server = subprocess.Popen(["sh", "-c", script, "redis", *args], env=env, stdout=subprocess.DEVNULL)
    try:
        orch = redis_py.Redis(port=port, username="orchestrator", password="p1", decode_responses=True)
        wait_for_ping(orch)
        orch.xadd("cowest:traces", {"kind": "trace"})
        with pytest.raises(NoPermissionError):
            orch.hgetall("cowest:pairs:acme:pending")  # the trainer's
        trainer = redis_py.Redis(port=port, username="trainer", password="p2", decode_responses=True)
        assert trainer.xlen("cowest:traces") == 1
        with pytest.raises(NoPermissionError):
            trainer.flushall()
        with pytest.raises(AuthenticationError):
            redis_py.Redis(port=port, username="trainer", password="p1").ping()
        assert redis_py.Redis(port=port, password="p0").ping()  # the operator's default user
    finally:
        server.terminate()
        server.wait(10)


def pins(lock: str) -> dict[str, str]:
    lines = (ROOT / "requirements" / lock).read_text().splitlines()
    return dict(line.lower().split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def test_the_orchestrator_image_pins_only_app_lock_versions():
    app, orchestrator = pins("app.lock"), pins("orchestrator.lock")
    assert {name: (version, app.get(name)) for name, version in orchestrator.items() if app.get(name) != version} == {}


def test_a_weak_server_is_healthy_only_with_the_desired_adapters():
    """Both weak services' health check is services/weak_server/ready.py on the directory the trainer publishes
    to; the GPU image has no project code, so the file is mounted from the repository."""
    served = next(v for v in SERVICES["trainer"]["volumes"] if v.startswith("served-adapters:")).split(":")[1]
    cpu, gpu = SERVICES["weak-cpu"]["healthcheck"]["test"], SERVICES["weak-gpu"]["healthcheck"]["test"]
    assert cpu[:4] == ["CMD", "python3", "-m", "services.weak_server.ready"] and cpu[-2:] == ["--dir", served]
    mount = next(v for v in SERVICES["weak-gpu"]["volumes"] if v.endswith("ready.py:ro"))
    source, target, _ = mount.split(":")
    assert (ROOT / source).resolve() == ROOT / "services/weak_server/ready.py"
    assert gpu[:3] == ["CMD", "python3", target] and gpu[-2:] == ["--dir", served]
