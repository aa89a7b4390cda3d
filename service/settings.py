"""One settings object for the API, the workers and the CLI (environment prefix ``UNLEARN_``)."""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property, lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.audit_signing import Signer, decode_key
from service.keys.policy import weakness

# What UNLEARN_DEVICE may say (ml.devices says what each means; torch is not imported here).
DEVICE_CHOICES = re.compile(r"auto|cpu|cuda(:\d{1,2})?")


class Settings(BaseSettings):
    # Errors never echo what was given: a bootstrap key must not reach a log or a terminal.
    model_config = SettingsConfigDict(
        env_prefix="UNLEARN_", extra="ignore", hide_input_in_errors=True
    )

    environment: str = Field("development", description="`development` or `production`")
    state_dir: Path = Field(Path(".state"), description="artifacts, caches, the SQLite file")
    database_url: str = Field("", description="SQLAlchemy URL; empty = SQLite under state_dir")
    broker_url: str = Field("", description="Celery broker; empty = the in-process worker")
    data_root: Path = Field(Path("data"), description="the only folder dataset paths may use")
    bootstrap_admin_key: SecretStr = Field(
        SecretStr(""), description="first admin key of tenant `default`"
    )
    audit_signing_key: SecretStr = Field(
        SecretStr(""), description="Ed25519 key (32 bytes, base64) signing the audit log"
    )
    audit_signing_key_file: Path | None = Field(
        None, description="a file holding that key instead (e.g. a container secret)"
    )

    dataset_sync_max_samples: int = Field(
        20_000,
        ge=0,
        description="a manifest or image folder with more samples is registered by a job "
        "(202); smaller ones in the request (201)",
    )
    max_keys_per_request: int = Field(10_000, ge=1)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    bulk_max_requests: int = Field(100, ge=1)
    request_deadline_days: int = Field(30, ge=1)
    max_upload_bytes: int = Field(1 << 30, ge=1024, description="uploaded weights")
    max_model_parameters: int = Field(50_000_000, ge=1000)
    dataset_cache_bytes: int = Field(
        4 << 30,
        ge=0,
        description="decoded dataset inputs a worker keeps between jobs (LRU; 0: none)",
    )
    loader_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="DataLoader worker processes reading manifest and image-folder sources "
        "(0: the job's own process; needs `unlearnd worker --pool solo` or threads)",
    )
    max_cache_mb: int = Field(
        2048,
        ge=1,
        description="a method's per-version cache (PGU's) for the model's network at most "
        "this many MiB; a deletion needs about three times it in memory",
    )

    ingest_batch_max: int = Field(
        256, ge=1, le=5000, description="deletion requests stored per ingest transaction"
    )
    ingest_batches_in_flight: int = Field(
        2, ge=1, le=16, description="ingest transactions one API process runs at once"
    )
    ingest_batch_wait_ms: float = Field(
        0.0, ge=0, le=1000, description="how long a batch lingers for company before it runs"
    )

    rate_limit_per_second: float = Field(100.0, ge=0, description="per key; 0: no limit")
    rate_limit_burst: int = Field(200, ge=1, description="calls a key may make at once")
    auth_failures_per_minute: int = Field(
        30, ge=0, description="failed authentications per client address; 0: no limit"
    )
    max_header_bytes: int = Field(
        65536, ge=4096, le=1048576, description="a request line and headers, together, at most"
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="a request head not complete after this is closed"
    )
    forwarded_allow_ips: str = Field(
        "",
        description="comma-separated addresses or CIDRs of proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed; empty: none (the client is the peer)",
    )

    dispatch_interval_seconds: float = Field(5.0, gt=0)
    sweep_interval_seconds: float = Field(10.0, gt=0)
    job_lease_seconds: float = Field(120.0, gt=0)
    job_max_attempts: int = Field(3, ge=1)
    job_soft_time_limit_seconds: int = Field(6 * 3600, ge=1)

    callback_allowed_networks: str = Field(
        "", description="comma-separated CIDRs callbacks may reach although not public"
    )
    callback_max_attempts: int = Field(
        40, ge=1, le=100, description="attempts per delivery at most (the window ends first)"
    )
    callback_retry_seconds: float = Field(
        10.0, gt=0, description="the first retry's delay; doubled per attempt up to 6 hours"
    )
    callback_retry_hours: float = Field(
        72.0,
        gt=0,
        description="a delivery is retried until this long after its event, the last "
        "attempt at the end of the window",
    )
    callback_timeout_seconds: float = Field(10.0, gt=0, le=60)

    public_url: str = Field(
        "",
        description="the API's public base URL (https://unlearn.example.com): events link to "
        "downloads with it; empty: the links are paths",
    )

    metrics_enabled: bool = True
    metrics_token: SecretStr = Field(
        SecretStr(""), description="when set, /metrics needs it and adds per-model series"
    )
    metrics_port: int | None = Field(None, description="serve /metrics on its own port instead")
    worker_metrics_port: int | None = Field(None, description="a worker's own metrics port")

    demo_model: bool = Field(False, description="register the digits demo model at start")
    device: str = Field(
        "auto",
        description="`auto` (CUDA device 0 when torch sees one), `cpu`, `cuda` or `cuda:N`; "
        "a process that runs jobs refuses to start on a GPU it lacks",
    )

    @field_validator("environment")
    @classmethod
    def _known_environment(cls, value: str) -> str:
        if value not in {"development", "production"}:
            raise ValueError("environment must be development or production")
        return value

    @field_validator("audit_signing_key_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_CHOICES.fullmatch(value):
            raise ValueError("device must be auto, cpu, cuda or cuda:N")
        return value

    @field_validator("callback_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for network in filter(None, (part.strip() for part in value.split(","))):
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for proxy in filter(None, (part.strip() for part in value.split(","))):
            if proxy != "*":
                ipaddress.ip_network(proxy, strict=False)  # ValueError names the bad one
        return value

    def link(self, path: str) -> str:
        """An absolute URL of the API's ``path`` under ``public_url`` (the path when unset)."""
        return self.public_url.rstrip("/") + path

    @property
    def callback_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        parts = (part.strip() for part in self.callback_allowed_networks.split(","))
        return [ipaddress.ip_network(p, strict=False) for p in parts if p]

    @model_validator(mode="after")
    def _readable_signing_key(self) -> Settings:
        """The key is checked where it is set, so no process starts unable to sign."""
        self.audit_signer  # noqa: B018 (raises ValueError, never quoting the key)
        return self

    @model_validator(mode="after")
    def _no_placeholders_in_production(self) -> Settings:
        if self.environment == "production":
            if not self.database_url or self.database_url.startswith("sqlite"):
                raise ValueError("production needs UNLEARN_DATABASE_URL pointing at Postgres")
            if self.audit_signer is None:
                raise ValueError(
                    "production needs UNLEARN_AUDIT_SIGNING_KEY or UNLEARN_AUDIT_SIGNING_KEY_FILE "
                    "(`unlearnd audit keygen` prints one): the audit log is signed with a key "
                    "the database does not hold"
                )
            key = self.bootstrap_admin_key.get_secret_value()
            problem = weakness(key) if key else None
            if problem:
                raise ValueError(f"UNLEARN_BOOTSTRAP_ADMIN_KEY is refused in production: {problem}")
        return self

    @cached_property
    def audit_signer(self) -> Signer | None:
        """The audit log's signer, or None when no key is configured."""
        if self.audit_signing_key_file is not None:
            if self.audit_signing_key.get_secret_value():
                raise ValueError("set UNLEARN_AUDIT_SIGNING_KEY or its _FILE, not both")
            try:
                text = self.audit_signing_key_file.read_text()
            except OSError as error:
                raise ValueError(
                    f"UNLEARN_AUDIT_SIGNING_KEY_FILE cannot be read: {error.strerror}"
                ) from None
        else:
            text = self.audit_signing_key.get_secret_value()
        if not text.strip():
            return None
        try:
            return Signer(decode_key(text))
        except ValueError as error:
            raise ValueError(f"the audit signing key is not usable: {error}") from None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.state_dir / 'unlearn.db').resolve()}"

    @property
    def embedded_worker(self) -> bool:
        return not self.broker_url

    @property
    def artifact_dir(self) -> Path:
        return self.state_dir / "artifacts"


@lru_cache
def get_settings() -> Settings:
    return Settings()
