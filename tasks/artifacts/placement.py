"""Where a flow's run lives: its artifact store and the Ray cluster it runs on.  One base for
every flow's config, so the two fields, their help and their validation are written once."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from codealign.tasks.artifacts import layout
from codealign.tasks.artifacts.store import to_uri


class RunPlacement(BaseModel):
    store: str = Field(layout.DEFAULT_STORE, validate_default=True,
                       description="artifact store root: a directory, file:// or s3://bucket/prefix")
    ray_address: str | None = Field(None, description="none = a local Ray; 'auto' or ray://host:port = a cluster")

    @field_validator("store")
    @classmethod
    def _absolute_store(cls, value: str) -> str:
        """Ray workers on other nodes (other working directories) must find the same store."""
        return to_uri(value)
