"""Secrets never print: :func:`mask` is the one function every printer passes its output through.

``modelplex config show`` (text and ``--json``), ``modelplex providers``, error messages, the
messages of every ``modelplex*`` logger (:func:`install_log_masking`) and the server's ``/api``
answers all call :func:`mask` (directly, or through :func:`modelplex.errors.redact`, which is
``mask`` for a string). It masks by meaning:

* anything typed :class:`pydantic.SecretStr` or ``SecretBytes`` (any object with a
  ``get_secret_value`` method);
* every value of a headers table (a key named ``headers``, ``extra_headers``, ...):
  ``Authorization``, ``X-Api-Key`` and the rest are all shown as ``***``;
* the value of every key whose name means a credential (:func:`is_secret_name`: the name
  contains ``key``, ``token``, ``secret``, ``password``, ``auth``, ``credential``,
  ``cookie`` or ``signature``), except names that only describe one (``api_key_env`` names a
  variable, ``max_tokens`` counts, ``key_prefix``, ``token_ids``);
* in a list of strings (a command's ``args``), the value after a flag named like a credential
  (``--token VALUE``, ``--api-key=VALUE``);
* in every string: each URL's user name and password (``redis://:***@host``) and its
  secret-looking query values (``?key=***``, ``&sig=***``, by the same name rule), header
  lines (``Authorization: ***``), ``Bearer``/``Basic`` credentials, anything shaped like an
  API key (``sk-...``, ``hf_...``), and any extra secret the caller passes.

Masked values become :data:`MASK`; the structure, the key names and every other value are kept,
so what prints still shows what is configured.
"""

from __future__ import annotations

import logging
import re
import types
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MASK", "MIN_SECRET_LENGTH", "install_log_masking", "is_secret_name", "mask",
           "mask_url"]

#: What a masked value is shown as.
MASK = "***"

#: Extra secrets shorter than this are not masked: replacing a one-letter "key" everywhere
#: would mangle the text (and anything that short is no secret).
MIN_SECRET_LENGTH = 8

# -- names ------------------------------------------------------------------------------------
_ROOTS = ("key", "token", "secret", "passw", "pwd", "auth", "credential", "cookie",
          "signature", "passphrase", "bearer")
