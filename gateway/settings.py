"""All configuration: one pydantic-settings class, environment prefix ``GATEWAY_``.

Its fields are declared in groups, one module each: ``gateway/config/{http,upstream,session,client}_settings.py``.

Every limit and timeout is a typed field whose name carries its unit. Secrets are ``SecretStr``
and :func:`load_settings` turns validation failures into one line per variable that never echoes its value.
"""

from __future__ import annotations

import os
from typing import Any, Self

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from gateway.config import bounds
from gateway.config.client_settings import ClientSettings
from gateway.config.environment import dotenv_names, parse_problem, unknown_variables, validation_problems
from gateway.config.http_settings import HttpServerSettings
from gateway.config.session_settings import SessionSettings
from gateway.config.startup import dotenv_problem, startup_problems
from gateway.config.upstream_settings import UpstreamSettings


class SettingsError(ValueError):
    """Configuration is invalid. The text names variables and problems (one line each), never values."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class Settings(ClientSettings, SessionSettings, UpstreamSettings, HttpServerSettings, BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_file=".env", env_file_encoding="utf-8", extra="ignore", allow_inf_nan=False
    )

    @model_validator(mode="after")
    def _write_stall_above_the_send_budget(self) -> Self:
        # The gateway's own budget for a client that does not read acts first (its error reaches the
        # client): a lower stall was silently raised to 2 x the send timeout (the default still is).
        floor = 2 * self.client_send_timeout_s
        if "http_write_stall_s" in self.model_fields_set and self.http_write_stall_s < floor:
            raise ValueError(
                "GATEWAY_HTTP_WRITE_STALL_S: below 2 x GATEWAY_CLIENT_SEND_TIMEOUT_S (the gateway's own budget for a"
                " client that does not read must act first): raise it, or unset it"
            )
        return self

    @property
    def simulator_mode(self) -> bool:
        return not self.upstream_target

    @property
    def auth_required(self) -> bool:
        if self.auth is None:
            return not self.simulator_mode
        return self.auth == "required"

    def upstream_is_plaintext(self) -> bool:
        if self.upstream_plaintext is not None:
            return self.upstream_plaintext
        return bounds.is_loopback(self.upstream_target)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and ``overrides``). Unknown ``GATEWAY_*`` variables and
    invalid values raise one :class:`SettingsError` with a line per variable, never echoing a value."""
    fields = list(Settings.model_fields)
    env_file = overrides.get("_env_file", Settings.model_config.get("env_file"))
    if problem := dotenv_problem(env_file):  # read by both steps below: a traceback from either
        raise SettingsError(problem)
    problems = unknown_variables([*os.environ, *dotenv_names(env_file)], fields)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems += validation_problems(exc.errors(), fields)
    except PydanticSettingsError as exc:  # a list or object variable that is not JSON
        problems.append(parse_problem(str(exc)))
    if not problems:  # what only the whole configuration tells (it is complete now)
        problems = startup_problems(settings, os.environ, auth_required=settings.auth_required)
    if problems:
        raise SettingsError(*problems)
    return settings
