"""Named crash points for the chaos tests (the failpoint pattern of etcd's gofail and TiKV's fail-rs).

With `COWEST_FAILPOINT=<name>` in its environment, a process SIGKILLs itself when it reaches that point, as an
OOM kill or a power cut would, so a test can check what a crash at exactly that step leaves behind. Unset (as in
production) a failpoint is one environment lookup. The names in use are listed in FAILPOINTS."""

from __future__ import annotations

import os
import signal

FAILPOINT_ENV = "COWEST_FAILPOINT"
FAILPOINTS = (
    "round.job",  # the trainer, while its DPO job runs in a child process
    "registry.manifest_write",  # a manifest written to its temporary file, not yet renamed into place
    "round.registered",  # the candidate in the registry, not yet loaded
    "round.loaded",  # the candidate loaded on vLLM, not yet gated
    "round.gating",  # both versions scored on the held-out set, the decision not yet recorded
    "round.promoted",  # the alias flipped (with its history), the round counter not yet advanced
)


def failpoint(name: str) -> None:
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
