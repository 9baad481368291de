"""Runtime settings from the environment (prefix `ORDERWATCH_`), validated at start-up.

A wrong value stops the worker with a message naming the variable and what it expects.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orderwatch.errors import ConfigError

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    """Everything the live runtime needs to reach Kafka and Redis and name its topics."""

    model_config = SettingsConfigDict(env_prefix="ORDERWATCH_", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field("localhost:9092", description="Kafka bootstrap servers, comma separated")
    """Kafka bootstrap servers, e.g. `broker-1:9092,broker-2:9092`."""
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for the handlers")
    topic_prefix: str = Field("", description="prepended to every topic name")
    partitions: int = Field(4, ge=1, description="partitions of the co-partitioned input topics")
    store: str = Field("memory://", description="table store: memory:// or rocksdb://")
    data_dir: str | None = Field(
        None, description="where a rocksdb:// store keeps its files (default: ./<app_id>-data in the working directory)"
    )
    app_id: str = Field("orderwatch", min_length=1, description="consumer group and internal topic prefix")
    lateness_seconds: float = Field(60.0, ge=0, description="allowed lateness behind the newest event")
    clock: Literal["wall", "event"] = Field("wall", description="wall clock (live) or watermark (replay)")
    max_skew_seconds: float = Field(
        3600.0,
        ge=0,
        description="replay (--clock event): once every input is drained, the clock goes to the largest "
        "progress of an input partition that another one comes within this of (a lone outlier does not count)",
    )
    stall_seconds: float = Field(
        60.0, gt=0, description="an input partition whose commits stop this long while messages wait is stalled"
    )
    max_future_seconds: float = Field(
        900.0, ge=0, description="an event time further ahead of the wall clock is dead-lettered (from_future); 0: off"
    )
    merge_idle_seconds: float = Field(
        3.0,
        ge=0,
        le=600,
        description="the orders agent merges its co-partitioned inputs by record timestamp: how long it waits for "
        "an input with lag but nothing fetched before it goes on without it",
    )
    merge_flight_seconds: float = Field(
        30.0,
        ge=0,
        le=600,
        description="how long the orders agent's merge waits for a forward this worker sent to its inbox (acked or "
        "on its way, so certain to come) before it goes on without it",
    )
    merge_max_held: int = Field(
        10_000, ge=1, description="records the merge holds per agent partition at most; beyond, the oldest go anyway"
    )
    session_timeout_seconds: float = Field(
        10.0,
        ge=6,
        le=300,
        description="how long the group waits for a silent worker: a crashed worker's partitions move after it",
    )
    stop_seconds: float = Field(
        45.0,
        gt=0,
        le=3600,
        description="a stop (SIGTERM) still going after this long ends the worker with exit 75 and no clean-stop"
        " marker: with the broker gone, faust's flush waits up to the producer request timeout (20 min)",
    )
    web_port: int = Field(6066, ge=1, le=65535, description="port of /metrics and the ops views")
    web_bind: str = Field(
        "127.0.0.1", min_length=1, description="address the web port listens on: 0.0.0.0 in a container or pod"
    )
    """Loopback by default; the image and the Helm chart set 0.0.0.0 so probes and Prometheus reach it."""
    web_host: str = Field(
        "127.0.0.1", min_length=1, description="host name other workers and clients reach this worker's web port by"
    )
    """The worker's own URL in the ops API's answers (which worker owns an order); the chart sets the pod IP."""
    redis_prefix: str = Field("orderwatch:", description="prefix of every Redis key the handlers write")
    api_token: SecretStr | None = Field(
        None, description="bearer token with every role (viewer, operator, approver), named 'api' in the audit"
    )
    viewer_token: SecretStr | None = Field(None, description="bearer/login token of the viewer role (read only)")
    operator_token: SecretStr | None = Field(
        None, description="token of the operator role: read, acknowledge, resolve, assign"
    )
    approver_token: SecretStr | None = Field(None, description="token of the approver role: read, approve, reject")
    tokens_file: str | None = Field(
        None, description="TOML file of named tokens and their roles, re-read when it changes (rotation, no restart)"
    )
    cookie_secure: Literal["auto", "always", "never"] = Field(
        "auto", description="Secure session cookie: auto = when the request came over TLS (or X-Forwarded-Proto: https)"
    )
    session_minutes: float = Field(480.0, gt=0, le=60 * 24 * 30, description="console session lifetime")
    login_attempts: int = Field(5, ge=1, le=1000, description="failed logins per client address per window")
    login_window_seconds: float = Field(300.0, ge=1, description="the window of `login_attempts`")
    handlers_config: str | None = Field(
        None, description="TOML file: escalation, incidents, action policy, webhooks (defaults when unset)"
    )
    dry_run: bool = Field(False, description="handlers log actions and notifications instead of sending them")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        if not value.startswith(("memory://", "rocksdb://")):
            msg = f"expected memory:// or rocksdb://, got {value!r}"
            raise ValueError(msg)
        return value

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and `overrides`), or a ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        var = "ORDERWATCH_" + str(err["loc"][0]).upper() if err["loc"] else "ORDERWATCH_*"
        msg = f"environment variable {var}: {err['msg']}"
        raise ConfigError(msg) from exc
