"""espnet_llm_asr: an ESPnet plugin and recipe toolkit for LLM-based ASR."""
from setuptools import find_packages, setup

# Ranges for installing into an environment of your own; tools/install.sh
# installs the exact versions of tools/requirements.lock instead.  Upper
# bounds are where we know of breakage.
install_requires = [
    # We register components into espnet2's ClassChoices and subclass its
    # AbsTask/AbsESPnetModel/Trainer internals, which change between releases:
    # pin the release we test against (the newest PyPI serves).
    "espnet==202511",
    # torch and torchaudio must share their minor version (torchaudio's C++
    # library is built for one torch; `import espnet_llm_asr` checks it).
    # PyPI has no torchaudio 2.12+, so torch stays below 2.12.
    # >=2.5: torch.serialization.safe_globals (checkpoint resume).
    "torch>=2.5,<2.12",
    # espnet2.tasks.* imports torchaudio without declaring it.
    "torchaudio>=2.5,<2.12",
    # >=5: the code is written against transformers 5 (WhisperEncoder,
    # tokenizer and generate APIs).
    "transformers>=5.0,<6",
    "sentencepiece",
    "kaldiio>=2.17",
    "soundfile>=0.12",
    "jiwer>=3.0",
    "pyyaml>=5.1",
    "tqdm",
    "matplotlib>=3.5",
]

extras_require = {
    # peft: the LoRA path is tested too; packaging: the lock/setup.py check
    "test": ["pytest", "peft", "packaging"],
    "lora": ["peft"],
}

setup(
    name="espnet_llm_asr",
    version="0.1.0",
    description="Multilingual LLM-based ASR on ESPnet: SMEAR-MoE and CIF projectors",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["espnet_llm_asr", "espnet_llm_asr.*"]),
    python_requires=">=3.9",
    install_requires=install_requires,
    extras_require=extras_require,
    license="Apache-2.0",
)
