"""`builtin:tiny-lm`: a tiny language model built from a config and trained for seconds, no downloads.

The text is a small grammar ("the cat sat on the mat today", ...) whose choices are random, so
it has a known floor of uncertainty: a model that learned it spreads its next-token probability
over the choices a sentence allows, and held-out sentences of the same grammar measure that
(perplexity, agreement). The bundled files `tiny_train.txt` and `tiny_heldout.txt` are
`grammar_text(400, seed=0)` and `grammar_text(80, seed=1)`; a word-level tokenizer is built from
the grammar's words. The model is a Qwen2 decoder (2 layers, 64 wide) trained on the train text.
"""

from __future__ import annotations

import logging
import random
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)

SUBJECTS = ("the cat", "the dog", "a bird", "the child", "a robot")
VERBS = ("sat on", "ran to", "looked at", "slept near")
OBJECTS = ("the mat", "the park", "a board", "the door")
ENDINGS = ("today", "again", "at night", "")
UNKNOWN, END = "<unk>", "<eos>"  # the special tokens: unknown word, end of text
TRAIN_FILE = "tiny_train.txt"
HELDOUT_FILE = "tiny_heldout.txt"
# the bundled texts as data specs a recipe can name from anywhere (the recipe loader resolves them)
BUILTIN_TEXTS = {"builtin:tiny-lm:train": TRAIN_FILE, "builtin:tiny-lm:heldout": HELDOUT_FILE}
DEFAULT_STEPS = 80


def grammar_text(count: int, seed: int) -> list[str]:
    """`count` sentences of the grammar, the same for a seed."""
    rng = random.Random(seed)
    return [" ".join(part for part in (rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS),
                                       rng.choice(ENDINGS)) if part) for _ in range(count)]


def bundled_text(name: str = TRAIN_FILE) -> Path:
    """The path of a bundled text file (tiny_train.txt or tiny_heldout.txt)."""
    return Path(str(resources.files("toolkit.lm").joinpath(name)))


def save_tokenizer(folder: Path) -> None:
    """A word-level tokenizer over the grammar's words, saved as tokenizer.json (+ config)."""
    from toolkit.common.quiet import quiet

    with quiet():
        import transformers
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    words = sorted({word for phrase in SUBJECTS + VERBS + OBJECTS + ENDINGS for word in phrase.split()})
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNKNOWN))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(words, trainers.WordLevelTrainer(special_tokens=[UNKNOWN, END]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token=UNKNOWN, eos_token=END)
    fast.save_pretrained(folder)


def build_tiny_lm(folder, *, steps: int = DEFAULT_STEPS, seed: int = 0, layers: int = 2, text=None) -> Path:
    """A Qwen2 decoder trained `steps` Adam steps on `text` (default: the bundled train text), saved
    with its tokenizer as a Hugging Face folder. The records run on one into the next, as validation and
    distillation read a text file, so the model learns where a sentence ends from the next one's start."""
    import torch

    from toolkit.common.quiet import quiet
    from toolkit.lm.validate import read_texts

    with quiet():
        import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_tokenizer(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    records = read_texts(text or bundled_text())
    eos = tokenizer.eos_token_id
    stream = torch.tensor([token for line in records for token in tokenizer(line)["input_ids"]])
    windows = stream[: len(stream) // 64 * 64].reshape(-1, 64)  # the whole context, as validation reads it
    config = transformers.Qwen2Config(vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      eos_token_id=eos, tie_word_embeddings=False, architectures=["Qwen2ForCausalLM"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide model: more threads only contend
    try:
        torch.manual_seed(seed)
        model = transformers.Qwen2ForCausalLM(config)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        generator = torch.Generator().manual_seed(seed)
        model.train()
        for step in range(steps):
            batch = windows[torch.randint(len(windows), (8,), generator=generator)]
            loss = model(input_ids=batch, labels=batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if (step + 1) % 20 == 0:
                logger.info("tiny-lm step %d/%d: loss %.4f", step + 1, steps, loss.item())
    finally:
        torch.set_num_threads(threads)
    model.eval().save_pretrained(str(folder), safe_serialization=True)
    return folder


BUILTIN_SPEC = "builtin:tiny-lm"


def tiny_lm_folder() -> Path:
    """`builtin:tiny-lm` as a Hugging Face folder: built once per package version in the cache folder
    (atomically: a run that stops half-way leaves nothing a later run would take for the model)."""
    from toolkit import __version__
    from toolkit.artifacts import staged_folder
    from toolkit.paths import cache_dir

    folder = cache_dir() / "builtin" / f"tiny-lm-{__version__}"
    if not (folder / "model.safetensors").is_file():
        logger.info("building %s (a few seconds, once) in %s", BUILTIN_SPEC, folder)
        with staged_folder(folder, force=True) as stage:
            build_tiny_lm(stage)
    return folder


def language_model_folder(spec) -> Path | None:
    """The Hugging Face causal-LM folder a spec names (`builtin:tiny-lm` or such a folder), else None."""
    from toolkit.lm.folder import is_causal_lm

    if str(spec) == BUILTIN_SPEC:
        return tiny_lm_folder()
    return Path(spec) if is_causal_lm(spec) else None
