"""The one typed configuration object.

Every option is read from an environment variable `MIPD_<NAME>` (e.g. `MIPD_BROKER_URL`),
or from the TOML file named by `MIPD_CONFIG_FILE` (keys are the field names), or left at
its default. Environment variables win over the file. `mipd config` prints them all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIPD_", extra="forbid", validate_default=True)

    # -- MQTT ------------------------------------------------------------------------
    broker_url: str = Field(
        "embedded",
        description="MQTT broker: `embedded` starts the in-process broker; otherwise mqtt://user:pass@host:port or mqtts://...",
    )
    embedded_broker_port: int = Field(1883, description="Port of the embedded broker (0 picks a free port).")
    mqtt_protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT protocol version; `auto` tries 5 and falls back to 3.1.1."
    )
    ingest_client_id: str = Field("mipd-ingest", description="MQTT client id of the ingest consumer (its persistent session).")
    ingest_shared_group: str | None = Field(
        None, description="MQTT 5 shared-subscription group, to spread device topics over several ingest workers."
    )

    ingest_notify: bool = Field(
        False,
        description="Publish committed-event notifications (mipd/v1/svc/committed/#) for separate assimilation workers.",
    )

    # -- storage ---------------------------------------------------------------------
    data_dir: Path = Field(Path("mipd-data"), description="Directory of the embedded store, the registry and the spool.")
    shared_dir: Path | None = Field(
        None,
        description="Directory of the files every worker of a deployment shares (enrollment registry, service DB); default data_dir.",
    )
    store: Literal["sqlite", "influxdb"] = Field("sqlite", description="Time-series store for readings and doses.")
    influx_url: str = Field("http://127.0.0.1:8086", description="InfluxDB base URL (v1 API `/write` and `/query`).")
    influx_database: str = Field("mipd", description="InfluxDB database (a DBRP-mapped bucket on 2.x/3.x).")
    influx_retention_policy: str | None = Field(None, description="InfluxDB retention policy; server default if unset.")
    influx_username: str | None = Field(None, description="InfluxDB 1.x user (v1 `u` parameter).")
    influx_password: SecretStr | None = Field(None, description="InfluxDB 1.x password (v1 `p` parameter).")
    influx_token: SecretStr | None = Field(None, description="InfluxDB 2.x/3.x API token (sent as `Authorization: Token`).")
    influx_timeout_s: float = Field(10.0, gt=0, description="Timeout of one InfluxDB request, s.")

    # -- ingest tuning ---------------------------------------------------------------
    ingest_batch_max: int = Field(1000, ge=1, description="Most messages committed in one store write.")
    ingest_batch_window_ms: float = Field(5.0, ge=0, description="How long a batch waits to fill, ms.")
    ingest_queue_max: int = Field(
        20_000, ge=1, description="Messages held between MQTT and the store; when full, reading from the broker pauses."
    )

    # -- assimilation and policy -------------------------------------------------------
    filter_method: Literal["pf", "enkf", "map"] = Field(
        "pf", description="Posterior method: particle filter, ensemble Kalman filter, or MAP (the classic baseline)."
    )
    filter_particles: int = Field(1000, ge=16, description="Particles (pf) or ensemble members (enkf) per patient.")
    filter_seed: int = Field(0, description="Seed of every patient's random stream (with the patient id).")
    rejuvenate_after_resamples: int = Field(
        0, ge=0, description="Particle filter: a resample-move step (Metropolis moves against the whole stored history) "
        "after this many resamplings of a patient; 0 = never. Pays on dense sensor streams (docs/BENCHMARKS.md)."
    )
    rejuvenate_moves: int = Field(3, ge=1, le=50, description="Metropolis moves per resample-move step.")
    reorder_window_s: float = Field(
        2.0, ge=0, description="How long a new event waits for earlier ones before it is assimilated, s."
    )
    assimilation_batch_window_ms: float = Field(
        200.0, ge=0, description="How long readings of different patients are gathered into one update, ms."
    )
    assimilation_max_batch: int = Field(256, ge=1, description="Most patients in one vmapped update.")
    assimilation_queue_max: int = Field(
        10_000, ge=1, description="Committed batches waiting for assimilation; when full, ingest stops acknowledging."
    )
    checkpoint_interval_s: float = Field(30.0, gt=0, description="How often changed posteriors are checkpointed, s.")
    snapshot_every_h: float = Field(
        6.0, gt=0, description="Model hours between in-memory snapshots that late events rewind to."
    )
    shard_index: int = Field(0, ge=0, description="This assimilation worker's shard (`mipd assimilate`).")
    shard_count: int = Field(1, ge=1, description="Number of assimilation workers; each owns the patients hashed to it.")
    stale_check_s: float = Field(
        60.0, ge=0, description="How often silent sensors are checked against the wall clock, s (0: only when data arrive)."
    )
    jax_compilation_cache: bool = Field(
        True, description="Keep compiled XLA programs in <data_dir>/jax-cache, so that a restart does not compile "
        "the filter and policy kernels again (a cold start compiles for about a minute on 2 cores)."
    )
    publish_alerts: bool = Field(True, description="Publish alerts on mipd/v1/team/{team}/alert (MQTT, QoS 1).")
    publish_sample_requests: bool = Field(
        True, description="Send next-sample suggestions to enrolled point-of-care meters on mipd/v1/dev/{device}/schedule."
    )

    # -- HTTP ------------------------------------------------------------------------
    http_host: str = Field("127.0.0.1", description="Address the API and dashboard listen on.")
    http_port: int = Field(8000, ge=0, description="Port of the API and dashboard (0 picks a free port).")

    # -- API and dashboard ---------------------------------------------------------------
    api_session_ttl_s: float = Field(12 * 3600.0, gt=0, description="Lifetime of a login session token, s.")
    api_sse_keepalive_s: float = Field(15.0, gt=0, description="Keep-alive comment interval of the live event stream, s.")
    api_login_max_failures: int = Field(
        5, ge=1, description="Failed logins per user name, and per client address, before further attempts get 429."
    )
    api_login_window_s: float = Field(300.0, gt=0, description="Moving window over which failed logins are counted, s.")
    api_behind_tls_proxy: bool = Field(
        False, description="The API is reached only through a TLS-terminating proxy: session cookies are Secure and "
                           "responses carry Strict-Transport-Security even though the proxy speaks plain HTTP to it."
    )
    api_max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body the API accepts, bytes; a larger one is answered 413."
    )

    @property
    def service_db_path(self) -> Path:
        return (self.shared_dir or self.data_dir) / "service.sqlite"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "mipd.sqlite"

    @property
    def registry_path(self) -> Path:
        return (self.shared_dir or self.data_dir) / "registry.sqlite"

    @property
    def jax_cache_dir(self) -> Path:
        return self.data_dir / "jax-cache"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "influx-spool"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("MIPD_CONFIG_FILE")
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"MIPD_CONFIG_FILE={config_file} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) of every option, for `mipd config` and the docs."""
    rows = []
    for name, spec in Settings.model_fields.items():
        default = spec.default
        shown = "" if default is None else str(default)
        rows.append((f"MIPD_{name.upper()}", shown, spec.description or ""))
    return rows
