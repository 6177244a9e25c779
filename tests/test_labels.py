"""Genre labels made canonical: folding, splitting, aliases, roll-up on beets' real genre tree
and on a user's own tree file, display spellings."""

from __future__ import annotations

import importlib.util

import pytest

from tagger import labels
from tagger.labels import GenreTree, Vocabulary, fold, load_tree, split_values, tree_from_data


@pytest.fixture(scope="module")
def beets_tree() -> GenreTree:
    """beets (a dependency of genreml) ships the tree: its absence is a failure, not a skip."""
    return load_tree()


# --- fold -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["Hip-Hop", "hip hop", "Hip_Hop", "  HIP \t- hop ",
                                      "Ｈｉｐ－Ｈｏｐ", "hip\u2011hop"])
def test_fold_makes_case_spacing_hyphens_and_width_alike(spelling):
    assert fold(spelling) == "hip hop"


def test_fold_casefolds_beyond_lowercase_and_keeps_distinct_genres_apart():
    assert fold("STRASSE Punk") == fold("Straße punk")
    assert fold("hiphop") != fold("hip hop")  # words run together are another label: aliases
    assert fold("Rock & Roll") != fold("Rock Roll")


# --- split_values ------------------------------------------------------------------------------

def test_split_only_on_the_users_separators():
    assert split_values("Rock; Pop", [";"]) == ["Rock", "Pop"]
    assert split_values("Rock/Pop", [";"]) == ["Rock/Pop"]
    assert split_values("Rock/Pop", [";", "/"]) == ["Rock", "Pop"]
    assert split_values("AC/DC; Pop", [";"]) == ["AC/DC", "Pop"]
    assert split_values("  Rock  ", []) == ["Rock"]


def test_split_trims_drops_empties_and_keeps_the_first_spelling_of_each_genre():
    assert split_values(" Pop ;; rock;Hip-Hop ; ;POP; hip hop;Rock", [";"]) == \
        ["Pop", "rock", "Hip-Hop"]
    assert split_values(" ; ", [";"]) == []


def test_split_on_several_character_separators_longest_first():
    assert split_values("Drum/Bass // Jazz", [" // "]) == ["Drum/Bass", "Jazz"]
    # "feat." before "feat": the shorter first would leave a label ". Pop"
    assert split_values("Rock feat. Pop", ["feat", "feat."]) == ["Rock", "Pop"]


def test_split_refuses_an_empty_separator():
    with pytest.raises(ValueError, match="empty"):
        split_values("Rock", [";", ""])


# --- beets' tree --------------------------------------------------------------------------------

def test_beets_tree_paths_are_its_real_branches(beets_tree):
    # genres-tree.yaml: rock > heavy metal > death metal > melodic death metal. beets' tree has
    # no genre "metal": the top-level genre of every metal is "rock".
    assert beets_tree.path("Melodic Death Metal") == \
        ("rock", "heavy metal", "death metal", "melodic death metal")
    assert "metal" not in beets_tree
    assert beets_tree.path("J Pop") == ("asian", "east asian", "j-pop")
    assert beets_tree.path("HIP_HOP") == ("hip hop",)
    assert len(beets_tree) > 700


@pytest.mark.parametrize("depth, expected", [(1, "rock"), (2, "heavy metal"),
                                             (3, "death metal"), (4, "melodic death metal"),
                                             (9, "melodic death metal")])
def test_roll_up_to_the_ancestor_at_depth(beets_tree, depth, expected):
    vocab = Vocabulary.build(tree=beets_tree, depth=depth)
    assert vocab.canonical("Melodic Death Metal") == expected
    assert vocab.canonical("melodic-death-metal") == expected


def test_a_genre_shallower_than_the_depth_stays_itself(beets_tree):
    vocab = Vocabulary.build(tree=beets_tree, depth=2, observed=["Hip-Hop"])
    assert vocab.canonical("hip hop") == "Hip-Hop"
    assert vocab.canonical("Death Metal") == "heavy metal"


def test_a_genre_in_several_branches_keeps_its_first_in_file_order(beets_tree):
    # industrial metal is under electronic > industrial (line ~404) before
    # rock > heavy metal (line ~693); hardcore hip hop under east coast hip hop before directly
    # under hip hop. lastgenre's find_parents answers the first branch too.
    assert beets_tree.path("industrial metal") == \
        ("electronic", "industrial", "industrial metal")
    assert beets_tree.path("hardcore hip hop") == \
        ("hip hop", "east coast hip hop", "hardcore hip hop")
    assert Vocabulary.build(tree=beets_tree, depth=1).canonical("Industrial Metal") == \
        "electronic"


def test_a_key_without_children_is_a_genre_not_a_parent_of_none(beets_tree):
    # beets' tree ends with "- soundtrack:" (a null value); lastgenre reads a child "None"
    assert beets_tree.path("Soundtrack") == ("soundtrack",)
    assert "None" not in beets_tree


def test_aliases_apply_before_the_roll_up(beets_tree):
    vocab = Vocabulary.build({"MDM": "Melodic Death Metal", "Death Metal": "Brutal Noise"},
                             tree=beets_tree, depth=2)
    assert vocab.canonical("mdm") == "heavy metal"  # the target is rolled up
    # aliased first: rolled up first it would be "heavy metal"
    assert vocab.canonical("death-metal") == "Brutal Noise"


