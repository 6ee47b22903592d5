"""The tiny LLM's tokenizer: sentencepiece trained on the corpus text, wrapped as a
``tokenizers`` fast tokenizer (offline ``AutoTokenizer``, ``decode(encode(t)) == t``)."""
from __future__ import annotations

import io
import logging
import string
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

from espnet_llm_asr.tiny_models.common import PathLike, atomic_dir, read_lines

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")  # ids 0..3 in every tokenizer built here
# Characters every tiny tokenizer can encode, whatever the training text: the
# LLM prompt ("USER: Transcribe speech to text.\n ASSISTANT:") and language
# names are ASCII.
REQUIRED_CHARS = string.ascii_letters + string.digits + string.punctuation + "\n"


def prompt_after_speech() -> str:
    """The default prompt's text after the speech slot (no language instruction)."""
    from espnet_llm_asr.llm import DEFAULT_PROMPT, SPEECH_PLACEHOLDER

    return DEFAULT_PROMPT.split(SPEECH_PLACEHOLDER, 1)[1].replace("{lang_instruction}", "")


def prompt_text_lines() -> List[str]:
    """The text of the default LLM prompt without its placeholders, one line per prompt line.

    ``["USER: Transcribe speech to text.", " ASSISTANT:"]``: added to a tiny
    tokenizer's training text so the prompt becomes a few whole-word tokens.
    """
    from espnet_llm_asr.llm import DEFAULT_PROMPT

    text = DEFAULT_PROMPT.replace("{speech}", "").replace("{lang_instruction}", "")
    return [line for line in text.split("\n") if line.strip()]


def _spm_train(lines: List[str], model_type: str, vocab_size: Optional[int]):
    """Train sentencepiece in memory (deterministic: one thread); returns a SentencePieceProcessor."""
    import sentencepiece as spm

    if model_type not in ("char", "unigram", "bpe"):
        raise ValueError(f"train_tokenizer: model_type must be char, unigram or bpe, got {model_type!r}")
    if vocab_size is None:
        if model_type == "char":  # every character + the word boundary + specials
            vocab_size = len(set("".join(lines)) - {" "}) + 1 + len(SPECIAL_TOKENS)
        else:
            vocab_size = 500
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type=model_type, vocab_size=vocab_size,
        hard_vocab_limit=False,  # "at most vocab_size": tiny corpora have fewer pieces
        character_coverage=1.0, normalization_rule_name="identity",  # no NFKC: decode gives back the input
        remove_extra_whitespaces=False, split_digits=True, byte_fallback=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3,
        unk_piece=SPECIAL_TOKENS[0], bos_piece=SPECIAL_TOKENS[1], eos_piece=SPECIAL_TOKENS[2],
        pad_piece=SPECIAL_TOKENS[3], minloglevel=2, num_threads=1,
        max_sentence_length=1 << 16,
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def _bpe_merges(vocab: Dict[str, int]) -> List[Tuple[str, str]]:
    """Merges for a sentencepiece BPE vocab: every split of a piece into two pieces, by piece rank."""
    merges = []
    for piece, rank in vocab.items():
        for i in range(1, len(piece)):
            left, right = piece[:i], piece[i:]
            if left in vocab and right in vocab:
                merges.append((rank, vocab[left], vocab[right], left, right))
    return [(left, right) for *_, left, right in sorted(merges)]


def train_tokenizer(
    text_file_or_lines: Union[PathLike, Iterable[str]],
    out_dir: PathLike,
    vocab_size: Optional[int] = None,
    model_type: str = "char",
    required_chars: str = REQUIRED_CHARS,
) -> Path:
    """Train sentencepiece and save it as a Hugging Face fast tokenizer in ``out_dir``.

    Args:
        text_file_or_lines: plain text file (one sentence a line) or lines.
        out_dir: output dir (tokenizer.json + tokenizer_config.json).
        vocab_size: at most this many pieces; ``None``: every character for
            ``char``, 500 for ``unigram`` / ``bpe``.
        model_type: ``char`` | ``unigram`` | ``bpe``.
        required_chars: characters added as pieces when the text lacks them
            (default: printable ASCII and newline, for the LLM prompt).

    Specials: ``<unk>``=0, ``<s>``=1 (BOS, added by ``add_special_tokens``),
    ``</s>``=2 (EOS), ``<pad>``=3.  Text is not normalised and spaces are
    sentencepiece's ``▁``, so ``decode(encode(s)) == s`` for any string of
    known characters without leading whitespace.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    lines = read_lines(text_file_or_lines)
    if not lines:
        raise ValueError("train_tokenizer: no non-empty training lines")
    sp = _spm_train(lines, model_type, vocab_size)
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    if [p for p, _ in pieces[: len(SPECIAL_TOKENS)]] != list(SPECIAL_TOKENS):
        raise RuntimeError(f"train_tokenizer: unexpected sentencepiece specials {pieces[:4]}")
    known = {p for p, _ in pieces}
    low = min(s for _, s in pieces) - 10.0
    pieces += [(c, low) for c in required_chars if c not in known and c != " "]

    if model_type == "bpe":
        vocab = {p: i for i, (p, _) in enumerate(pieces)}
        model = models.BPE(vocab=vocab, merges=_bpe_merges(vocab), unk_token=SPECIAL_TOKENS[0], fuse_unk=True)
    else:  # char and unigram: Viterbi over the sentencepiece scores
        model = models.Unigram(pieces, unk_id=0, byte_fallback=False)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        clean_up_tokenization_spaces=False,
    )
    with atomic_dir(out_dir) as tmp:
        hf.save_pretrained(tmp)
    logger.info("%s tokenizer in %s: %d tokens (%d added required characters)",
                model_type, out_dir, len(hf), len(pieces) - sp.get_piece_size())
    return Path(out_dir)
