"""The preflight's input: the environment the planner renders for a rank pod, validated. Pure (no torch).

The planner (``wideep.planning.planner``) renders, for pod ``i`` hosting DP ranks
``start .. start+local-1`` of ``size``: WIDEEP_DEPLOYMENT, WIDEEP_POD_INDEX, WIDEEP_DP_SIZE,
WIDEEP_DP_RANK_START, WIDEEP_DP_SIZE_LOCAL, WIDEEP_MASTER_ADDR, WIDEEP_MASTER_PORT, WIDEEP_CONFIG_HASH,
WIDEEP_PREFLIGHT_TIMEOUT, VLLM_HOST_IP (the pod IP) and GLOO_SOCKET_IFNAME. Under the torchrun-style
layout (one pod per GPU, several pods per DP rank) it adds RANK and WORLD_SIZE: the preflight group is
then the world of RANK/WORLD_SIZE processes, since DP ranks are not unique per pod there.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from wideep.api.models import MAX_DATA_PARALLEL
from wideep.planning.planner import pod_name

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$"
)
MAX_WORLD = MAX_DATA_PARALLEL * 1024
LIST_LIMIT = 16  # ranks named in one message before "... and N more"

Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ConfigError(Exception):
    """The environment or the flags are invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _check_address(value: str, name: str) -> str:
    if "$(" in value:
        raise ValueError(f"{name}={value!r} holds an unexpanded $(...) reference")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.match(value):
            raise ValueError(f"{name}={value!r} is neither an IP address nor a DNS name") from None
    return value


class PreflightConfig(BaseModel):
    """One rank pod's view of its group. Field aliases are the environment variables."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    deployment: str = Field(alias="WIDEEP_DEPLOYMENT", min_length=1, max_length=253)
    pod_index: int = Field(alias="WIDEEP_POD_INDEX", ge=0, le=MAX_WORLD)
    dp_size: int = Field(alias="WIDEEP_DP_SIZE", ge=1, le=MAX_DATA_PARALLEL)
    dp_rank_start: int = Field(alias="WIDEEP_DP_RANK_START", ge=0, le=MAX_DATA_PARALLEL)
    dp_size_local: int = Field(alias="WIDEEP_DP_SIZE_LOCAL", ge=1, le=MAX_DATA_PARALLEL)
    master_addr: str = Field(alias="WIDEEP_MASTER_ADDR", min_length=1, max_length=253)
    master_port: int = Field(alias="WIDEEP_MASTER_PORT", ge=1, le=65535)
    config_hash: Hash = Field(alias="WIDEEP_CONFIG_HASH")
    timeout_seconds: float = Field(alias="WIDEEP_PREFLIGHT_TIMEOUT", gt=0, le=86_400)
    host_ip: str | None = Field(default=None, alias="VLLM_HOST_IP")
    gloo_socket_ifname: str | None = Field(default=None, alias="GLOO_SOCKET_IFNAME")
    torchrun_rank: int | None = Field(default=None, alias="RANK", ge=0, le=MAX_WORLD)
    torchrun_world_size: int | None = Field(default=None, alias="WORLD_SIZE", ge=1, le=MAX_WORLD)
    dial_override: str | None = None
    """--master-addr-override: the address dialled instead of WIDEEP_MASTER_ADDR (tests, benches)."""

    @model_validator(mode="after")
    def _consistent(self) -> PreflightConfig:
        problems: list[str] = []
        for name, value in (
            ("WIDEEP_MASTER_ADDR", self.master_addr),
            ("VLLM_HOST_IP", self.host_ip),
            ("--master-addr-override", self.dial_override),
        ):
            if value:
                try:
                    _check_address(value, name)
                except ValueError as exc:
                    problems.append(str(exc))
        start, local, size = self.dp_rank_start, self.dp_size_local, self.dp_size
        if start + local > size:
            problems.append(
                f"WIDEEP_DP_RANK_START ({start}) + WIDEEP_DP_SIZE_LOCAL ({local}) = {start + local} "
                f"exceeds WIDEEP_DP_SIZE ({size}): this pod would host ranks outside the group"
            )
        if size % local:
            problems.append(f"WIDEEP_DP_SIZE ({size}) is not a multiple of WIDEEP_DP_SIZE_LOCAL ({local})")
        if (self.torchrun_rank is None) != (self.torchrun_world_size is None):
            problems.append("RANK and WORLD_SIZE must be set together (torchrun-style layout) or not at all")
        elif self.torchrun_rank is not None and self.torchrun_world_size is not None:
            rank, world = self.torchrun_rank, self.torchrun_world_size
            if rank >= world:
                problems.append(f"RANK ({rank}) must be below WORLD_SIZE ({world})")
            if world % size:
                problems.append(f"WORLD_SIZE ({world}) is not a multiple of WIDEEP_DP_SIZE ({size})")
            elif rank // (world // size) != start:
                problems.append(
                    f"RANK {rank} of WORLD_SIZE {world} belongs to DP rank {rank // (world // size)}, "
                    f"but WIDEEP_DP_RANK_START is {start}"
                )
            if local != 1:
                problems.append(f"WIDEEP_DP_SIZE_LOCAL must be 1 with RANK/WORLD_SIZE, not {local}")
            if self.pod_index != rank:
                problems.append(f"WIDEEP_POD_INDEX ({self.pod_index}) must equal RANK ({rank})")
        elif self.pod_index * local != start:
            problems.append(
                f"WIDEEP_DP_RANK_START ({start}) must be WIDEEP_POD_INDEX x WIDEEP_DP_SIZE_LOCAL "
                f"({self.pod_index} x {local} = {self.pod_index * local})"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # ------------------------------------------------------------------ the preflight group

    @property
    def torchrun(self) -> bool:
        return self.torchrun_world_size is not None

    @property
    def group_size(self) -> int:
        """Members of the preflight group: DP ranks, or torchrun processes."""
        return self.torchrun_world_size if self.torchrun_world_size is not None else self.dp_size

    @property
    def local_ranks(self) -> tuple[int, ...]:
        """This pod's members of the preflight group."""
        if self.torchrun_rank is not None:
            return (self.torchrun_rank,)
        return tuple(range(self.dp_rank_start, self.dp_rank_start + self.dp_size_local))

    @property
    def hosts_store(self) -> bool:
        """Rank 0's pod hosts the TCPStore, as vLLM's DP rank 0 does."""
        return 0 in self.local_ranks

    @property
    def dial_address(self) -> str:
        """The address other pods dial to reach rank 0."""
        return self.dial_override or self.master_addr

    @property
    def server_address(self) -> str:
        """The address rank 0's pod uses to reach its own store: its pod IP, as vLLM's rank 0 binds its own."""
        return self.dial_override or self.host_ip or self.master_addr

    def pod_of(self, rank: int) -> int:
        return rank if self.torchrun else rank // self.dp_size_local

    def pod_name(self, pod: int) -> str:
        return pod_name(self.deployment, pod)

    @property
    def label(self) -> str:
        """How this pod names itself in log lines."""
        ranks = self.local_ranks
        if len(ranks) == 1:
            return f"rank {ranks[0]}/{self.group_size}"
        return f"pod {self.pod_index} (ranks {ranks[0]}-{ranks[-1]}/{self.group_size})"

    def describe_ranks(self, ranks: Iterable[int]) -> str:
        """``rank 5 (pod web-5)`` or ``ranks 4-7 (pod web-1)``, naming the pods to look at."""
        ordered = sorted(set(ranks))
        if not ordered:
            return "no rank"
        pods = sorted({self.pod_of(r) for r in ordered if 0 <= r < self.group_size})
        word = "rank" if len(ordered) == 1 else "ranks"
        out = f"{word} {compress(ordered)}"
        if pods:
            names = [self.pod_name(p) for p in pods[:LIST_LIMIT]]
            more = f" and {len(pods) - LIST_LIMIT} more" if len(pods) > LIST_LIMIT else ""
            out += f" ({'pod' if len(pods) == 1 else 'pods'} {', '.join(names)}{more})"
        return out


