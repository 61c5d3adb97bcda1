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

    # -- storage ---------------------------------------------------------------------
    data_dir: Path = Field(Path("mipd-data"), description="Directory of the embedded store, the registry and the spool.")
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

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "mipd.sqlite"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "registry.sqlite"

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
