"""Every Redis name the services use, and the one way to connect.

Orchestrator, trainer and CLI share Redis as a database, so its names are an interface: they are spelled
here once and parsed here once. Clients come from `connect()` with `decode_responses=True`, so every
value read back is a `str` and no caller decodes bytes.

Domain names never contain ":" (shared/domains.py NAME_PATTERN), so the domain is one key segment.
"""

from __future__ import annotations

from typing import Any, Literal

from redis.asyncio import Redis

# --- the log: streams the orchestrator appends to and the trainer reads (shared/records.py) ---------
TRACES_STREAM = "cowest:traces"
FEEDBACK_STREAM = "cowest:feedback"
TRAINER_GROUP = "cowest-trainer"  # the trainer's consumer group on both streams


def logged(record_id: str) -> str:
    """Set (NX) before a record's XADD: a replayed record is stored once."""
    return f"cowest:logged:{record_id}"


DEAD_LETTER_STREAM = "cowest:dead-letter"  # entries the trainer gave up on: the entry, its stream, the error


def delivery_failures(stream: str) -> str:
    """Hash: entry id -> how many times handling it failed (removed when it succeeds or is dead-lettered)."""
    return f"cowest:trainer:failures:{stream}"


def retry_at(stream: str) -> str:
    """Hash: entry id -> when (epoch seconds) a failed entry may be tried again: backoff per entry."""
    return f"cowest:trainer:retry-at:{stream}"


# What became of each feedback entry the trainer acknowledged: outcome -> count (FEEDBACK_OUTCOMES in
# services/trainer/collector.py says what each means). With the dead-letter stream it accounts for every entry.
FEEDBACK_OUTCOMES = "cowest:trainer:feedback_outcomes"


def feedback_counted(entry_id: str) -> str:
    """Set when a feedback stream entry's outcome is counted: a redelivered entry is counted once."""
    return f"cowest:trainer:counted:{entry_id}"


def paired_feedback(trace_id: str, source: str) -> str:
    """Set with a feedback's pairs (same step): a redelivery after a round claimed them pairs nothing again."""
    return f"cowest:trainer:paired:{trace_id}:{source}"


# --- adapters: the alias each domain serves, and its history (newest first) -----------------------
ACTIVE_ADAPTER_PATTERN = "adapter:active:*"
ACTIVE_DOMAINS = "adapter:active-domains"  # set: domains with an alias (read instead of a keyspace SCAN)
ADAPTER_CHANGED_CHANNEL = "adapter:active:changed"  # {"domain", "adapter", "canary"} on every change of either
CANARY_PATTERN = "adapter:canary:*"


def active_adapter(domain: str) -> str:
    return f"adapter:active:{domain}"


def canary(domain: str) -> str:
    """JSON of a domain's canary (shared/adapters.py `Canary`): a candidate served to a share of the traffic."""
    return f"adapter:canary:{domain}"


def adapter_history(domain: str) -> str:
    """List: the active version, then its predecessors (what rollback goes back to)."""
    return f"adapter:history:{domain}"


# --- domains registered at runtime ------------------------------------------------------------------
DOMAIN_SPECS = "cowest:domains"  # hash: domain name -> spec JSON
DOMAINS_CHANGED_CHANNEL = "cowest:domains:changed"

# --- knowledge: a domain's fact statements, versioned with the adapter trained on them (shared/knowledge.py) -----
KNOWLEDGE_PATTERN = "cowest:knowledge:*"


def knowledge(adapter: str) -> str:
    """JSON of the knowledge an adapter version drafts with (written by the trainer before the version serves)."""
    return f"cowest:knowledge:adapter:{adapter}"


def domain_knowledge(domain: str) -> str:
    """JSON of a domain's newest knowledge: drafts without an adapter, and strong + retrieval, look up there."""
    return f"cowest:knowledge:domain:{domain}"


# --- each domain's default mode, measured on training questions (shared/modes.py) ----------------------------
DEFAULT_MODES = "cowest:modes"  # hash: domain -> DefaultMode JSON


# --- the trainer's state -------------------------------------------------------------------------------
TRAINER_DOMAINS = "cowest:trainer:domains"  # set: every domain with trainer state (no keyspace SCAN per pass)
ROUND_PATTERN = "cowest:round:*"
PAIRS_PATTERN = "cowest:pairs:*"


def pending_pairs(domain: str) -> str:
    """Hash: question key -> the question's pairs (JSON list), waiting for the next round."""
    return f"cowest:pairs:{domain}:pending"


