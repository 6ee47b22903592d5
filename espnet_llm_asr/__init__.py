"""espnet_llm_asr: LLM-based speech recognition on ESPnet.

Importing the package registers every component with ESPnet (see
:mod:`espnet_llm_asr.registry`); nothing here touches the network.
"""
__version__ = "0.1.0"

from espnet_llm_asr._compat import install_import_guards as _install_import_guards
from espnet_llm_asr.registry import register_all as _register_all

_install_import_guards()
_register_all()
