"""Language names and codes, one rule for every transport: a code of Whisper's table in any case (``EN``), or its
English name (``english``, as OpenAI reports it); ``auto`` or nothing means detect (or the model's only language).
"""

from __future__ import annotations

# Whisper's languages, ISO-639-1 code (plus haw, yue) -> the lower-case English name OpenAI reports.
_LANGUAGE_TABLE = (
    "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese "
    "pt:portuguese tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian id:indonesian "
    "hi:hindi fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay cs:czech ro:romanian "
    "da:danish hu:hungarian ta:tamil no:norwegian th:thai ur:urdu hr:croatian bg:bulgarian lt:lithuanian "
    "la:latin mi:maori ml:malayalam cy:welsh sk:slovak te:telugu fa:persian lv:latvian bn:bengali "
    "sr:serbian az:azerbaijani sl:slovenian kn:kannada et:estonian mk:macedonian br:breton eu:basque "
    "is:icelandic hy:armenian ne:nepali mn:mongolian bs:bosnian kk:kazakh sq:albanian sw:swahili "
    "gl:galician mr:marathi pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba so:somali af:afrikaans "
    "oc:occitan ka:georgian be:belarusian tg:tajik sd:sindhi gu:gujarati am:amharic yi:yiddish lo:lao "
    "uz:uzbek fo:faroese ht:haitian_creole ps:pashto tk:turkmen nn:nynorsk mt:maltese sa:sanskrit "
    "lb:luxembourgish my:myanmar bo:tibetan tl:tagalog mg:malagasy as:assamese tt:tatar haw:hawaiian "
    "ln:lingala ha:hausa ba:bashkir jw:javanese su:sundanese yue:cantonese"
)
LANGUAGE_NAMES: dict[str, str] = {
    code: name.replace("_", " ") for code, name in (pair.split(":") for pair in _LANGUAGE_TABLE.split())
}

_BY_NAME = {name: code for code, name in LANGUAGE_NAMES.items()}


def language_code(value: str | None) -> str | None:
    """The Whisper code for ``value``; None for absent/``auto``. Raises ``ValueError`` for an unknown language."""
    if value is None or value.strip().lower() in ("", "auto"):
        return None
    key = value.strip().lower()
    code = key if key in LANGUAGE_NAMES else _BY_NAME.get(key)
    if code is None:
        raise ValueError(value)
    return code
