"""``kq bench`` cases and implementations: what is measured, on which prompts and models, compared with what."""

from __future__ import annotations

from dataclasses import dataclass, field



IMPLEMENTATIONS = ("kqlib fast", "kqlib gauss-8", "kqlib fast 1-busy", "kqlib fast 1-busy all-threads",
                   "kqlib naive", "knowledge-neurons", "captum IG")
KN_INSTALL = "pip install --no-deps knowledge-neurons==0.0.2 einops"
CAPTUM_INSTALL = "pip install --no-deps captum==0.9.0"
REFERENCE_POINTS = 64  # Gauss-Legendre nodes of the reference integral (the "err vs integral" column)
# which kqlib scores a row's "max rel diff" / "top-5 agree" compare against: Captum is run with its
# Gauss-Legendre rule, so it is compared with kqlib's Gauss rule at the same number of points
COMPARED_WITH = {"captum IG": "kqlib gauss (same steps)"}

# 16 tokens with the word-level tokenizer below (punctuation is split off by the Whitespace pre-tokenizer).
GPT2_PROMPT = "The mother tongue of Jean Rouaud , who was born in Campbon in 1952 , is"
SMOLLM_PROMPT = "The native language of the writer Jean Rouaud is"
# a ParaRel-style prompt of ~16 tokens for the real models (P103, native language)
PARAREL_PROMPT = "Jean Rouaud, the French novelist who was born in Campbon in 1952, has the native language of"
# ~700 tokens: the memory case (the chunk budget must count the prompt length)
LONG_PROMPT = " ".join(["Jean Rouaud is a French writer born in Campbon, near Nantes, in 1952."] * 40) + \
    " The native language of Jean Rouaud is"


@dataclass(frozen=True)
class Case:
    """One benchmark case. ``kind``: "gpt2-random" (a GPT-2 built from ``config`` with random weights and a
    word-level tokenizer) or "embedded" (``kqlib.load(model)``). ``target``: the answer string, or None for
    the model's own top-1 next token."""

    name: str
    kind: str
    prompt: str
    site: str
    target: str | None = None
    model: str | None = None
    config: dict = field(default_factory=dict)
    seed: int = 0

    @property
    def supports_kn(self) -> bool:
        return self.kind == "gpt2-random" and self.site == "pre"


CASES = {
    "gpt2-random": Case("gpt2-random", "gpt2-random", GPT2_PROMPT, site="pre"),
    "smollm2-135m": Case("smollm2-135m", "embedded", PARAREL_PROMPT, site="post", target="French",
                         model="smollm2-135m"),
    "gemma3-270m": Case("gemma3-270m", "embedded", PARAREL_PROMPT, site="post", target="French",
                        model="gemma3-270m"),
    "smollm2-135m-700": Case("smollm2-135m-700", "embedded", LONG_PROMPT, site="post", target="French",
                             model="smollm2-135m"),
}
# the naive reference and the per-layer full-recompute tools would take hours on the 700-token prompt
SKIP = {("smollm2-135m-700", impl): "700-token prompt: fast path only (memory case)"
        for impl in IMPLEMENTATIONS if impl not in ("kqlib fast", "kqlib gauss-8")}

COLUMNS = ("case", "tokens", "implementation", "site", "steps", "s/query", "min-max s", "peak extra MiB",
           "max rel diff", "top-5 agree", "err vs integral", "kqlib fast x faster")
