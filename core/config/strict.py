"""The base of every configuration section (closed, validated on assignment) and the secret-reference rule."""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

import re

from pydantic import BaseModel, ConfigDict

SECRET_REF = re.compile(r"^(env|file|aws-sm|gcp-sm|azure-kv):.+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)