def test_aliases_are_one_step_and_an_empty_target_drops():
    vocab = Vocabulary.build({"Rap": "Hip Hop", "Hip Hop": "Urban", "Muzak": ""})
    assert vocab.canonical("rap") == "Hip Hop"
    assert vocab.canonical("Hip-Hop") == "Urban"
    assert vocab.canonical("MUZAK") is None
    assert vocab.canonical("   ") is None


def test_unknown_labels_are_kept(beets_tree):
    vocab = Vocabulary.build({"x": "y"}, tree=beets_tree, depth=1, observed=["Lo-Fi Yodel"])
    assert vocab.canonical("lo fi  yodel") == "Lo-Fi Yodel"
    assert vocab.canonical("  Glitch   Polka ") == "Glitch Polka"


def test_canonical_many_deduplicates_after_the_roll_up(beets_tree):
    vocab = Vocabulary.build({"hiphop": "Hip Hop"}, tree=beets_tree, depth=1,
                             observed=["Rock", "Jazz"])
    values = ["Melodic Death Metal", "hiphop", "Death Metal", "", "Jazz", "Hip-Hop",
              "Glitch Polka", "glitch-polka", "Rock"]
    assert vocab.canonical_many(values) == ["Rock", "Hip Hop", "Jazz", "Glitch Polka"]


# --- display spelling --------------------------------------------------------------------------

def test_display_spelling_is_the_librarys_most_frequent_ties_to_the_first_seen():
    vocab = Vocabulary.build(observed=["rock", "Rock", "ROCK", "Rock ", "Hip-Hop", "hip hop"])
    assert vocab.canonical("rOcK") == "Rock"
    assert vocab.canonical("HIP HOP") == "Hip-Hop"
    swapped = Vocabulary.build(observed=["hip hop", "Hip-Hop"])
    assert swapped.canonical("Hip-Hop") == "hip hop"


def test_display_spelling_alias_target_then_library_then_tree(beets_tree):
    observed = ["Heavy Metal", "heavy metal", "Heavy Metal", "Jazz", "jazz"]
    vocab = Vocabulary.build({"Jazzy": "JAZZ"}, tree=beets_tree, depth=2, observed=observed)
    assert vocab.canonical("Death Metal") == "Heavy Metal"  # library beats tree
    assert vocab.canonical("jazz") == "JAZZ"  # the user's alias target beats the library
    assert vocab.canonical("VOCAL JAZZ") == "vocal jazz"  # depth 2 already: tree spelling
    top = Vocabulary.build({"Jazzy": "JAZZ"}, tree=beets_tree, depth=1, observed=observed)
    assert top.canonical("Vocal Jazz") == "JAZZ"  # rolled up, then spelled
    assert vocab.canonical("J Pop") == "east asian"  # only the tree knows it
    no_roll_up = Vocabulary.build(tree=beets_tree)
    assert no_roll_up.canonical("J POP") == "j-pop"


def test_equivalent_alias_targets_take_the_first_spelling_deterministically():
    first = Vocabulary.build({"rap": "Hip Hop", "hiphop": "hip-hop"})
    assert first.canonical("rap") == first.canonical("hiphop") == "Hip Hop"
    again = Vocabulary.build({"rap": "Hip Hop", "hiphop": "hip-hop"})
    assert again == first


# --- settings errors ---------------------------------------------------------------------------

def test_conflicting_aliases_and_bad_depths_are_refused(beets_tree):
    with pytest.raises(ValueError, match="given twice"):
        Vocabulary.build({"Hip-Hop": "Rap", "hip hop": "Urban"})
    Vocabulary.build({"Hip-Hop": "Rap", "hip hop": "rap"})  # same genre: fine
    with pytest.raises(ValueError, match="needs a genre tree"):
        Vocabulary.build(depth=1)
    with pytest.raises(ValueError, match="1 or more"):
        Vocabulary.build(tree=beets_tree, depth=0)


# --- a user's tree file ------------------------------------------------------------------------

USER_TREE = """\
- Electronic:
    - House:
        - Deep House
        - Acid House
    - Techno
- Rock:
    - Post-Rock
    - Deep House
- Chanson:
"""


def test_a_users_tree_file(tmp_path):
    path = tmp_path / "genres.yaml"
    path.write_text(USER_TREE, encoding="utf-8")
    tree = load_tree(path)
    assert tree.path("deep house") == ("Electronic", "House", "Deep House")  # first wins
    assert tree.path("post rock") == ("Rock", "Post-Rock")
    assert tree.path("chanson") == ("Chanson",)
    assert len(tree) == 8
    vocab = Vocabulary.build(tree=tree, depth=1, observed=["electronic"])
    assert vocab.canonical_many(["Acid-House", "Techno", "POST_ROCK", "Chanson"]) == \
        ["electronic", "Rock", "Chanson"]


def test_tree_files_that_are_not_trees_are_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- Rock:\n    - [unclosed\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid YAML") as exc:
        load_tree(bad)
    assert "\n" not in str(exc.value)
    typed = tmp_path / "typed.yaml"
    typed.write_text("- Rock:\n    - yes\n", encoding="utf-8")
    with pytest.raises(ValueError, match="quote it"):
        load_tree(typed)
    with pytest.raises(FileNotFoundError):
        load_tree(tmp_path / "missing.yaml")
    assert len(tree_from_data(None)) == 0


def test_missing_beets_tree_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="install beets") as exc:
        labels.load_tree()
    assert "\n" not in str(exc.value)
