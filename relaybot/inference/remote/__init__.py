"""Engines on an inference server (vLLM, TGI, OpenAI-compatible): HTTP, the network backend
and prompt flattening."""
