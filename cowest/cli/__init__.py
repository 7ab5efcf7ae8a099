"""`cowest`: provision models and run the local stack.

cowest models pull [--profile default|fast|tiny] [--model KEY]
cowest models list
cowest up [--profile ...]     start Redis (if none answers), the weak and strong vLLM servers, the orchestrator
cowest status [--json]        health, pid, port, model and loaded adapters of each part
cowest down                   SIGTERM each process group, SIGKILL after --timeout
cowest chat weak|strong "..." one chat completion through the official openai client
cowest ask "..."              one collaboration (weak draft -> strong answer) via the orchestrator
cowest sft --domain D --data F    LoRA SFT: the domain's first adapter, activated
cowest train --domain D --data F  collaborative-feedback pairs + one gated DPO round
cowest adapters list|show|rollback
cowest eval --domain D [--modes weak,strong,collab] [--adapter V] [--limit N]   score through the stack
cowest report                 markdown table (paper format) + PNG plots of every evaluation
cowest demo [--domain-dir P]  the closed loop: SFT -> eval -> traffic + feedback -> DPO rounds -> eval -> report
"""

from __future__ import annotations

import typer

from cowest.cli import chat, evaluation, models, stack, trainer

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(models.app, name="models")
app.add_typer(trainer.adapters_app, name="adapters")
app.add_typer(trainer.feedback_app, name="feedback")
for group in (stack.app, chat.app, trainer.app, evaluation.app):
    app.registered_commands += group.registered_commands
