"""Readiness of a weak vLLM replica: healthy, and holding every adapter version the trainer wants served.

    python -m services.weak_server.ready --port 8001 --dir /cowest/served-adapters    (or: python3 ready.py ...)

The trainer writes each domain's desired versions (active, rollback depth, a running canary's candidate) to
`<dir>/.desired/<domain>.json` in the served-adapters directory every replica mounts. A replica that joins or
restarts comes up empty; this check loads what it lacks from `<dir>/<name>` through vLLM's runtime-loading API and
answers ready (exit 0) only when every desired version is listed, so a load balancer sends it no request before
then (the filesystem resolver would load a version at its first request; this takes that latency, and a version
that cannot be loaded, out of the traffic path). Exit 1 says why on stderr.

Standard library only: the GPU replicas run the official vLLM image, which has none of this project's code (the
Helm chart mounts this file from a ConfigMap there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

DESIRED_DIR = ".desired"  # written by the trainer (services/trainer/registry.py DESIRED_DIR)


def desired(served_dir: Path) -> set[str]:
    names: set[str] = set()
    for path in sorted((served_dir / DESIRED_DIR).glob("*.json")):
        try:
            names.update(n for n in json.loads(path.read_text()) if isinstance(n, str))
        except (OSError, ValueError, TypeError):
            pass  # being replaced (written atomically, but a reader may race the rename on some filesystems)
    return names


class Server:
    def __init__(self, url: str, api_key: str | None, timeout_s: float):
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers)
        try:
            # nosec B310: the URL is http://<host>:<port> built in main(), never a file: or custom scheme
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # nosec B310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def adapters(self) -> set[str]:
        status, text = self.call("GET", "/v1/models")
        if status != 200:
            raise RuntimeError(f"/v1/models answered {status}: {text[:200]}")
        return {m["id"] for m in json.loads(text).get("data", []) if m.get("parent")}


def check(server: Server, served_dir: Path) -> str | None:
    """None when ready; else why not. Loads the desired versions the replica lacks."""
    try:
        status, text = server.call("GET", "/health")
        if status != 200:
            return f"/health answered {status}"
        missing = desired(served_dir) - server.adapters()
        for name in sorted(missing):
            path = served_dir / name
            if not (path / "adapter_config.json").is_file():
                return f"{name} is desired but not published in {served_dir}"
            status, text = server.call("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
            if status != 200 and "already" not in text:
                return f"loading {name} answered {status}: {text[:200]}"
        if still := desired(served_dir) - server.adapters():
            return f"not loaded: {sorted(still)}"
    except (OSError, RuntimeError, ValueError) as exc:  # refused, timed out, not JSON
        return f"{type(exc).__name__}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("COWEST_WEAK_PORT", "8001")))
    served = os.environ.get("VLLM_LORA_RESOLVER_CACHE_DIR") or os.environ.get("COWEST_WEAK_LORA_RESOLVER_DIR", ".")
    parser.add_argument("--dir", type=Path, default=Path(served), help="the served-adapters directory")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per call to the server")
    args = parser.parse_args(argv)
    api_key = os.environ.get("VLLM_API_KEY") or os.environ.get("COWEST_WEAK_API_KEY")
    why = check(Server(f"http://{args.host}:{args.port}", api_key, args.timeout), args.dir)
    if why:
        print(f"not ready: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
