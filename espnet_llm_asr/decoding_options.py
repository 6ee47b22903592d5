"""The decoding options: their names, defaults, checks and help, defined once.

:class:`DecodingOptions` is what :meth:`espnet_llm_asr.model.LLMASRModel.generate`
takes (its keyword defaults are this class's), what
:class:`espnet_llm_asr.inference.Speech2Text` takes as keyword arguments (over
a run's recorded decoding config), and what ``bin/llm_asr_inference`` reads
from ``--config`` and its command line (:meth:`DecodingOptions.add_arguments`)
and prints with ``--print_config``.  A recorded decoding config
(``<exp_dir>/<inference_tag>/decode_config.yaml``, written by the recipe's
stage 12; a pack's ``decode.yaml``) is a YAML of ``option: value`` read by
:func:`read_decode_config`.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import yaml

from espnet_llm_asr.ctc_prefix_scoring import CTC_CHOICE_PROB, CTC_PRE_BEAM_ALL, PRE_BEAM_MIN, PRE_BEAM_RATIO
from espnet_llm_asr.decoding import CACHE_IMPLEMENTATIONS, check_cache_options

DECODING_GROUP = "decoding"
SPEED_GROUP = "speed (same hypotheses)"
_NONE_WORDS = ("null", "none", "")


class DecodingOptionError(ValueError):
    """A bad value of one decoding option: ``option`` (its name) and the message, which starts with it."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


# --------------------------------------------------------------- value readers
# Each reads one option's value, from Python / YAML or from a command-line
# string, and returns it normalised, or raises a ValueError saying why not.
def _cast(value: Any, kinds: Tuple[type, ...], cast: Callable[[Any], Any], what: str) -> Any:
    """``value`` as ``cast`` makes it, when it is one of ``kinds`` (not a bool) or a string that reads as one."""
    if isinstance(value, kinds) and not isinstance(value, bool):
        return cast(value)
    if isinstance(value, str):
        try:
            return cast(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected {what}, got {value!r}")


def _integer(value: Any) -> int:
    return _cast(value, (int,), int, "an integer")


def _number(value: Any) -> float:
    return _cast(value, (int, float), float, "a number")


def _at_least(minimum: int) -> Callable[[Any], int]:
    def read(value: Any) -> int:
        n = _integer(value)
        if n < minimum:
            raise ValueError(f"must be >= {minimum}, got {n}")
        return n
    return read


def _positive(value: Any) -> float:
    x = _number(value)
    if not x > 0:
        raise ValueError(f"must be > 0, got {x}")
    return x


def _unit_interval(value: Any) -> float:
    x = _number(value)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"must be in [0, 1], got {x}")
    return x


def _optional(read: Callable[[Any], Any], words: Tuple[str, ...] = _NONE_WORDS) -> Callable[[Any], Any]:
    def read_optional(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in words):
            return None
        return read(value)
    return read_optional


