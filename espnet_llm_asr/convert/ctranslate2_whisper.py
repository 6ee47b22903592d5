"""CTranslate2 Whisper (``model.bin``) -> a Hugging Face Whisper checkpoint dir.

CTranslate2's ``model.bin`` (binary version 6, as written by
``ctranslate2.specs.ModelSpec``; every integer little-endian, unpadded):

    uint32  binary version                 (6)
    string  spec name                      ("WhisperSpec")
    uint32  spec revision                  (3 for Whisper)
    uint32  number of variables V
    V times:
        string  name                       ("encoder/layer_0/ffn/linear_0/weight")
        uint8   rank R
        R x uint32  shape                  (rank 0: a scalar)
        uint8   dtype id                   0 float32, 1 int8, 2 int16, 3 int32,
                                           4 float16, 5 bfloat16
        uint32  number of bytes N
        N bytes row-major data
    uint32  number of aliases A
    A times: string alias, string target   (the alias is the same tensor as
                                           the target, e.g. the decoder's
                                           output projection -> its embeddings)

    string = uint16 length L (including a final NUL), then L bytes, the last one NUL.

Quantized weights come with a ``<name>_scale`` variable: int8 per output row
(``q = rint(w * scale)``, scale = 127 / max|w| of the row, conv weights
flattened to 2-D for it), int16 one scalar; :func:`dequantize` undoes them.

The Whisper spec's variables and the Hugging Face ``WhisperForConditionalGeneration``
parameters they become (``{i}`` a layer index; a fused attention projection
is split in rows into q / k / v, in that order; Whisper's ``k_proj`` has no
bias, so CTranslate2 stores zeros for it and they are checked and dropped):

    encoder/conv1/{weight,bias}                       model.encoder.conv1.*        (d, n_mels, 3)
    encoder/conv2/{weight,bias}                       model.encoder.conv2.*        (d, d, 3)
    encoder/position_encodings/encodings              model.encoder.embed_positions.weight (1500, d)
    encoder/layer_norm/{gamma,beta}                   model.encoder.layer_norm.{weight,bias}
    encoder/layer_{i}/self_attention/linear_0         layers.{i}.self_attn.{q,k,v}_proj  (3d, d)
    encoder/layer_{i}/self_attention/linear_1         layers.{i}.self_attn.out_proj
    encoder/layer_{i}/self_attention/layer_norm       layers.{i}.self_attn_layer_norm
    encoder/layer_{i}/ffn/linear_0, linear_1          layers.{i}.fc1, fc2          (ffn, d), (d, ffn)
    encoder/layer_{i}/ffn/layer_norm                  layers.{i}.final_layer_norm
    decoder/embeddings/weight                         model.decoder.embed_tokens.weight (vocab, d)
    decoder/position_encodings/encodings              model.decoder.embed_positions.weight (448, d)
    decoder/layer_norm                                model.decoder.layer_norm
    decoder/layer_{i}/self_attention/...              as in the encoder
    decoder/layer_{i}/attention/linear_0              layers.{i}.encoder_attn.q_proj      (d, d)
    decoder/layer_{i}/attention/linear_1              layers.{i}.encoder_attn.{k,v}_proj  (2d, d)
    decoder/layer_{i}/attention/linear_2              layers.{i}.encoder_attn.out_proj
    decoder/layer_{i}/attention/layer_norm            layers.{i}.encoder_attn_layer_norm
    decoder/projection/weight (alias of embeddings)   proj_out.weight (tied)

Scalars of the spec (``*/num_heads``, ``decoder/activation``, ...) are
options of the runtime, not weights; the head counts go into the config.
Everything else must be consumed: an unknown or missing variable is an error.
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

SUPPORTED_BINARY_VERSION = 6
_DTYPE_IDS = {
    0: torch.float32,
    1: torch.int8,
    2: torch.int16,
    3: torch.int32,
    4: torch.float16,
    5: torch.bfloat16,
}


class CT2FormatError(ValueError):
    """A ``model.bin`` that is truncated, of another version or not a Whisper spec."""


@dataclass
class CT2Model:
    """The content of a CTranslate2 ``model.bin``.

    Attributes:
        source: where it was read from (for messages).
        binary_version: the format version (6).
        spec_name: e.g. ``"WhisperSpec"``.
        spec_revision: revision of that spec.
        variables: name -> tensor in its stored dtype and shape (scalars are 0-d);
            aliases are resolved (the alias maps to the target's tensor).
        aliases: alias name -> target name.
    """

    source: str
    binary_version: int
    spec_name: str
    spec_revision: int
    variables: Dict[str, torch.Tensor]
    aliases: Dict[str, str] = field(default_factory=dict)

    def scalar(self, name: str) -> int:
        """The value of a 0-d integer variable, e.g. ``encoder/num_heads``."""
        if name not in self.variables:
            raise KeyError(f"{self.source}: no variable {name!r}")
        return int(self.variables[name].item())


# ------------------------------------------------------------------ reading
class _Cursor:
    """Sequential little-endian reads from a bytes-like buffer, with errors naming the source."""

    def __init__(self, buf: Union[bytes, bytearray, memoryview], source: str):
        self.buf = memoryview(buf)
        self.pos = 0
        self.source = source

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.buf):
            raise CT2FormatError(
                f"{self.source}: truncated while reading {what} "
                f"(needs {n} bytes at offset {self.pos}, file has {len(self.buf)})"
            )
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint(self, fmt: str, what: str) -> int:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size, what))[0]

    def string(self, what: str) -> str:
        n = self.uint("H", f"the length of {what}")
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self.source}: {what} at offset {self.pos - n} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


def parse_model_bin(buf: Union[bytes, bytearray, memoryview], source: str = "model.bin") -> CT2Model:
    """Parse the bytes of a CTranslate2 ``model.bin`` (layout in the module docstring).

    The returned tensors own copies of their data (``buf`` may be freed).

    Raises:
        CT2FormatError: another binary version, an unknown dtype id, a size
            that does not match the shape, truncated data or trailing bytes.
    """
    cur = _Cursor(buf, source)
    version = cur.uint("I", "the binary version")
    if version != SUPPORTED_BINARY_VERSION:
        raise CT2FormatError(
            f"{source}: CTranslate2 binary version {version}; this reader knows version "
            f"{SUPPORTED_BINARY_VERSION} (the one ctranslate2 4.x writes)"
        )
    spec_name = cur.string("the spec name")
    revision = cur.uint("I", "the spec revision")
    count = cur.uint("I", "the number of variables")
    variables: Dict[str, torch.Tensor] = {}
    for index in range(count):
        name = cur.string(f"the name of variable #{index}")
        rank = cur.uint("B", f"the rank of {name}")
        shape = [cur.uint("I", f"the shape of {name}") for _ in range(rank)]
        type_id = cur.uint("B", f"the dtype of {name}")
        if type_id not in _DTYPE_IDS:
            raise CT2FormatError(f"{source}: variable {name} has unknown dtype id {type_id}")
        dtype = _DTYPE_IDS[type_id]
        nbytes = cur.uint("I", f"the byte count of {name}")
        numel = 1
        for dim in shape:
            numel *= dim
        itemsize = torch.empty((), dtype=dtype).element_size()
        if nbytes != numel * itemsize:
            raise CT2FormatError(
                f"{source}: variable {name} of shape {shape} and dtype {dtype} should have "
                f"{numel * itemsize} bytes, the file says {nbytes}"
            )
        data = cur.take(nbytes, f"the data of {name}")
        if numel == 0:
            tensor = torch.empty(shape, dtype=dtype)
        else:
            tensor = torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)
        variables[name] = tensor
    aliases: Dict[str, str] = {}
    n_aliases = cur.uint("I", "the number of aliases")
    for index in range(n_aliases):
        alias = cur.string(f"alias #{index}")
        target = cur.string(f"the target of alias {alias}")
        if target not in variables:
            raise CT2FormatError(f"{source}: alias {alias} points to unknown variable {target}")
        aliases[alias] = target
        variables[alias] = variables[target]
    if cur.pos != len(cur.buf):
        raise CT2FormatError(f"{source}: {len(cur.buf) - cur.pos} unexpected bytes after the aliases")
    return CT2Model(source, version, spec_name, revision, variables, aliases)


def join_parts(parts: Sequence[Union[str, Path]]) -> bytes:
    """The bytes of ``model.bin`` split over ``parts`` (concatenated in the given order).

    Raises:
        FileNotFoundError: naming the first missing part.
    """
    chunks = []
    for part in parts:
        part = Path(part)
        if not part.is_file():
            raise FileNotFoundError(f"CTranslate2 model part {str(part)!r} does not exist")
        chunks.append(part.read_bytes())
    return b"".join(chunks)


def sha256_hex(data: Union[bytes, bytearray, memoryview]) -> str:
    """sha256 of a bytes-like object, hex."""
    return hashlib.sha256(data).hexdigest()


def read_model_bin(parts: Sequence[Union[str, Path]], expected_sha256: Optional[str] = None) -> CT2Model:
    """Read a ``model.bin`` given as one file or as parts to concatenate.

    Args:
        parts: ``[model.bin]`` or ``[model.bin.part1, model.bin.part2, ...]``.
        expected_sha256: when given, the sha256 of the joined bytes must equal it.

    Raises:
        FileNotFoundError: a part is missing.
        ValueError: the sha256 differs (names the parts and both digests).
        CT2FormatError: the content is not a readable model.bin.
    """
    data = join_parts(parts)
    source = " + ".join(str(p) for p in parts)
    if expected_sha256 is not None:
        got = sha256_hex(data)
        if got != expected_sha256:
            raise ValueError(f"sha256 of {source} is {got}, expected {expected_sha256}: "
                             "the model files are not the ones this converter was checked with")
    return parse_model_bin(data, source)


# ------------------------------------------------------------------ tensors
def dequantize(model: CT2Model, name: str) -> torch.Tensor:
    """Variable ``name`` as float32, undoing int8 / int16 quantization with ``<name>_scale``.

    int8: one scale per output row (dim 0), ``w = q / scale``; int16: one
    scalar scale. float16 / bfloat16 / float32 are cast exactly.
    """
    if name not in model.variables:
        raise KeyError(f"{model.source}: no variable {name!r}")
    value = model.variables[name]
    if value.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return value.to(torch.float32)
    scale_name = name + "_scale"
    if value.dtype in (torch.int8, torch.int16) and scale_name in model.variables:
        scale = model.variables[scale_name].to(torch.float32)
        if value.dtype == torch.int8:
            shape = (-1,) + (1,) * (value.dim() - 1)
            return value.to(torch.float32) / scale.reshape(shape)
        return value.to(torch.float32) / scale
    raise CT2FormatError(f"{model.source}: variable {name} has dtype {value.dtype} and no {scale_name}")


_SCALAR_OPTION = re.compile(r"^(encoder|decoder)/[a-z_]+$")
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


def _count_layers(model: CT2Model, side: str) -> int:
    found = {int(m.group(2)) for name in model.variables if (m := _LAYER.match(name)) and m.group(1) == side}
    if not found or found != set(range(max(found) + 1)):
        raise CT2FormatError(f"{model.source}: {side} layers {sorted(found)} are not 0..N-1")
    return max(found) + 1


def whisper_state_dict(model: CT2Model) -> Tuple[Dict[str, torch.Tensor], Dict[str, int]]:
    """Map a CTranslate2 Whisper spec to ``WhisperForConditionalGeneration`` tensors (float32).

    Returns:
        state: HF parameter name -> float32 tensor (mapping in the module docstring;
            ``proj_out.weight`` included, equal to the decoder embeddings).
        dims: ``d_model``, ``encoder_layers``, ``decoder_layers``,
            ``encoder_attention_heads``, ``decoder_attention_heads``,
            ``encoder_ffn_dim``, ``decoder_ffn_dim``, ``num_mel_bins``,
            ``vocab_size``, ``max_source_positions``, ``max_target_positions``.

    Raises:
        CT2FormatError: not a Whisper spec, a fused k bias that is not zero,
            or a variable that nothing maps (names it).
    """
    if model.spec_name != "WhisperSpec":
        raise CT2FormatError(f"{model.source}: spec {model.spec_name!r} is not a WhisperSpec")
    used = set()

    def get(name: str) -> torch.Tensor:
        used.add(name)
        if name + "_scale" in model.variables:
            used.add(name + "_scale")
        return dequantize(model, name)

    state: Dict[str, torch.Tensor] = {}

    def linear(ct2: str, hf: str) -> None:
        state[f"{hf}.weight"] = get(f"{ct2}/weight")
        state[f"{hf}.bias"] = get(f"{ct2}/bias")

    def norm(ct2: str, hf: str) -> None:
        state[f"{hf}.weight"] = get(f"{ct2}/gamma")
        state[f"{hf}.bias"] = get(f"{ct2}/beta")

    def split_linear(ct2: str, hf_prefix: str, names: List[str]) -> None:
        """A fused projection (k*d, d) -> k Linear layers of (d, d); a zero bias for k_proj is dropped."""
        weight, bias = get(f"{ct2}/weight"), get(f"{ct2}/bias")
        if weight.shape[0] % len(names) or bias.shape[0] != weight.shape[0]:
            raise CT2FormatError(f"{model.source}: {ct2} of shape {tuple(weight.shape)} "
                                 f"cannot be split into {names}")
        for w, b, proj in zip(weight.chunk(len(names)), bias.chunk(len(names)), names):
            state[f"{hf_prefix}.{proj}.weight"] = w.contiguous()
            if proj == "k_proj":
                if torch.count_nonzero(b):
                    raise CT2FormatError(f"{model.source}: {ct2}/bias has a non-zero key bias; "
                                         "Whisper's k_proj has none")
            else:
                state[f"{hf_prefix}.{proj}.bias"] = b.contiguous()

    dims = {}
    for side in ("encoder", "decoder"):
        n_layers = _count_layers(model, side)
        dims[f"{side}_layers"] = n_layers
        dims[f"{side}_attention_heads"] = model.scalar(f"{side}/num_heads")
        used.add(f"{side}/num_heads")
        base = f"model.{side}"
        state[f"{base}.embed_positions.weight"] = get(f"{side}/position_encodings/encodings")
        norm(f"{side}/layer_norm", f"{base}.layer_norm")
        for i in range(n_layers):
            ct2, hf = f"{side}/layer_{i}", f"{base}.layers.{i}"
            split_linear(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ["q_proj", "k_proj", "v_proj"])
            linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
            norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            if side == "decoder":
                linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
                split_linear(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ["k_proj", "v_proj"])
                linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
                norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
            linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
            norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
        dims[f"{side}_ffn_dim"] = state[f"{base}.layers.0.fc1.weight"].shape[0]
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    state["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    if "decoder/projection/weight" in model.variables:
        projection = get("decoder/projection/weight")
        if not torch.equal(projection, state["model.decoder.embed_tokens.weight"]):
            raise CT2FormatError(f"{model.source}: decoder/projection/weight differs from the embeddings; "
                                 "Hugging Face Whisper ties them")
    if "decoder/projection/bias" in model.variables:
        if torch.count_nonzero(get("decoder/projection/bias")):
            raise CT2FormatError(f"{model.source}: decoder/projection/bias is not zero; HF Whisper has none")
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]

    leftover = sorted(n for n in model.variables
                      if n not in used and not _SCALAR_OPTION.match(n) and model.variables[n].dim() > 0)
    if leftover:
        raise CT2FormatError(f"{model.source}: variables with no Hugging Face counterpart: {leftover[:8]}")

    conv1 = state["model.encoder.conv1.weight"]  # (d, n_mels, 3)
    dims.update(
        d_model=conv1.shape[0],
        num_mel_bins=conv1.shape[1],
        vocab_size=state["model.decoder.embed_tokens.weight"].shape[0],
        max_source_positions=state["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=state["model.decoder.embed_positions.weight"].shape[0],
    )
    return state, dims


# ------------------------------------------------------------------ HF dir
def _generation_config(ct2_config: dict, tokenizer, dims: Dict[str, int]):
    """A ``GenerationConfig`` for Whisper from CTranslate2's ``config.json`` and the tokenizer."""
    from transformers import GenerationConfig

    vocab = tokenizer.get_vocab()

    def tid(token: str) -> int:
        if token not in vocab:
            raise KeyError(f"Whisper tokenizer has no token {token!r}")
        return int(vocab[token])

    lang_to_id = {tokenizer.convert_ids_to_tokens(i): int(i) for i in ct2_config.get("lang_ids", [])}
    eot = tid("<|endoftext|>")
    return GenerationConfig(
        decoder_start_token_id=tid("<|startoftranscript|>"),
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=dims["max_target_positions"],
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])],
        lang_to_id=lang_to_id,
        task_to_id={"transcribe": tid("<|transcribe|>"), "translate": tid("<|translate|>")},
        no_timestamps_token_id=tid("<|notimestamps|>"),
        prev_sot_token_id=tid("<|startofprev|>"),
        is_multilingual=bool(lang_to_id),
    )


