"""distill: turn an oracle LLM's judgement into a fast local regression model."""

__version__ = "0.1.0"
