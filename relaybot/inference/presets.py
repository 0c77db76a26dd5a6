"""Model presets: the seed models by name, with their prompt format, stops and sampling.

`[model] name = "<preset>"` picks a preset. A preset names the Hugging Face repository of each
variant (full precision and bitsandbytes 8/4-bit) with the free VRAM it needs, the prompt format
its card documents, extra stop strings and the card's sampling settings. Any key written in the
config wins over the preset's value. Weights are never downloaded unless `allow_download` is on,
so a preset "just works" on a machine that already has them in its Hugging Face cache.

VRAM thresholds are weights plus a margin for the KV cache at `context_tokens` and CUDA's own
overhead: parameters x bytes per parameter (2 for bf16, ~1.1 for 8-bit, ~0.6 for nf4 with double
quantisation) rounded up, plus 2-4 GiB.
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1024**3


@dataclass(frozen=True, slots=True)
class Variant:
    source: str  # Hugging Face repository id
    quantization: str  # none | 8bit | 4bit (a pre-quantised repo keeps its own config)
    min_free_vram_gib: float


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repetition_penalty: float
    max_new_tokens: int


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    card: str  # the seed card this preset comes from (/work/shared/seeds/)
    variants: tuple[Variant, ...]  # best first; the first that fits the free VRAM is used
    format: str
    stop: tuple[str, ...]  # on top of the format's own stops
    sampling: Sampling
    context_tokens: int
    closed_context_qa: bool  # trained on BEGININPUT/BEGININSTRUCTION (the `ask` command)
    notes: str = ""

    def variant_for(self, cuda_free_bytes: int | None) -> Variant | None:
        """The best variant that fits; None without CUDA or when none fits."""
        if cuda_free_bytes is None:
            return None
        for variant in self.variants:
            if cuda_free_bytes >= variant.min_free_vram_gib * GiB:
                return variant
        return None

    def smallest(self) -> Variant:
        return min(self.variants, key=lambda variant: variant.min_free_vram_gib)


# The reference client's settings (relaylm.py), shared by the Relay variants.
RELAY_SAMPLING = Sampling(
    temperature=0.3, top_k=40, top_p=0.95, min_p=0.05, repetition_penalty=1.1, max_new_tokens=128
)

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="relay",
            card="relay-v0.1-mistral-nemo-2407.txt",
            # The reference client's choice by free VRAM (relaylm.py's suggest_relay_model).
            variants=(
                Variant("danlou/relay-v0.1-Mistral-Nemo-2407", "none", 24),
                Variant("danlou/relay-v0.1-Mistral-Nemo-2407-8bit", "8bit", 16),
                Variant("danlou/relay-v0.1-Mistral-Nemo-2407-4bit", "4bit", 12),
            ),
            format="relay",
            stop=(),
            sampling=RELAY_SAMPLING,
            context_tokens=4096,
            closed_context_qa=False,
            notes="Mistral-Nemo 12B with a QLoRA on based-chat; nicks are ChatML roles",
        ),
        Preset(
            name="airoboros-mpt-30b-gpt4-1p4",
            card="airoboros-mpt-30b-gpt4-1p4.txt",
            variants=(
                Variant("jondurbin/airoboros-mpt-30b-gpt4-1p4-five-epochs", "none", 64),
                Variant("jondurbin/airoboros-mpt-30b-gpt4-1p4-five-epochs", "8bit", 36),
                Variant("jondurbin/airoboros-mpt-30b-gpt4-1p4-five-epochs", "4bit", 22),
            ),
            format="vicuna",  # the card's "A chat between … USER: [prompt] ASSISTANT:"
            stop=("</s>",),
            # The card runs FastChat with --temperature 0.5; the rest are neutral.
            sampling=Sampling(0.5, 0, 1.0, 0.0, 1.0, 256),
            context_tokens=8192,  # mpt-30b's window
            closed_context_qa=True,
        ),
        Preset(
            name="mistral-7b-remax-v0.1",
            card="mistral-7b-remax-v0.1.txt",
            variants=(
                Variant("ziniuli/Mistral-7B-ReMax-v0.1", "none", 18),
                Variant("ziniuli/Mistral-7B-ReMax-v0.1", "8bit", 10),
                Variant("ziniuli/Mistral-7B-ReMax-v0.1", "4bit", 7),
            ),
            format="mistral",  # `<s>[INST] … [/INST]`, no system role
            stop=(),
            # The card's sampling for ReMax training: temperature 0.7, top_p 0.9.
            sampling=Sampling(0.7, 0, 0.9, 0.0, 1.0, 256),
            context_tokens=8192,
            closed_context_qa=False,
            notes="the card gives no repository id; this is the ReMax authors' upload",
        ),
        Preset(
            name="llama3-iterative-dpo-final",
            card="llama3-iterative-dpo-final-exl2.txt",
            # The card is an ExLlamaV2 quantisation, which transformers cannot load; the
            # original checkpoint it names is quantised with bitsandbytes instead.
            variants=(
                Variant("RLHFlow/LLaMA3-iterative-DPO-final", "none", 19),
                Variant("RLHFlow/LLaMA3-iterative-DPO-final", "8bit", 11),
                Variant("RLHFlow/LLaMA3-iterative-DPO-final", "4bit", 8),
            ),
            format="llama3",
            stop=(),
            # The card's usage samples with the checkpoint's generation defaults; these are
            # the common Llama-3 chat settings.
            sampling=Sampling(0.7, 0, 0.9, 0.0, 1.0, 256),
            context_tokens=8192,
            closed_context_qa=False,
            notes="the exl2 branches need ExLlamaV2; use engine = 'openai' against a server",
        ),
        Preset(
            name="bagel-8x7b-v0.2",
            card="bagel-8x7b-v0.2.txt",
            variants=(
                Variant("jondurbin/bagel-8x7b-v0.2", "none", 96),
                Variant("jondurbin/bagel-8x7b-v0.2", "8bit", 52),
                Variant("jondurbin/bagel-8x7b-v0.2", "4bit", 28),
            ),
            format="llama2",  # the card's TGI example; vicuna, alpaca and chatml also work
            stop=("</s>",),
            # The card's TGI `/generate` parameters.
            sampling=Sampling(0.7, 20, 0.9, 0.0, 1.15, 100),
            context_tokens=8192,
            closed_context_qa=True,
            notes="Mixtral 8x7B; the card serves it with TGI (engine = 'tgi')",
        ),
    )
}


def preset_named(name: str) -> Preset | None:
    return PRESETS.get(name)