def convert_ctranslate2_whisper(
    model_parts: Sequence[Union[str, Path]],
    config_json: Union[str, Path],
    tokenizer_json: Union[str, Path],
    out_dir: Union[str, Path],
    expected_sha256: Optional[Dict[str, str]] = None,
) -> Path:
    """Write a Hugging Face Whisper dir (model, feature extractor, tokenizer) from a CTranslate2 Whisper.

    Args:
        model_parts: the ``model.bin`` file, or its parts in order.
        config_json: CTranslate2's ``config.json`` (suppress ids, language ids, alignment heads).
        tokenizer_json: the Hugging Face ``tokenizer.json`` shipped with the model.
        out_dir: the directory to write (created; files in it are overwritten).
        expected_sha256: optional ``{"model.bin": ..., "config.json": ..., "tokenizer.json": ...}``
            digests to check before anything is converted.

    The weights are saved as float32 (``model.safetensors``): the CTranslate2
    float16 values are represented exactly, so the HF model computes with
    the very weights CTranslate2 uses. The tied ``proj_out`` is not stored twice.

    Returns:
        ``Path(out_dir)``.
    """
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    expected_sha256 = expected_sha256 or {}
    for key, path in (("config.json", config_json), ("tokenizer.json", tokenizer_json)):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"CTranslate2 Whisper file {str(path)!r} does not exist")
        if key in expected_sha256 and sha256_hex(path.read_bytes()) != expected_sha256[key]:
            raise ValueError(f"sha256 of {path} is {sha256_hex(path.read_bytes())}, "
                             f"expected {expected_sha256[key]}")
    ct2 = read_model_bin(model_parts, expected_sha256.get("model.bin"))
    state, dims = whisper_state_dict(ct2)
    ct2_config = json.loads(Path(config_json).read_text())

    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tokenizer_json))
    tokenizer.model_max_length = dims["max_target_positions"]
    if len(tokenizer) > dims["vocab_size"]:
        raise ValueError(f"{tokenizer_json}: {len(tokenizer)} tokens but the model has "
                         f"{dims['vocab_size']} embeddings")
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=dims["vocab_size"],
        num_mel_bins=dims["num_mel_bins"],
        d_model=dims["d_model"],
        encoder_layers=dims["encoder_layers"],
        decoder_layers=dims["decoder_layers"],
        encoder_attention_heads=dims["encoder_attention_heads"],
        decoder_attention_heads=dims["decoder_attention_heads"],
        encoder_ffn_dim=dims["encoder_ffn_dim"],
        decoder_ffn_dim=dims["decoder_ffn_dim"],
        max_source_positions=dims["max_source_positions"],
        max_target_positions=dims["max_target_positions"],
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        # as in OpenAI's checkpoints (WhisperConfig's default begin list is the English-only one)
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing = sorted(set(model.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise CT2FormatError(f"{ct2.source}: conversion left HF tensors missing {missing[:5]} "
                             f"/ unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.generation_config = _generation_config(ct2_config, tokenizer, dims)
    model.eval()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    WhisperFeatureExtractor(feature_size=dims["num_mel_bins"]).save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
