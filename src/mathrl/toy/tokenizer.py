"""The embedded tokenizer: byte-level BPE built in-process, wrapped as a transformers fast tokenizer.

It mirrors the Qwen2/Qwen3 tokenizer's behaviour at toy scale: the same pre-tokenizer regex
(so every digit is its own token, as in Qwen), byte-level fallback (any text encodes), ChatML
special tokens, ``<think>``/``</think>`` as single non-special tokens (they survive
``skip_special_tokens=True``, as in Qwen3), and a Qwen-style chat template with
``{% generation %}`` markers so ``return_assistant_tokens_mask=True`` yields assistant masks.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Qwen2's pre-tokenizer pattern (tokenizer.json of any Qwen2/2.5/3 model): note `\p{N}` alone,
# which isolates single digits.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
THINK_TOKENS = [THINK_OPEN, THINK_CLOSE]

# Qwen-style ChatML. The assistant's content and its <|im_end|> sit inside the generation
# block: training masks then cover exactly what the model must learn to emit, stop token
# included. `enable_thinking=false` pre-fills an empty thinking block, as Qwen3's template does.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

# Common LaTeX and math words, so real benchmark text (MATH, AIME, GSM8K) also gets merges and
# does not fall back to one token per byte.
MATH_VOCABULARY_TEXT = " ".join([
    r"\frac{1}{2} \dfrac \tfrac \sqrt{2} \boxed{} \cdot \times \div \pi \theta \alpha \beta",
    r"\left( \right) \le \ge \leq \geq \neq \infty \sum_{i=1}^{n} \prod \int \log \sin \cos \tan",
    r"\text{ } \mathrm \mathbf \overline \angle \triangle \circ ^\circ \pm \ldots \dots \cdots",
    r"\begin{pmatrix} \end{pmatrix} \begin{align*} \end{align*} \in \cup \cap \mid \pmod",
    "Find the value of the If what is Let be such that How many positive integers real number",
    "solution answer equation integer prime remainder probability triangle circle square area",
    "perimeter radius sum product difference quotient each total number of dollars percent",
    "Please reason step by step, and put your final answer within",
])


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` on ``corpus`` and wrap it for transformers.

    ``corpus`` should look like what the model will read (problems, traces, the system prompt);
    :data:`MATH_VOCABULARY_TEXT` is always added to it.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS + THINK_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_with_math_text(corpus), trainer=trainer)
    # Already in the vocabulary (ids 0-4); this marks how each is matched and decoded.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


def _with_math_text(corpus: Iterable[str]) -> Iterable[str]:
    # Repeated so its pieces pass the trainer's min_frequency; role names so ChatML headers
    # (``<|im_start|>assistant``) are one token each, as in Qwen.
    for _ in range(8):
        yield MATH_VOCABULARY_TEXT
        yield "system\nuser\nassistant\n"
    yield from corpus