def claimed_pairs(domain: str, round_: int) -> str:
    """Hash: the pairs round N claimed."""
    return f"cowest:pairs:{domain}:round:{round_}"


def domain_pairs_pattern(domain: str) -> str:
    return f"cowest:pairs:{domain}:*"


def round_counter(domain: str) -> str:
    return f"cowest:round:{domain}"


def heldout(domain: str) -> str:
    """Hash: question key -> a held-out item (the gate's evaluation set)."""
    return f"cowest:heldout:{domain}"


def seen_trace(trace_id: str) -> str:
    """A trace the trainer has read, kept to join later feedback with its question."""
    return f"cowest:trainer:trace:{trace_id}"


def manual_rounds(domain: str) -> str:
    """Present: rounds of this domain start only on request (POST /train)."""
    return f"cowest:trainer:manual:{domain}"


def feedback_given(trace_id: str, source: str) -> str:
    """The one feedback a source may give on a trace: holds its feedback id (set NX, first wins)."""
    return f"cowest:feedback:given:{trace_id}:{source}"


def scored_trace(trace_id: str) -> str:
    """Set when a score of this trace was added to the live scores: one vote per answer served, whoever gives
    it and however often it is redelivered."""
    return f"cowest:trainer:scored:{trace_id}"


def live_scores(domain: str) -> str:
    """Hash: "<adapter>:n" and "<adapter>:sum" of live feedback scores."""
    return f"cowest:live:{domain}"


def round_lock(domain: str) -> str:
    """Held (and renewed) while a round of the domain runs."""
    return f"cowest:trainer:lock:{domain}"


def adapter_state_lock(domain: str) -> str:
    """Held for each change of a domain's adapter state (load + verify + flip, rollback, retire, reconcile)."""
    return f"cowest:trainer:state-lock:{domain}"


def domain_of(key: str) -> str:
    """The domain a per-domain key belongs to (`cowest:round:<d>`, `cowest:pairs:<d>:...`,
    `adapter:active:<d>`, ...): the segment after the key's two-part prefix."""
    parts = key.split(":")
    if len(parts) < 3:
        raise ValueError(f"not a per-domain key: {key!r}")
    return parts[2]


def connect(url: str, **options: Any) -> Redis:
    """An asyncio client that returns `str` (options: timeouts, health checks)."""
    return Redis.from_url(url, decode_responses=True, **options)


# --- ACL users: least privilege per service, from the names above -------------------------------------------
# Commands every client needs: connect, authenticate, name itself, ping, run the log's Lua script.
_BASE_COMMANDS = "-@all +@connection +client|setname +ping +evalsha +eval +script|load"


def acl_rules(service: Literal["orchestrator", "trainer"]) -> str:
    """The ACL rules (after `ACL SETUSER <name> on >password`) of each service's Redis user, so that a leaked
    orchestrator credential can neither read the trainer's pairs nor touch adapters, and neither can flush,
    reconfigure or read the whole keyspace. Commands run by Lua scripts are checked against the same rules."""
    if service == "orchestrator":
        reads = [ACTIVE_ADAPTER_PATTERN, CANARY_PATTERN, KNOWLEDGE_PATTERN, DEFAULT_MODES]
        # Read and write (Redis counts XADD and SET as both): its streams, its id keys, the domain specs.
        writes = [TRACES_STREAM, FEEDBACK_STREAM, logged("*"), feedback_given("*", "*"), DOMAIN_SPECS, ACTIVE_DOMAINS]
        # No SCAN (it lists every key name): the one-time migration of pre-set aliases is skipped under this user.
        commands = "+get +mget +smembers +sadd +set +xadd +hgetall +hset +multi +exec +discard +publish"
        channels = [ADAPTER_CHANGED_CHANNEL, DOMAINS_CHANGED_CHANNEL]
        return " ".join(
            ["resetkeys", "resetchannels", _BASE_COMMANDS, commands, "+subscribe +unsubscribe"]
            + [f"%R~{k}" for k in reads]
            + [f"~{k}" for k in writes]
            + [f"&{c}" for c in channels]
        )
    # The trainer owns the learning state: every cowest:* and adapter:* key, streams and consumer groups,
    # locks and transactions; nothing outside those prefixes and nothing dangerous (FLUSHALL, CONFIG, KEYS, ...).
    return " ".join(
        [
            "resetkeys",
            "resetchannels",
            _BASE_COMMANDS,
            "+@read +@write +@stream +@hash +@set +@list +@string +@keyspace +@transaction +@pubsub +@scripting",
            "-@dangerous",
            "~cowest:*",
            "~adapter:*",
            "&cowest:*",
            "&adapter:*",
        ]
    )
