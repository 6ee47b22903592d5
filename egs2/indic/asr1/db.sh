# Corpus locations for the real-data preparers in local/ (see local/data.sh).
# The embedded default (synthetic espeak-ng corpus) needs none of them.
KATHBATH="${KATHBATH:-}"          # Kathbath root (contains <lang>/{train,valid,test_known,...})
INDICVOICES="${INDICVOICES:-}"    # IndicVoices root
FLEURS="${FLEURS:-}"              # FLEURS root (contains <lang>_in/{audio,*.tsv})
COMMONVOICE="${COMMONVOICE:-}"    # Common Voice root (contains <lang>/{clips,*.tsv})
