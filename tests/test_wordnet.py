"""WordNet 3.0 from Debian's files for nltk, and the label levels cut from it for timm's ImageNet class lists.

Needs Debian's wordnet-base and wordnet-sense-index (skipped without them); no internet. Everything is installed
into a temporary nltk data root, never into the venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.format.hierarchy import Hierarchy, HierarchyError
from data_tools import wordnet_data, wordnet_tree
from data_tools.wordnet_tree import WnidError, build_hierarchy

pytestmark = pytest.mark.skipif(not (wordnet_data.SOURCE / "data.noun").is_file(),
                                reason="apt-get install wordnet-base wordnet-sense-index")

REPO = Path(__file__).resolve().parents[1]
TENCH = 1440764  # 'n01440764', class 0 of ImageNet-1k


def _timm_list(name: str) -> list[str]:
    import timm
    return (Path(timm.__file__).parent / "data" / "_info" / name).read_text().split()


def _report(capsys, msg: str) -> None:
    with capsys.disabled():
        print(f"\n[timing] {msg}", end="")


@pytest.fixture(scope="session")
def nltk_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nltk_data")


@pytest.fixture(scope="session")
def wn(nltk_root):
    return wordnet_data.wordnet(nltk_root)


@pytest.fixture(scope="session")
def in1k() -> list[str]:
    return _timm_list("imagenet_synsets.txt")


@pytest.fixture(scope="session")
def in21k() -> list[str]:
    return _timm_list("imagenet21k_goog_synsets.txt")


# installing the corpus

def test_install_loads_through_nltk(nltk_root, wn, capsys):
    import nltk

    target = wordnet_data.install(nltk_root)
    assert target == nltk_root / "corpora" / "wordnet"
    nltk.data.path.insert(0, str(nltk_root))
    try:
        assert Path(nltk.data.find("corpora/wordnet").path) == target
    finally:
        nltk.data.path.remove(str(nltk_root))
    t0 = time.perf_counter()
    tench = wn.synset_from_pos_and_offset("n", TENCH)
    assert tench.name() == "tench.n.01"
    assert tench.lexname() == "noun.animal"  # read through the lexnames file we wrote
    assert wn.get_version() == "3.0"
    assert wn.synsets("dog")[0].name() == "dog.n.01"  # index.noun
    assert wn.morphy("geese") == "goose"  # noun.exc
    assert wn.lemma_from_key("dog%1:05:00::").synset().name() == "dog.n.01"  # index.sense
    assert not list(target.parent.glob(".wordnet.*")), "temporary folders left beside the corpus"
    _report(capsys, f"lookups on a loaded reader {time.perf_counter() - t0:.3f} s")


def test_install_is_idempotent_and_repairs(tmp_path):
    target = wordnet_data.install(tmp_path)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in target.iterdir()}
    dir_ino = target.stat().st_ino
    t0 = time.perf_counter()
    assert wordnet_data.install(tmp_path) == target
    assert time.perf_counter() - t0 < 1.0
    assert target.stat().st_ino == dir_ino
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in target.iterdir()} == before

    # a damaged copy is rebuilt whole, by rename
    (target / "data.noun").write_text("truncated")
    (target / "lexnames").unlink()
    wordnet_data.install(tmp_path)
    assert (target / "data.noun").read_bytes() == (wordnet_data.SOURCE / "data.noun").read_bytes()
    assert (target / "lexnames").read_text() == wordnet_data.lexnames_table()
    assert sorted(p.name for p in tmp_path.joinpath("corpora").iterdir()) == ["wordnet"]


def test_lexnames_from_man_page_matches_fallback(tmp_path):
    table = wordnet_data.lexnames_table()
    rows = [line.split("\t") for line in table.splitlines()]
    assert len(rows) == 45 and [int(r[0]) for r in rows] == list(range(45))
    assert rows[3] == ["03", "noun.Tops", "1"] and rows[29] == ["29", "verb.body", "2"]
    assert wordnet_data.lexnames_table(tmp_path / "no-such-man-page.gz") == table


def test_missing_debian_files_name_the_packages(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(wordnet_data.WordNetDataError, match="wordnet-base wordnet-sense-index"):
        wordnet_data.install(tmp_path / "dest", source=tmp_path / "src")
    assert not (tmp_path / "dest" / "corpora" / "wordnet").exists()


def test_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "data_tools.wordnet_data", "--dest", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "corpora" / "wordnet" / "lexnames").is_file()


# the tree

def test_tree_follows_shortest_paths(wn, in1k):
    t = wordnet_tree.tree(wn)
    assert t.node(wordnet_tree.ROOT).title == "entity" and t.node(wordnet_tree.ROOT).depth == 0
    for w in in1k[::10]:
        s = wn.synset_from_pos_and_offset("n", int(w[1:]))
        node = t.node(int(w[1:]))
        parents = s.hypernyms() + s.instance_hypernyms()
        assert node.depth == s.min_depth()  # nltk's own shortest-path depth
        best = min((p.min_depth(), p.offset()) for p in parents)
        assert node.parent == best[1]
        assert t.path(node.offset)[-1] == wordnet_tree.ROOT and len(t.path(node.offset)) == node.depth + 1
    assert t.label(TENCH) == ("n01440764", "tench")


@pytest.mark.parametrize("cut,values", [("hops", [1, 2, 4, 8]), ("depth", [3, 6, 9, 12]),
                                        ("num_classes", [1, 10, 100, 500])])
@pytest.mark.parametrize("listing", ["in1k", "in21k"])
def test_cuts_build_valid_hierarchies(wn, listing, cut, values, request, capsys):
    wnids = request.getfixturevalue(listing)
    t0 = time.perf_counter()
    h = build_hierarchy(wnids, cut, values, wn=wn)  # the constructor checks nesting
    _report(capsys, f"{listing} ({len(wnids)} classes) {cut} {values}: {time.perf_counter() - t0:.2f} s "
                    f"-> {[lv.num_classes for lv in h.levels]}")
    prefix = {"hops": "hop", "depth": "depth", "num_classes": "n"}[cut]
    finest_first = sorted(values, reverse=cut != "hops")
    assert h.names == ["wnid"] + [f"{prefix}{v}" for v in finest_first]
    assert list(h.levels[0].classes) == wnids
    counts = [lv.num_classes for lv in h.levels]
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0]
    assert all(c.startswith("n") and len(c) == 9 for lv in h.levels for c in lv.classes)

    # each level is what its cut says, leaf by leaf
    t = wordnet_tree.tree(wn)
    for j in range(0, len(wnids), 37):
        off = int(wnids[j][1:])
        path = t.path(off)
        for v, lv in zip(finest_first, h.levels[1:]):
            got = int(lv.classes[lv.leaf_to_class[j]][1:])
            if cut == "hops":
                assert got == path[min(v, len(path) - 1)]
            elif cut == "depth":
                assert got == (off if t.node(off).depth < v else path[t.node(off).depth - v])
            else:
                assert got in path
    if cut == "hops":
        assert counts == sorted(set(counts), reverse=True), "coarse class counts must fall with k"
    if cut == "num_classes":
        assert all(c <= v for c, v in zip(counts[1:], finest_first))
        assert counts[-1] == 1 and h.levels[-1].classes == ("n00001740",)


def test_num_classes_at_or_above_the_leaf_count_keeps_the_leaves(wn, in1k):
    h = build_hierarchy(in1k, "num_classes", [len(in1k), 50], wn=wn)
    assert h.levels[1].classes == h.levels[0].classes


def test_listed_ancestors_stay_leaves(wn, in21k):
    # ImageNet-21k lists internal nodes; each stays its own leaf, and its descendants may sit under it
    t = wordnet_tree.tree(wn)
    listed = {int(w[1:]) for w in in21k}
    internal = sorted({a for o in listed for a in t.path(o)[1:]} & listed)
    assert internal, "expected ImageNet-21k to list ancestors of its own classes"
    h = build_hierarchy(in21k, "hops", [1], wn=wn)
    assert h.num_leaves == len(in21k)
    hop1 = h.level("hop1")
    x = internal[0]
    child = next(int(w[1:]) for w in in21k if t.node(int(w[1:])).parent == x)
    j_child, j_x = in21k.index(wordnet_tree.wnid(child)), in21k.index(wordnet_tree.wnid(x))
    assert hop1.classes[hop1.leaf_to_class[j_child]] == wordnet_tree.wnid(x)
    assert hop1.classes[hop1.leaf_to_class[j_x]] == wordnet_tree.wnid(t.node(x).parent)


def test_bad_wnids_are_refused_all_at_once(wn, in1k):
    bad = ["n01440765", "x1234", "n99999999", "n0144076"]  # no synset there, malformed, past the end, short
    with pytest.raises(WnidError) as e:
        build_hierarchy(in1k[:5] + bad + in1k[:1], "hops", [1], wn=wn)
    for w in bad + [in1k[0]]:  # in1k[0] is listed twice
        assert w in str(e.value)
    with pytest.raises(ValueError, match="unknown cut"):
        build_hierarchy(in1k, "levels", [1], wn=wn)
    with pytest.raises(ValueError, match=">= 1"):
        build_hierarchy(in1k, "hops", [0], wn=wn)
    with pytest.raises(ValueError, match="repeated"):
        build_hierarchy(in1k, "depth", [3, 3], wn=wn)
    with pytest.raises(HierarchyError):  # the model still guards what we hand it
        Hierarchy.from_leaf_paths(["wnid", "hop1"], [[("a", "a"), ("p", "p")], [("a", "a"), ("q", "q")]])


_DUMP = """
import json, sys
from data_tools import wordnet_data, wordnet_tree
wn = wordnet_data.wordnet(sys.argv[1])
wnids = sys.argv[2].split(",")
print(json.dumps({c: wordnet_tree.build_hierarchy(wnids, c, v, wn=wn).to_dict()
                  for c, v in [("hops", [1, 3]), ("depth", [4, 8]), ("num_classes", [300, 20])]}))
"""


def test_builds_are_deterministic(wn, nltk_root, in1k, capsys):
    # the same process, twice, and another process with another hash seed (set order must not leak)
    ours = {c: build_hierarchy(in1k, c, v, wn=wn).to_dict()
            for c, v in [("hops", [1, 3]), ("depth", [4, 8]), ("num_classes", [300, 20])]}
    assert ours == {c: build_hierarchy(in1k, c, v, wn=wn).to_dict()
                    for c, v in [("hops", [1, 3]), ("depth", [4, 8]), ("num_classes", [300, 20])]}
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", _DUMP, str(nltk_root), ",".join(in1k)],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ours
    _report(capsys, f"fresh process: import, load WordNet, 3 cuts of 1k: {time.perf_counter() - t0:.1f} s")