def compress(ranks: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8' (at most LIST_LIMIT runs)."""
    runs: list[tuple[int, int]] = []
    for r in ranks:
        if runs and r == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], r)
        else:
            runs.append((r, r))
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in runs[:LIST_LIMIT]]
    if len(runs) > LIST_LIMIT:
        parts.append(f"... and {sum(b - a + 1 for a, b in runs[LIST_LIMIT:])} more")
    return ", ".join(parts)


REQUIRED_ENV = (
    "WIDEEP_DEPLOYMENT",
    "WIDEEP_POD_INDEX",
    "WIDEEP_DP_SIZE",
    "WIDEEP_DP_RANK_START",
    "WIDEEP_DP_SIZE_LOCAL",
    "WIDEEP_MASTER_ADDR",
    "WIDEEP_MASTER_PORT",
    "WIDEEP_CONFIG_HASH",
)
OPTIONAL_ENV = ("WIDEEP_PREFLIGHT_TIMEOUT", "VLLM_HOST_IP", "GLOO_SOCKET_IFNAME", "RANK", "WORLD_SIZE")
DEFAULT_TIMEOUT_SECONDS = 600.0  # spec.preflight.timeoutSeconds' default


@dataclass(frozen=True)
class Overrides:
    """Command-line values that win over the environment."""

    timeout_seconds: float | None = None
    master_addr: str | None = None
    master_port: int | None = None


def load(env: Mapping[str, str], overrides: Overrides | None = None) -> PreflightConfig:
    """Validate the environment (plus overrides) into a config, or raise ConfigError naming every problem."""
    overrides = overrides or Overrides()
    problems = [f"{name} is not set" for name in REQUIRED_ENV if not env.get(name, "").strip()]
    if problems:
        raise ConfigError([*problems, "(the operator renders these variables; is this a wideep rank pod?)"])
    data: dict[str, Any] = {
        k: env[k].strip() for k in (*REQUIRED_ENV, *OPTIONAL_ENV) if env.get(k, "").strip()
    }
    data.setdefault("WIDEEP_PREFLIGHT_TIMEOUT", str(DEFAULT_TIMEOUT_SECONDS))
    if overrides.timeout_seconds is not None:
        data["WIDEEP_PREFLIGHT_TIMEOUT"] = overrides.timeout_seconds
    if overrides.master_port is not None:
        data["WIDEEP_MASTER_PORT"] = overrides.master_port
    if overrides.master_addr:
        data["dial_override"] = overrides.master_addr
    try:
        return PreflightConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, data)) from None


def _problems(exc: ValidationError, data: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        if not loc:  # the model validator: its message holds one line per problem
            msg = str(err["msg"]).removeprefix("Value error, ")
            out.extend(msg.splitlines())
            continue
        name = "--master-addr-override" if loc[0] == "dial_override" else loc[0]
        if name == "WIDEEP_PREFLIGHT_TIMEOUT" and not isinstance(data.get(name), str):
            name = "--timeout"
        out.append(f"{name}={data.get(loc[0])!r}: {err['msg']}")
    return out
