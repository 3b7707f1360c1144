"""Wire shapes of the providers' admin routes (extensions)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from service.wire import RequestModel


class ExitRequest(RequestModel):
    """Body of `POST /v1/providers/{name}/exit`."""

    steps: list[Literal["import", "record"]] = Field(
        default=["import", "record"], min_length=1, max_length=2
    )
    project_id: str | None = Field(
        default=None, max_length=64, description="Where to import; the caller's project by default."
    )
    prompts_file: str | None = Field(
        default=None,
        max_length=64,
        description="A chat-format file of the project whose prompts every model is asked.",
    )
