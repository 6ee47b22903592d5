"""Train an LLM-ASR model with ESPnet's trainer.

    python -m espnet_llm_asr.bin.llm_asr_train --config conf/train.yaml \\
        --train_data_path_and_name_and_type dump/raw/train/wav.scp,speech,sound \\
        --train_data_path_and_name_and_type dump/raw/train/text,text,text \\
        --train_data_path_and_name_and_type dump/raw/train/utt2lang,lang,text \\
        --valid_data_path_and_name_and_type ... --train_shape_file ... --output_dir exp/asr

Every ESPnet trainer option works (``--ngpu``, ``--resume``, ``--max_epoch``,
``--num_iters_per_epoch``, ``--keep_nbest_models``, ``--use_amp``,
``--multiprocessing_distributed``, ``--dist_*``); run
``--print_config`` for the full list.  Multi-GPU / multi-node runs go through
``espnet2.bin.launch`` or torchrun, as with any ESPnet task.
"""
from typing import List, Optional

import espnet_llm_asr  # noqa: F401  (registers the components with ESPnet)
from espnet_llm_asr.task import LLMASRTask


def get_parser():
    return LLMASRTask.get_parser()


def main(cmd: Optional[List[str]] = None):
    LLMASRTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
