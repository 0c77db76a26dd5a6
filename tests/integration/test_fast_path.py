"""The decode loop (prefix reuse, continuous batching) on the pinned transformers, and the
loud fallback when a model cannot use it: a warning at start, `!relay status`, systemd STATUS."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from relaybot.config.schema import Config
from relaybot.conversation.formats import RelayFormat, Turn
from relaybot.inference.engine import GenerationRequest, SamplingParams, degradation
from relaybot.inference.local.decode import stepwise_support
from relaybot.inference.local.engine import TransformersEngine
from relaybot.inference.selection import ModelChoice
from tests.support.botrunner import BotRunner
from tests.support.notify import NotifyListener
from tests.support.scripted import ScriptedServer

pytestmark = pytest.mark.integration

CPU_CHOICE = ModelChoice("random", None, "cpu", "float32", "none", "built in the test")


def test_the_pinned_transformers_runs_the_decode_loop_on_the_embedded_model(
    real_engine: object,
) -> None:
    engine: Any = real_engine
    forward = set(inspect.signature(engine.model.forward).parameters)
    support = engine.stepwise
    assert support.available, f"fast path off: {support.reason}"
    # transformers 5.24 renamed the forward's cache argument; the loop must follow it.
    assert support.cache_argument == _cache_argument_of_this_transformers()
    assert support.cache_argument in forward
    assert engine.reuses_prefixes and engine.degraded == ""
    # The loop really runs: a second prompt extending the first reuses its cached prefix.
    fmt, params = RelayFormat(), SamplingParams(max_new_tokens=4, seed=3)
    turns = [Turn("system", "* Now talking in #fast"), Turn("alice", "relaybot: hi there")]
    key = ("net", "#fast-path")
    engine.generate([GenerationRequest(fmt.render(turns, "relaybot"), params, key)])
    turns.append(Turn("bob", "relaybot: and again"))
    engine.generate([GenerationRequest(fmt.render(turns, "relaybot"), params, key)])
    assert engine.last_stats[0].reused_tokens > 0
    engine.forget(key)


def _cache_argument_of_this_transformers() -> str:
    import transformers
    from packaging.version import Version

    return "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"


def _tiny(kind: str, **extra: Any) -> Any:
    import torch
    import transformers

    config_class = getattr(transformers, f"{kind}Config")
    model_class = getattr(transformers, f"{kind}ForCausalLM")
    config = config_class(
        vocab_size=49152,  # the embedded model's tokenizer
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        **extra,
    )
    torch.manual_seed(0)
    return model_class(config).eval()


class PastKeyValuesForward:
    """A model as transformers before 5.24 shaped it: the cache argument is `past_key_values`."""

    def __init__(self, model: Any) -> None:
        self.model, self.config = model, model.config

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        position_ids: Any = None,
        past_key_values: Any = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
    ) -> Any:
        raise AssertionError("only the signature is read")


def test_the_cache_argument_is_read_off_the_forward_signature() -> None:
    model = _tiny("Llama")
    support = stepwise_support(model)
    assert support.available and support.layer_count == 2
    assert support.cache_argument == _cache_argument_of_this_transformers()
    older = stepwise_support(PastKeyValuesForward(model))
    assert older.available and older.cache_argument == "past_key_values"


def test_sliding_window_models_fall_back_and_say_why(real_engine: object) -> None:
    model = _tiny("Mistral", sliding_window=16)
    support = stepwise_support(model)
    assert not support.available
    assert "SlidingWindow" in support.reason
    with capture_logs() as logs:
        engine = TransformersEngine(model, real_engine.tokenizer, CPU_CHOICE, 256)  # type: ignore[attr-defined]
    warnings = [entry for entry in logs if entry["event"] == "fast_path_unavailable"]
    assert [entry["log_level"] for entry in warnings] == ["warning"]
    assert "SlidingWindow" in warnings[0]["reason"]
    assert degradation(engine).startswith("decode fast path off")
    # The fallback still answers.
    prompt = RelayFormat().render([Turn("alice", "relaybot: hi")], "relaybot")
    params = SamplingParams(max_new_tokens=3, seed=1)
    assert len(engine.generate([GenerationRequest(prompt, params)])) == 1


@pytest.fixture
def degraded_engine(real_engine: object) -> Iterator[TransformersEngine]:
    yield TransformersEngine(
        _tiny("Mistral", sliding_window=16),
        real_engine.tokenizer,  # type: ignore[attr-defined]
        CPU_CHOICE,
        256,
    )


def test_a_degraded_engine_shows_in_relay_status_and_systemd_status(
    config_factory: Callable[[str], Config],
    degraded_engine: TransformersEngine,
    listener: NotifyListener,
    socket_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(socket_dir / "notify.sock"))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    server = ScriptedServer()
    config = config_factory(f"""
[irc]
host = "127.0.0.1"
port = {server.port}
nick = "relaybot"
channels = ["#a"]
[model]
warmup = false
""")
    with BotRunner(config, degraded_engine) as runner:
        server.accept()
        first = listener.wait_for(lambda m: "STATUS" in m, 10)
        assert first["STATUS"].startswith("WARNING decode fast path off (cache layers")
        assert first["STATUS"].endswith(f"connecting to 127.0.0.1:{server.port}")
        status = runner.on_reactor(runner.net.status_line)
        assert status.startswith("WARNING: decode fast path off (")
        assert "; model random on cpu" in status
    server.close()
