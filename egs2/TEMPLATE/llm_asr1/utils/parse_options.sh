#!/usr/bin/env bash
# Option parsing for recipe scripts, in the manner of Kaldi's parse_options.sh.
# Source it after defining defaults:   foo=1; . utils/parse_options.sh
# then `--foo 2` or `--foo=2` sets foo=2.  Only options with a default may be
# given; underscores and dashes in names are equivalent.  `--help` prints the
# script's leading comment block ($help_message if set).
while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            if [ -n "${help_message:-}" ]; then echo "${help_message}"; else sed -n '2,/^[^#]/p' "$0" | sed 's/^# \{0,1\}//' | sed '$d'; fi
            exit 0 ;;
        --*=*)
            __name="${1%%=*}"; __name="${__name#--}"; __name="${__name//-/_}"; __value="${1#*=}"; shift ;;
        --*)
            __name="${1#--}"; __name="${__name//-/_}"
            if [ $# -lt 2 ]; then echo "$0: option --${__name} needs a value" >&2; exit 1; fi
            __value="$2"; shift 2 ;;
        *) break ;;
    esac
    if ! declare -p "${__name}" >/dev/null 2>&1; then
        echo "$0: unknown option --${__name}" >&2
        exit 1
    fi
    printf -v "${__name}" '%s' "${__value}"
done
unset __name __value
true