#: words that contain a root but name no credential
_NOT_SECRET_WORDS = frozenset({
    "tokens", "keyword", "keywords", "author", "authors", "authority", "keyboard", "monkey",
    "keypress", "keystroke", "turkey", "hotkey", "tokenizer", "tokenize", "tokenized",
    "detokenize", "tokenization", "pwds",
})
#: a word among these makes the whole name a description of a credential, not one
_DESCRIBING_WORDS = frozenset({
    "env", "envs", "var", "variable", "file", "path", "dir", "prefix", "suffix", "id", "ids",
    "type", "types", "source", "length", "len", "count", "max", "min", "limit", "version",
    "name", "names", "header", "needs", "uses", "has", "is", "sort", "required", "error",
    "done", "first", "eos", "bos", "pad", "unk", "sep", "cls", "stop", "special", "expires",
    "expiry", "ttl", "format", "text", "field", "location", "url",
})
_SECRET_SHORT_WORDS = frozenset({"sig", "pw", "pass", "apikey", "psk"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


def _words(name: str) -> list[str]:
    return [w for w in _WORD_SPLIT.split(_CAMEL.sub("_", name).lower()) if w]


def _secret_word(word: str) -> bool:
    if word in _SECRET_SHORT_WORDS:
        return True
    return word not in _NOT_SECRET_WORDS and any(root in word for root in _ROOTS)


def is_secret_name(name: str) -> bool:
    """Whether a key, header or query parameter named ``name`` holds a credential.

    ``api_key``, ``auth_token``, ``X-Api-Key``, ``Authorization``, ``password``,
    ``client_secret``, ``sig``, ``accessToken`` do; ``api_key_env`` (a variable's name),
    ``max_tokens``, ``key_prefix``, ``token_ids`` and ``time_to_first_token`` do not.
    """
    words = _words(str(name))
    if not any(_secret_word(w) for w in words):
        return False
    return not any(w in _DESCRIBING_WORDS for w in words)


def _names_variables(name: str) -> bool:
    """Whether ``name`` holds the names of environment variables (``api_key_env``,
    ``headers_env``), not values: more than one word, the last ``env``. (``env`` alone holds
    the values a server process gets, which may be secrets.)"""
    words = _words(str(name))
    return len(words) > 1 and words[-1] in ("env", "envs")


def _is_headers_name(name: str) -> bool:
    words = _words(str(name))
    return bool(words) and words[-1] == "headers"


# -- text -------------------------------------------------------------------------------------
_KEY_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{8,}"
    r"|(?i:bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,})"
)
# ``scheme://user:password@``
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#'\"<>]+@")
# ``?name=value`` / ``&name=value`` (the name is judged by is_secret_name)
_QUERY_PARAM = re.compile(r"([?&;])([^=&#\s'\"<>]+)=([^&#\s'\"<>]*)")
# credentials written as text: header lines (``Authorization: ...``, ``X-Api-Key: ...``),
# ``name=value`` settings and quoted names of JSON or a dict's repr (``"api_key": "..."``,
# ``'X-Api-Key': '...'``); a bare ``api_key: ...`` in prose is left alone (it is usually a
# message about the setting, not its value)
_SECRET_SETTING = (r"[a-z0-9_\-]*(?:api[-_]?key|access[-_]?token|auth[-_]?token|refresh[-_]?token"
                   r"|client[-_]?secret|secret[-_]?key|password|passwd)")
_HEADER_NAME = r"(?:proxy-)?authorization|x-[a-z0-9-]*(?:key|token|secret|auth)[a-z0-9-]*"
_VALUE = r"(?P<value>(?:(?:bearer|basic|token)\s+)?[^\s'\",;&}\]]+)"
_NAMED_VALUES = (
    re.compile(rf"(?i)(?P<lead>\b(?:{_HEADER_NAME})['\"]?\s*[:=]\s*['\"]?){_VALUE}"),
    re.compile(rf"(?i)(?P<lead>\b{_SECRET_SETTING}\s*=\s*['\"]?){_VALUE}"),
    re.compile(rf"(?i)(?P<lead>(?P<q>['\"]){_SECRET_SETTING}(?P=q)\s*:\s*['\"]?){_VALUE}"),
)


def _mask_query(match: re.Match[str]) -> str:
    lead, name, value = match.groups()
    if value and is_secret_name(name):
        return f"{lead}{name}={MASK}"
    return match.group(0)


def mask_url(url: str) -> str:
    """``url`` (or text holding URLs) with each user name, password and secret query value
    masked: ``redis://:pw@h/0?x=1&token=t`` -> ``redis://***@h/0?x=1&token=***``."""
    return _QUERY_PARAM.sub(_mask_query, _URL_USERINFO.sub(r"\1***@", url))


def _mask_named(match: re.Match[str]) -> str:
    return f"{match.group('lead')}{MASK}"


def _mask_text(text: str, secrets: tuple[str | None, ...]) -> str:
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, MASK)
    if "://" in text or "?" in text:
        text = mask_url(text)
    for pattern in _NAMED_VALUES:
        text = pattern.sub(_mask_named, text)
    return _KEY_SHAPES.sub(MASK, text)


# -- values -----------------------------------------------------------------------------------
def _is_secret_type(value: Any) -> bool:
    # pydantic's SecretStr/SecretBytes and look-alikes, without importing pydantic
    return callable(getattr(value, "get_secret_value", None))


