"""Tiny randomly initialised models, one per architecture family, with a word-level tokenizer.

Built from a config inside the tests: no weights, no network. ``tiny_lm("llama")`` -> kqlib.LM.
"""

from __future__ import annotations

import functools

import torch

WORDS = (
    "the capital of france is paris berlin rome london germany italy england spain madrid language "
    "native mother tongue french german english italian spanish speaks born in city country a an "
    "and was who which holds position mayor shah plays guitar piano jazz sky yellow apples grow under "
    "ground birds live sea . , ' s"
).split()


@functools.lru_cache(maxsize=None)
def word_tokenizer(bos: bool = False):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", "<bos>", "<eos>"] + sorted(set(WORDS)))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )


def _configs(vocab: int) -> dict:
    from transformers import (
        Gemma2Config,
        Gemma3TextConfig,
        GemmaConfig,
        GPT2Config,
        GPTJConfig,
        GPTNeoConfig,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        OPTConfig,
        Qwen2Config,
        Qwen3Config,
    )

    common_llama = dict(
        vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.2,
    )
    return {
        "gpt2": GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4, n_inner=48, n_positions=128,
                           initializer_range=0.2),
        "gpt_neo": GPTNeoConfig(vocab_size=vocab, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=48,
                                attention_types=[[["global", "local"], 1], [["global"], 1]], window_size=4,
                                max_position_embeddings=128, initializer_range=0.2),
        "gptj": GPTJConfig(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4, n_inner=48, rotary_dim=4,
                           n_positions=128, initializer_range=0.2),
        "gpt_neox": GPTNeoXConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=128, rotary_pct=0.5,
                                  initializer_range=0.2),
        "opt": OPTConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, ffn_dim=48,
                         max_position_embeddings=128, word_embed_proj_dim=32, init_std=0.2),
        "llama": LlamaConfig(**common_llama),
        "mistral": MistralConfig(**common_llama, sliding_window=4),
        "qwen2": Qwen2Config(**common_llama),
        "qwen3": Qwen3Config(**common_llama, head_dim=8),
        "gemma": GemmaConfig(**common_llama, head_dim=8),
        "gemma2": Gemma2Config(**common_llama, head_dim=8, sliding_window=4, final_logit_softcapping=30.0,
                               attn_logit_softcapping=50.0),
        "gemma3_text": Gemma3TextConfig(**common_llama, head_dim=8, sliding_window=4,
                                        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                                        final_logit_softcapping=30.0),
    }


FAMILY_MODEL_TYPES = tuple(_configs(8).keys())


def tiny_lm(model_type: str = "llama", seed: int = 0, dtype=torch.float32):
    """A kqlib.LM around a freshly initialised tiny model of ``model_type`` (see FAMILY_MODEL_TYPES)."""
    from transformers import AutoModelForCausalLM

    import kqlib

    tok = word_tokenizer(bos=model_type.startswith("gemma"))
    cfg = _configs(len(tok))[model_type]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").to(dtype)
    return kqlib.LM.wrap(model, tok, name=f"tiny-{model_type}")
