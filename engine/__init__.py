"""The serving core, no HTTP: SamplingParams, Request, Scheduler, ModelRunner, LLM, AsyncEngine."""

from engine.engine import Engine, EngineConfig
from engine.llm import LLM
from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams

__all__ = ["LLM", "Engine", "EngineConfig", "RequestOutput", "SamplingParams"]