def _secret_value(value: Any, secrets: tuple[str | None, ...]) -> Any:
    """A value kept under a credential's name: every string in it is masked (numbers and
    booleans are settings such as ``auth_retries = 3``, not credentials)."""
    if isinstance(value, str | bytes):
        return MASK if value else value
    if _is_secret_type(value):
        return MASK
    if isinstance(value, list | tuple | set | frozenset):
        return [_secret_value(v, secrets) if not isinstance(v, Mapping) else mask(v, *secrets)
                for v in value]
    return mask(value, *secrets)  # a table (``auth = { user = ..., password = ... }``)


def _headers(value: Any, secrets: tuple[str | None, ...]) -> Any:
    if isinstance(value, Mapping):
        return {k: (MASK if v not in (None, "") else v) for k, v in value.items()}
    if isinstance(value, list | tuple):  # [(name, value), ...]
        return [[item[0], MASK] if isinstance(item, list | tuple) and len(item) == 2
                else mask(item, *secrets) for item in value]
    return mask(value, *secrets)


_FLAG = re.compile(r"-{1,2}([A-Za-z][A-Za-z0-9_.-]*)(=.*)?", re.DOTALL)


def _mask_list(value: list[Any] | tuple[Any, ...], secrets: tuple[str | None, ...]) -> list[Any]:
    """A list with each item masked; in a command line (``args``) the value of a flag named
    like a credential is masked too: ``["--token", "t"]`` and ``["--token=t"]``."""
    out: list[Any] = []
    after_flag = False
    for item in value:
        flag = _FLAG.fullmatch(item) if isinstance(item, str) else None
        if after_flag and isinstance(item, str) and flag is None:
            out.append(MASK if item else item)
        elif flag is not None and flag.group(2) and is_secret_name(flag.group(1)):
            out.append(f"--{flag.group(1)}={MASK}" if item.startswith("--")
                       else f"-{flag.group(1)}={MASK}")
        else:
            out.append(mask(item, *secrets))
        after_flag = (flag is not None and flag.group(2) is None
                      and is_secret_name(flag.group(1)))
    return out


def mask(value: Any, *secrets: str | None) -> Any:
    """``value`` with every secret masked -- the one masking function of modelplex.

    ``value`` may be text (an error message, a log line, JSON already dumped), a URL, a
    mapping or list as read from the config file or sent as JSON, or a ``SecretStr``; the
    result has the same shape. ``secrets`` are extra strings to mask wherever they occur
    (those shorter than :data:`MIN_SECRET_LENGTH` are ignored). See the module docstring for
    what counts as a secret.
    """
    if isinstance(value, str):
        return _mask_text(value, secrets)
    if _is_secret_type(value):
        return MASK
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and _is_headers_name(key):
                out[key] = _headers(item, secrets)
            elif isinstance(key, str) and _names_variables(key):
                out[key] = item  # variables' names (``headers_env``), not their values
            elif isinstance(key, str) and is_secret_name(key):
                out[key] = _secret_value(item, secrets)
            else:
                out[key] = mask(item, *secrets)
        return out
    if isinstance(value, list | tuple):
        return _mask_list(value, secrets)
    if hasattr(value, "model_dump") and callable(value.model_dump):
        return mask(value.model_dump(mode="python"), *secrets)
    return value


# -- log records ------------------------------------------------------------------------------
_previous_factory: Callable[..., logging.LogRecord] | None = None


def _masking_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _previous_factory is not None
    record = _previous_factory(*args, **kwargs)
    if record.name.startswith("modelplex") and type(record).getMessage is not _masked_message:
        record.getMessage = types.MethodType(_masked_message, record)  # type: ignore[method-assign]
    return record


def _masked_message(record: logging.LogRecord) -> str:
    text: str = mask(logging.LogRecord.getMessage(record))
    return text


def install_log_masking() -> None:
    """Mask the message of every log record of a ``modelplex*`` logger (core and plugins)
    when it is formatted, whatever handler prints it. Installed when this module is imported
    (any modelplex feature imports it); installing twice does nothing."""
    global _previous_factory
    if _previous_factory is None:
        _previous_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_masking_factory)


install_log_masking()
