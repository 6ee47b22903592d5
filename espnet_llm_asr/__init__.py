"""espnet_llm_asr: LLM-based speech recognition on ESPnet.

Importing the package checks that torch and torchaudio are a matching pair
(:mod:`espnet_llm_asr.versions`) and registers every component with ESPnet
(see :mod:`espnet_llm_asr.registry`); nothing here touches the network.
"""
__version__ = "0.1.0"

from espnet_llm_asr.versions import check_dependency_versions as _check_dependency_versions

_check_dependency_versions()

from espnet_llm_asr._compat import install_import_guards as _install_import_guards  # noqa: E402
from espnet_llm_asr.registry import register_all as _register_all  # noqa: E402

_install_import_guards()
_register_all()
