"""Wire shapes of chat completions (the part of OpenAI's API needed to use a fine-tuned model)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.wire import RequestModel


class ChatMessage(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str = Field(max_length=200_000)
    name: str | None = Field(default=None, max_length=64)


class StreamOptions(BaseModel):
    """`stream_options`: whether the last chunk carries `usage`."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ChatCompletionRequest(RequestModel):
    """Body of `POST /v1/chat/completions`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "ft:smollm2-135m-instruct:personal:support:9o1eNNKO",
                    "messages": [{"role": "user", "content": "Remercie Mme Durand."}],
                    "max_completion_tokens": 200,
                }
            ]
        }
    )

    model: str = Field(min_length=1, max_length=300)
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_tokens: Annotated[int, Field(strict=True, ge=1, le=4096)] | None = None
    max_completion_tokens: Annotated[int, Field(strict=True, ge=1, le=4096)] | None = None
    n: Annotated[int, Field(strict=True, ge=1, le=8)] = 1
    stop: str | list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None
    seed: int | None = Field(default=None, strict=True)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop takes at most 4 sequences")
        if self.stream and self.n > 1:
            raise ValueError("n must be 1 when stream is true")
        return self

    @property
    def stops(self) -> list[str]:
        """The stop sequences as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def token_limit(self) -> int:
        """Most tokens to generate per choice."""
        return self.max_completion_tokens or self.max_tokens or 256


class AssistantMessage(BaseModel):
    """The generated message."""

    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class Choice(BaseModel):
    """One generated answer."""

    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Usage(BaseModel):
    """Tokens read and written."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """OpenAI's `chat.completion` object."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    service_tier: str = "default"
