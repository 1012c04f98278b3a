"""Request and response schemas of distill-serve (pydantic), as /docs shows them.

An article is checked by distill-score's own rules (records.parse_line and
parse_article), one by one, so a bad article gets its own error entry while
the others are scored: the request schema takes each article as any JSON
value and documents the shape it should have.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

ARTICLE_SCHEMA = {
    "type": "object",
    "description": "an article as distill-score reads it: id and content (or text) required, title optional; "
                   "other fields are carried into the records when the server was started with --carry",
    "required": ["id"],
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string"},
        "content": {"type": "string"},
        "text": {"type": "string", "description": "used when there is no content"},
    },
    "additionalProperties": True,
}

Article = Annotated[Any, WithJsonSchema(ARTICLE_SCHEMA)]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "articles": [{"id": "a1", "title": "Solar farm opens",
                      "content": "The 200 MW plant replaces a coal station and ..."}],
        "filters": ["sustainability/v1"]}]})

    articles: list[Article] = Field(description="one or many articles; results come back in this order")
    filters: list[str] | None = Field(default=None, description="filter ids to score (GET /v1/filters); default: all")


class Record(BaseModel):
    """Exactly the line distill-score writes for the article and filter (+ carried fields)."""

    model_config = ConfigDict(extra="allow")

    id: str
    scores: dict[str, float] | None = Field(description="0-10 per dimension; null when the prefilter blocked it")
    overall_score: float | None
    tier: str | None
    prefilter: str = Field(description='"passed" or why the prefilter blocked the article')
    model: str


class ScoredResult(BaseModel):
    index: int = Field(description="position of the article in the request")
    id: str
    records: dict[str, Record] = Field(description="filter id -> record")


class ErrorResult(BaseModel):
    index: int
    id: str | None
    error: str = Field(description="why the article cannot be scored (the reason distill-score's rejects give)")


class ScoreResponse(BaseModel):
    results: list[ScoredResult | ErrorResult]


class DimensionInfo(BaseModel):
    name: str
    weight: float
    description: str


class FilterInfo(BaseModel):
    id: str
    name: str
    version: int
    description: str
    dimensions: list[DimensionInfo]
    tiers: dict[str, float] = Field(description="tier -> lowest overall score it takes, highest first")
    model: str
    metrics: dict[str, Any] = Field(description="evaluation metrics from the model folder's distill.json, or {}")


class FiltersResponse(BaseModel):
    filters: list[FilterInfo]


class Status(BaseModel):
    status: str


class ErrorResponse(BaseModel):
    error: str = Field(description="what is wrong, in one line")
    detail: Any = Field(description="the same as FastAPI gives it: a string, or for 422 a list of {loc, msg, type}")
