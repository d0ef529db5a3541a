"""Builds nltk's WordNet 3.0 corpus from Debian's files, with no internet.

ImageNet wnids are WordNet 3.0 noun offsets, and `nltk.download('wordnet')` needs the network. Debian ships the
same database (`apt-get install wordnet-base wordnet-sense-index`, under /usr/share/wordnet); nltk 3.10 refuses
paths outside its data folders and symlinks that leave them, so the files are copied into
`<dest>/corpora/wordnet/`. nltk also needs `lexnames`, which Debian does not ship: it is parsed from the table in
Debian's man page lexnames(5WN), with the same 45 names embedded as a fallback for images that strip man pages.

    python -m data_tools.wordnet_data [--dest DIR]     # default DIR: <sys.prefix>/nltk_data, which nltk searches

`install` is idempotent (a second call compares sizes and modification times, and returns) and atomic (built in a
temporary folder beside the target, then renamed into place). `wordnet()` returns a reader on the installed copy,
installing it first, so callers never meet nltk's LookupError (and skipping nltk's needless 3.0 -> 3.0 sense map,
which halves the load time).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

SOURCE = Path("/usr/share/wordnet")  # Debian's WordNet 3.0 database
LEXNAMES_MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
APT_PACKAGES = ("wordnet-base", "wordnet-sense-index")
DEFAULT_DEST = Path(sys.prefix) / "nltk_data"
CORPUS = Path("corpora") / "wordnet"  # where nltk looks under a data root

# what nltk 3.10's WordNetCorpusReader._FILES opens, less `lexnames`, which we write
FILES = (
    "cntlist.rev", "index.sense",
    "index.adj", "index.adv", "index.noun", "index.verb",
    "data.adj", "data.adv", "data.noun", "data.verb",
    "adj.exc", "adv.exc", "noun.exc", "verb.exc",
)
# wn.license() reads LICENSE; Debian's copyright file holds Princeton's licence text
OPTIONAL = {"LICENSE": Path("/usr/share/doc/wordnet-base/copyright")}

# lexicographer file names, numbered 00..44, as in lexnames(5WN); used only when the man page is missing
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation "
    "noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception "
    "verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}  # lexnames(5WN), "Syntactic Category"


class WordNetDataError(RuntimeError):
    """The Debian WordNet files are missing or the installed copy is unusable."""


def lexnames_table(man_page: Path = LEXNAMES_MAN) -> str:
    """The `lexnames` file: 45 lines `NN<TAB>name<TAB>pos-number`, parsed from the man page when it is there."""
    names = list(_LEXNAMES)
    if man_page.is_file():
        # table rows look like "05\tnoun.animal\tnouns denoting animals" (some names carry trailing blanks)
        rows = re.findall(r"^(\d\d)\t\s*([a-z]+\.[A-Za-z]+)\s*\t", gzip.decompress(man_page.read_bytes()).decode(),
                          flags=re.M)
        parsed = [name for _, name in rows]
        if [int(n) for n, _ in rows] != list(range(len(rows))) or parsed != names:
            raise WordNetDataError(f"{man_page}: unexpected lexicographer-file table ({len(rows)} rows); "
                                   f"expected the 45 names of WordNet 3.0")
        names = parsed
    return "".join(f"{i:02d}\t{name}\t{_POS_NUMBER[name.split('.')[0]]}\n" for i, name in enumerate(names))


def _check_source(source: Path) -> None:
    missing = [f for f in FILES if not (source / f).is_file()]
    if missing:
        raise WordNetDataError(
            f"WordNet 3.0 files missing from {source}: {', '.join(missing)}. Install Debian's packages: "
            f"apt-get install {' '.join(APT_PACKAGES)}")


def _wanted(source: Path, man_page: Path) -> dict[str, Path | bytes]:
    """Every file of the corpus: a source path to copy, or bytes to write."""
    want: dict[str, Path | bytes] = {f: source / f for f in FILES}
    want.update({name: p for name, p in OPTIONAL.items() if p.is_file()})
    want["lexnames"] = lexnames_table(man_page).encode()
    return want


def _up_to_date(target: Path, want: dict[str, Path | bytes]) -> bool:
    # sizes plus modification times (copy2 keeps them) are enough to see a stale or partial copy
    for name, src in want.items():
        dst = target / name
        try:
            st = dst.stat()
        except OSError:
            return False
        if isinstance(src, bytes):
            if dst.read_bytes() != src:
                return False
        else:
            s = src.stat()
            if st.st_size != s.st_size or int(st.st_mtime) != int(s.st_mtime):
                return False
    return True


def install(dest: str | os.PathLike = DEFAULT_DEST, source: str | os.PathLike = SOURCE,
            man_page: str | os.PathLike = LEXNAMES_MAN) -> Path:
    """Copies WordNet 3.0 into `dest/corpora/wordnet/` and returns that folder; does nothing if it is current."""
    dest, source, man_page = Path(dest).expanduser().absolute(), Path(source), Path(man_page)
    target = dest / CORPUS
    _check_source(source)
    want = _wanted(source, man_page)
    if _up_to_date(target, want):
        return target

    # build beside the target, then rename it in; a stale copy is moved aside first and removed after
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".wordnet.tmp-", dir=target.parent))
    old = None
    try:
        for name, src in want.items():
            if isinstance(src, bytes):
                (tmp / name).write_bytes(src)
            else:
                shutil.copy2(src, tmp / name)
            os.chmod(tmp / name, 0o644)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; other accounts may read the corpus
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=".wordnet.old-", dir=target.parent))
            os.replace(target, old / "wordnet")
        try:
            os.replace(tmp, target)
        except OSError:
            # another process renamed its own complete copy in between; keep it if it is current
            if not _up_to_date(target, want):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


@functools.lru_cache(maxsize=None)
def _reader(root: str):
    import nltk
    from nltk.corpus.reader import CorpusReader, WordNetCorpusReader
    from nltk.corpus.util import LazyCorpusLoader

    class WordNet30Reader(WordNetCorpusReader):
        # nltk's constructor calls map_wn(), which compares get_version() ("3.0") with the corpus name
        # ("wordnet"), finds them unequal and builds a 3.0 -> 3.0 sense map by reading index.sense twice: about
        # 6 of 11 s measured here. This corpus is 3.0, the version OMW data is keyed on, so the map is the
        # identity, which nltk writes as None (see its lemma lookup: `if self.map30:`).
        def map_wn(self, version="wordnet"):
            if version in ("wordnet", "3.0"):
                return None
            return super().map_wn(version)

    data_root = str(Path(root).parent.parent)
    if data_root not in nltk.data.path:
        nltk.data.path.append(data_root)  # nltk only opens files under its data roots
    # the same (lazy, optional) multilingual reader nltk.corpus.wordnet is given, so no warning is raised
    omw = LazyCorpusLoader("omw-2.0", CorpusReader, r".*/wn-data-.*\.tab", encoding="utf8")
    wn = WordNet30Reader(nltk.data.FileSystemPathPointer(root), omw)
    if wn.get_version() != "3.0":
        raise WordNetDataError(f"{root} holds WordNet {wn.get_version()}, not 3.0 (ImageNet wnids are 3.0 offsets)")
    return wn


def wordnet(dest: str | os.PathLike = DEFAULT_DEST):
    """nltk's WordNet 3.0 reader on `dest/corpora/wordnet`, installed first if missing or stale; one per process."""
    return _reader(str(install(dest)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_tools.wordnet_data", description=__doc__.split("\n")[0])
    ap.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"nltk data root (default {DEFAULT_DEST})")
    ap.add_argument("--source", type=Path, default=SOURCE,
                    help=f"folder with WordNet 3.0's data.*/index.* files (default {SOURCE}, Debian's wordnet-base; "
                         "elsewhere the dict/ folder of the WordNet 3.0 tarball)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        target = install(args.dest, source=args.source)
    except WordNetDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"WordNet 3.0 for nltk at {target} ({time.perf_counter() - t0:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
