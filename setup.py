"""espnet_llm_asr: an ESPnet plugin and recipe toolkit for LLM-based ASR."""
from setuptools import find_packages, setup

install_requires = [
    # We register components into espnet2's ClassChoices and subclass its
    # AbsTask/AbsESPnetModel/Trainer internals, which change between releases:
    # pin the release we test against (the newest PyPI serves).
    "espnet==202511",
    "torch",
    # espnet2.tasks.* imports torchaudio without declaring it.
    "torchaudio",
    "transformers",
    "sentencepiece",
    "kaldiio",
    "soundfile",
    "jiwer",
    "pyyaml",
    "tqdm",
    "matplotlib",
]

extras_require = {
    "test": ["pytest", "peft"],  # peft: the LoRA path is tested too
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
