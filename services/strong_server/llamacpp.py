"""`python -m services.strong_server.llamacpp --model F.gguf ...`: llama.cpp's own HTTP server (through the
`xllamacpp` wheel: no compiler needed) with an OpenAI-compatible API, `/health` and Prometheus `/metrics`.

The server runs in native threads; this process only keeps it alive and exits on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading


def parse_cpus(spec: str) -> set[int]:
    """ "1", "0-1" or "0,2-3" -> the set of core ids (the format of VLLM_CPU_OMP_THREADS_BIND)."""
    cores: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        cores.update(range(int(lo), int(hi or lo) + 1))
    return cores


def build_params(args: argparse.Namespace):
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.served_model_name}  # the name clients put in "model"
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.parallel * args.ctx_per_slot  # the context is shared out between the slots
    params.n_batch = args.batch_tokens
    params.cont_batching = True
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.endpoint_metrics = True
    params.use_jinja = True  # the GGUF's own chat template
    return params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="the GGUF file")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--cpus", default=None, help='cores to run on, e.g. "1" or "0-1" (default: all)')
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--ctx-per-slot", type=int, default=4096)
    parser.add_argument("--batch-tokens", type=int, default=512)
    args = parser.parse_args(argv)

    if args.cpus:  # before llama.cpp starts its threads: they inherit the affinity
        os.sched_setaffinity(0, parse_cpus(args.cpus) & os.sched_getaffinity(0) or os.sched_getaffinity(0))
    import xllamacpp as xlc

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = xlc.Server(build_params(args))
    print(f"llama.cpp server for {args.served_model_name} listening on {server.listening_address}", flush=True)
    stop.wait()


if __name__ == "__main__":
    main()
