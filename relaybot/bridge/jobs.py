"""What a reply asks the engine: the conversation's prompt, rendered for the speaker, with the
channel's sampling overrides applied."""

from __future__ import annotations

import dataclasses

from relaybot.bridge.scheduling import Wanted
from relaybot.config.channel_settings import CHANNEL_SETTINGS, ChannelSettings
from relaybot.conversation.formats import PromptFormat
from relaybot.conversation.identity import ContextKey
from relaybot.conversation.transcript import Transcript
from relaybot.inference.engine import GenerationRequest, SamplingParams
from relaybot.inference.worker import Job


def channel_params(base: SamplingParams, settings: ChannelSettings) -> SamplingParams:
    """`base` with the channel's overrides of `[model]` sampling keys."""
    changes = {
        spec.name: value
        for spec in CHANNEL_SETTINGS.values()
        if spec.section == "model" and (value := getattr(settings, spec.name)) is not None
    }
    return dataclasses.replace(base, **changes) if changes else base


def reply_job(
    key: ContextKey,
    wanted: Wanted,
    job_id: int,
    *,
    transcript: Transcript,
    fmt: PromptFormat,
    base: SamplingParams,
    settings: ChannelSettings,
    network: str,
    model: str | None = None,
) -> Job:
    """The job for a reply in `key`'s conversation; `model`: the served model chosen for it
    (None: the configured one)."""
    params = channel_params(base, settings)
    # A channel may allow longer replies than the context budget was sized for.
    extra = params.max_new_tokens - base.max_new_tokens
    prompt = fmt.render(transcript.turns_for(wanted.speaker, extra), wanted.speaker)
    return Job(
        job_id=job_id,
        key=key,
        reply_to=wanted.reply_to,
        speaker=wanted.speaker,
        # The key lets the engine reuse this conversation's cached prompt prefix.
        request=GenerationRequest(prompt, params, cache_key=key, model=model),
        log_context={"network": network, "channel": wanted.reply_to, "nick": wanted.asker},
        requested_at=wanted.requested_at,
        answers=wanted.msgid,
        asker=wanted.asker,
    )
