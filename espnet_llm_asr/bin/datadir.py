"""Data-dir operations of the recipe stages (see espnet_llm_asr.datadir).

    python -m espnet_llm_asr.bin.datadir format --src data/train --dst dump/raw/train [--fix_data true]
    python -m espnet_llm_asr.bin.datadir filter --dir dump/raw/train --min_duration 0.1 --max_duration 60
    python -m espnet_llm_asr.bin.datadir speed_perturb --src data/train --dst data/train_sp --factors "0.9 1.0 1.1"
    python -m espnet_llm_asr.bin.datadir shapes --dir dump/raw/train --out_dir exp/stats/train --llm LLM_DIR
    python -m espnet_llm_asr.bin.datadir signature FILE_OR_DIR...
    python -m espnet_llm_asr.bin.datadir split_keys --key_file dump/raw/test/wav.scp --nj 4 --out_dir DIR
    python -m espnet_llm_asr.bin.datadir encoder_conf --config conf/train_smear_moe.yaml
"""
import argparse
import logging
import sys
from pathlib import Path

import yaml

from espnet2.utils.types import str2bool

from espnet_llm_asr import datadir


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("format", help="validate and convert audio to 16 kHz mono")
    f.add_argument("--src", required=True)
    f.add_argument("--dst", required=True)
    f.add_argument("--nj", type=int, default=1)
    f.add_argument("--fix_data", type=str2bool, default=False, help="drop bad utterances instead of stopping")
    f = sub.add_parser("filter", help="drop too short/long utterances and empty transcripts")
    f.add_argument("--dir", required=True)
    f.add_argument("--min_duration", type=float, default=0.1)
    f.add_argument("--max_duration", type=float, default=60.0)
    f = sub.add_parser("speed_perturb")
    f.add_argument("--src", required=True)
    f.add_argument("--dst", required=True)
    f.add_argument("--factors", required=True, help='e.g. "0.9 1.0 1.1"')
    f.add_argument("--nj", type=int, default=1)
    f = sub.add_parser("shapes", help="speech_shape and text_shape (LLM tokens)")
    f.add_argument("--dir", required=True)
    f.add_argument("--out_dir", required=True)
    f.add_argument("--llm", required=True, help="dir of the LLM whose tokenizer counts the tokens")
    f.add_argument("--feats_shape", default=None, help="feats_shape of dumped encoder features")
    f = sub.add_parser("signature", help="hash of files/dirs (recipe stage skipping)")
    f.add_argument("paths", nargs="*")
    f = sub.add_parser("split_keys")
    f.add_argument("--key_file", required=True)
    f.add_argument("--nj", type=int, required=True)
    f.add_argument("--out_dir", required=True)
    f = sub.add_parser("encoder_conf", help="the training config's frontend_conf.encoder_conf as flow yaml "
                       "(the recipe's default for stage 9 and 11)")
    f.add_argument("--config", required=True)
    return p


#: encoder options of a config without frontend_conf.encoder_conf
DEFAULT_ENCODER_CONF = {"pad_to_30s": False}


def config_encoder_conf(config: str) -> str:
    """``frontend_conf.encoder_conf`` of the training yaml ``config`` as one line of flow
    yaml (``{pad_to_30s: true}``), or :data:`DEFAULT_ENCODER_CONF` when it names none."""
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"training config {config} does not exist")
    try:
        conf = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{config}: not valid yaml: {e}") from e
    frontend_conf = (conf.get("frontend_conf") or {}) if isinstance(conf, dict) else {}
    enc = frontend_conf.get("encoder_conf") if isinstance(frontend_conf, dict) else None
    if enc is None:
        enc = DEFAULT_ENCODER_CONF
    if not isinstance(enc, dict):
        raise ValueError(f"{config}: frontend_conf.encoder_conf must be a mapping, got {enc!r}")
    return yaml.safe_dump(enc, default_flow_style=True, width=10**6).strip()


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        if args.command == "format":
            datadir.format_data_dir(args.src, args.dst, args.nj, args.fix_data)
        elif args.command == "filter":
            datadir.filter_data_dir(args.dir, args.min_duration, args.max_duration)
        elif args.command == "speed_perturb":
            datadir.speed_perturb(args.src, args.dst, [float(x) for x in args.factors.split()], args.nj)
        elif args.command == "shapes":
            datadir.write_shapes(args.dir, args.out_dir, args.llm, args.feats_shape)
        elif args.command == "signature":
            print(datadir.signature(args.paths))
        elif args.command == "split_keys":
            datadir.split_keys(args.key_file, args.nj, args.out_dir)
        elif args.command == "encoder_conf":
            print(config_encoder_conf(args.config))
    except (ValueError, FileNotFoundError) as e:
        logging.error(str(e))
        sys.exit(1)


if __name__ == "__main__":
    main()
