"""Model presets: the seed models by name, with their prompt format, stops and sampling.

`[model] name = "<preset>"` picks a preset. A preset names the Hugging Face repository of each
variant (full precision and bitsandbytes 8/4-bit) with the free VRAM it needs, the prompt format
its card documents, extra stop strings and the card's sampling settings. Any key written in the
config wins over the preset's value. Weights are never downloaded unless `allow_download` is on,
so a preset "just works" on a machine that already has them in its Hugging Face cache.

VRAM thresholds are weights plus a margin for the KV cache at `context_tokens` and CUDA's own
overhead: parameters x bytes per parameter (2 for bf16, ~1.1 for 8-bit, ~0.6 for nf4 with double
quantisation) rounded up, plus 2-4 GiB. The Relay variants use the reference client's own
thresholds instead: strictly more than 24, 15 and 11 (decimal) GB free (relaylm.py's
`suggest_relay_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1024**3
GB = 1000**3  # relaylm.py's thresholds are decimal bytes


@dataclass(frozen=True, slots=True)
class Variant:
    source: str  # Hugging Face repository id
    quantization: str  # none | 8bit | 4bit (a pre-quantised repo keeps its own config)
    min_free_bytes: int
    # Strictly more than `min_free_bytes` (relaylm.py's `free_vram > 24_000_000_000`) rather
    # than at least.
    strict: bool = False

    @property
    def min_free_vram_gib(self) -> float:
        return self.min_free_bytes / GiB

    def fits(self, cuda_free_bytes: int) -> bool:
        if self.strict:
            return cuda_free_bytes > self.min_free_bytes
        return cuda_free_bytes >= self.min_free_bytes

    @property
    def need(self) -> str:
        """The rule in words: "more than 11 GB" (decimal, the reference's) or "at least 8 GiB"."""
        if self.strict:
            return f"more than {self.min_free_bytes / GB:g} GB"
        return f"at least {self.min_free_vram_gib:g} GiB"


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
            if variant.fits(cuda_free_bytes):
                return variant
        return None

    def smallest(self) -> Variant:
        return min(self.variants, key=lambda variant: variant.min_free_bytes)


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
            # The reference client's choice by free VRAM (relaylm.py's suggest_relay_model):
            # strictly more than 24e9, 15e9 and 11e9 bytes free.
            variants=(
                Variant("danlou/relay-v0.1-Mistral-Nemo-2407", "none", 24 * GB, strict=True),
                Variant("danlou/relay-v0.1-Mistral-Nemo-2407-8bit", "8bit", 15 * GB, strict=True),
                Variant("danlou/relay-v0.1-Mistral-Nemo-2407-4bit", "4bit", 11 * GB, strict=True),
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
                Variant("jondurbin/airoboros-mpt-30b-gpt4-1p4-five-epochs", "none", 64 * GiB),
                Variant("jondurbin/airoboros-mpt-30b-gpt4-1p4-five-epochs", "8bit", 36 * GiB),
                Variant("jondurbin/airoboros-mpt-30b-gpt4-1p4-five-epochs", "4bit", 22 * GiB),
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
                Variant("ziniuli/Mistral-7B-ReMax-v0.1", "none", 18 * GiB),
                Variant("ziniuli/Mistral-7B-ReMax-v0.1", "8bit", 10 * GiB),
                Variant("ziniuli/Mistral-7B-ReMax-v0.1", "4bit", 7 * GiB),
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
                Variant("RLHFlow/LLaMA3-iterative-DPO-final", "none", 19 * GiB),
                Variant("RLHFlow/LLaMA3-iterative-DPO-final", "8bit", 11 * GiB),
                Variant("RLHFlow/LLaMA3-iterative-DPO-final", "4bit", 8 * GiB),
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
                Variant("jondurbin/bagel-8x7b-v0.2", "none", 96 * GiB),
                Variant("jondurbin/bagel-8x7b-v0.2", "8bit", 52 * GiB),
                Variant("jondurbin/bagel-8x7b-v0.2", "4bit", 28 * GiB),
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
