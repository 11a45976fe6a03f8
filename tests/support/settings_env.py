"""The environment variables `Settings` reads, as the documentation and the deploy files must name them."""

from __future__ import annotations

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from schemas.settings import Settings


def field_env_names(name: str, field: FieldInfo) -> set[str]:
    """The variables one field is read from: its aliases when it has any, else the prefixed field name."""
    names: set[str] = set()
    for alias in (field.alias, field.validation_alias):
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
    if not names:
        prefix = str(Settings.model_config.get("env_prefix", "")).upper()
        names.add(f"{prefix}{name.upper()}")
    return names


def setting_env_names() -> set[str]:
    """Every variable any field of `Settings` is read from."""
    return {env for name, field in Settings.model_fields.items() for env in field_env_names(name, field)}