def _one_of(choices: Tuple[str, ...]) -> Callable[[Any], str]:
    def read(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {list(choices)}, got {value!r}")
        return value
    return read


def _auto_bool(value: Any) -> Optional[bool]:
    """None / ``auto`` -> None; True / False / ``true`` / ``false`` -> bool."""
    if value is None or isinstance(value, bool):
        return value
    table = {"auto": None, "null": None, "none": None, "true": True, "false": False}
    if isinstance(value, str) and value.strip().lower() in table:
        return table[value.strip().lower()]
    raise ValueError(f"expected auto, true or false, got {value!r}")


def _pre_beam(value: Any) -> Union[int, str, None]:
    """None / ``auto`` -> None (automatic); ``all``; or an integer >= 1."""
    if isinstance(value, str) and value.strip().lower() == CTC_PRE_BEAM_ALL:
        return CTC_PRE_BEAM_ALL
    return _optional(_at_least(1), _NONE_WORDS + ("auto",))(value)


def _option(default: Any, read: Callable[[Any], Any], help: str, group: str = DECODING_GROUP,
            metavar: Optional[str] = None):
    return dataclasses.field(default=default, metadata={"read": read, "help": help, "group": group,
                                                        "metavar": metavar})


@dataclasses.dataclass(frozen=True)
class DecodingOptions:
    """How :meth:`LLMASRModel.generate` decodes; each field's ``metadata["help"]`` says what it does.

    Values are checked and normalised when an instance is made (a
    :class:`DecodingOptionError` naming the option otherwise), so that
    strings from a command line or YAML (``"4"``, ``auto``, ``null``) are
    accepted where they mean a value of the option.
    """

    num_beams: int = _option(1, _at_least(1), "beams of the beam search; 1: greedy")
    max_new_tokens: int = _option(200, _at_least(1), "at most this many new tokens per utterance")
    max_tokens_per_second: Optional[float] = _option(
        None, _optional(_positive),
        "cap each utterance's new tokens at ceil(duration * this), at least min_new_tokens_cap "
        "(a runaway-loop guard); null: max_new_tokens only")
    min_new_tokens_cap: int = _option(8, _at_least(1), "the smallest cap that max_tokens_per_second gives")
    repetition_penalty: float = _option(
        1.0, _positive, "CTRL's penalty on the tokens an utterance has generated (a score divided by it if "
                        "positive, multiplied if negative); 1: none")
    no_repeat_ngram_size: int = _option(0, _at_least(0), "no n-gram of this size is generated twice; 0: off")
    length_penalty: float = _option(
        1.0, _number, "beam search: a hypothesis' score is its log-probability divided by length ** this")
    ctc_weight: float = _option(
        0.0, _unit_interval,
        "joint CTC / LLM decoding: weight of the CTC prefix score of the projected vectors read by the "
        "LLM's head (needs a model trained with model_conf.ctc_weight > 0); "
        "0: the LLM alone")
    ctc_pre_beam: Union[int, str, None] = _option(
        None, _pre_beam,
        "candidates per hypothesis and step that get the CTC score. null (auto): the LLM's "
        f"max({PRE_BEAM_RATIO:g} * num_beams, {PRE_BEAM_MIN}) best, the CTC's choices (each frame's "
        f"likeliest token but the blank, and any token with at least {CTC_CHOICE_PROB:.0%} in some frame of "
        "the utterance) and EOS: the cost does not grow with the vocabulary; an integer K: the LLM's K best only; all: every token of the vocabulary "
        "(slow for a large one)",
        metavar="{auto,all,K}")
    cache_implementation: str = _option(
        "dynamic", _one_of(CACHE_IMPLEMENTATIONS),
        "KV cache of the LLM: dynamic (grows each step) or static (allocated once)", group=SPEED_GROUP,
        metavar="{" + ",".join(CACHE_IMPLEMENTATIONS) + "}")
    compile_decoding: Optional[bool] = _option(
        None, _auto_bool, "torch.compile the decoding step (static cache only); null (auto): on a GPU, "
                          "not on CPU", group=SPEED_GROUP, metavar="{auto,true,false}")
    length_multiple: int = _option(
        1, _at_least(1), "round the prompt and the generated length up to a multiple of this (fewer shapes "
                         "for the static cache / compiled step); 1: no rounding", group=SPEED_GROUP)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            try:
                value = f.metadata["read"](getattr(self, f.name))
            except ValueError as e:
                raise DecodingOptionError(f.name, f"{f.name}: {e}") from None
            object.__setattr__(self, f.name, value)
        try:
            check_cache_options(self.cache_implementation, self.compile_decoding)
        except ValueError as e:
            raise DecodingOptionError("compile_decoding", str(e)) from None

    # ------------------------------------------------------------ building
    @classmethod
    def names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def check_names(cls, names, where: str) -> None:
        """A TypeError naming ``where`` when ``names`` holds anything but decoding options."""
        unknown = sorted(set(names) - set(cls.names()))
        if unknown:
            raise TypeError(f"{where}: unknown decoding option(s) {unknown}; the options are {list(cls.names())}")

    def replace(self, **overrides) -> "DecodingOptions":
        """These options with ``overrides`` (decoding options by name) instead, checked again."""
        self.check_names(overrides, "DecodingOptions.replace")
        return dataclasses.replace(self, **overrides) if overrides else self

    @classmethod
    def from_mapping(cls, conf: Any, source: str) -> "DecodingOptions":
        """Options from a YAML's mapping (the others at their defaults); a ValueError naming ``source``
        (a file) for anything that is not a known option with a valid value."""
        if not isinstance(conf, Mapping):
            raise ValueError(f"{source}: expected 'option: value' lines, got {type(conf).__name__}")
        unknown = sorted(set(conf) - set(cls.names()))
        if unknown:
            raise ValueError(f"{source}: unknown decoding option(s) {unknown}; the options are {list(cls.names())}")
        try:
            return cls(**conf)
        except DecodingOptionError as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "DecodingOptions":
        return cls(**{name: getattr(args, name) for name in cls.names()})

    # ------------------------------------------------------------ writing
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """Every option, one ``option: value`` line each, in the declared order (what --print_config prints)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, default_flow_style=False)

    # ------------------------------------------------------------ command line
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> Dict[str, Any]:
        """One ``--<option>`` per field (its default, help and reader), in the argument groups
        :data:`DECODING_GROUP` and :data:`SPEED_GROUP`; returns the groups by title."""
        groups: Dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            title = f.metadata["group"]
            if title not in groups:
                groups[title] = parser.add_argument_group(title)
            metavar = f.metadata["metavar"]
            shown = f.default if f.default is not None else "auto" if metavar and "auto" in metavar else "null"
            groups[title].add_argument(f"--{f.name}", default=f.default, type=_command_line(f.metadata["read"]),
                                       metavar=metavar,
                                       help=f"{f.metadata['help']} (default: {shown})".replace("%", "%%"))
        return groups


def _command_line(read: Callable[[Any], Any]) -> Callable[[str], Any]:
    """An argparse ``type``: ``read`` with its ValueError as argparse's own error."""
    def parse(text: str) -> Any:
        try:
            return read(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def with_option_keywords(func):
    """Show the decoding options (keyword-only, with their defaults) in the signature of ``func``,
    which takes them as ``**options``: for ``help()`` and :func:`inspect.signature`."""
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
               for f in dataclasses.fields(DecodingOptions)]
    func.__signature__ = sig.replace(parameters=params)
    return func


def read_decode_config(path: Union[str, Path]) -> Dict[str, Any]:
    """The options a decoding YAML sets (``option: value``; comments such as stage 12's first line
    ignored), checked and normalised; a ValueError naming the file otherwise."""
    path = Path(path)
    try:
        conf = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not a YAML of decoding options ({e})") from None
    conf = {} if conf is None else conf
    options = DecodingOptions.from_mapping(conf, source=str(path))
    return {name: getattr(options, name) for name in conf}
