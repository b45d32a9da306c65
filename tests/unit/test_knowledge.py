"""Linguistic probes (evaluation/knowledge.py) and their dataset readers (evaluation/knowledge_data.py).

The math runs on a tiny model with a hand-made vocabulary whose embeddings and output bias are set so that the
answers are known: PLL against a hand computation, cosine ranks -> Spearman = +/-1, 3CosAdd analogies, cloze ranks.
The readers run on small files written here and, when the data root exists, on the real files (counts from each
folder's SOURCES.md).
"""

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from mini_bert.config import CLS_ID, MASK_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID
from mini_bert.core.model import MiniBERT
from mini_bert.evaluation import knowledge as K
from mini_bert.evaluation import knowledge_data as kd
from mini_bert.data.readers import DataError
from mini_bert.data.tokenizer import WordPieceTokenizer
from mini_bert.data.sources import data_root

WORDS = ["the", "cat", "dog", "sat", "ran", "king", "queen", "man", "woman", "paris", "france", "rome", "italy",
         "berlin", "germany", "is", "in", "a", "##s"]
D = 32


@pytest.fixture(scope="module")
def tok():
    return WordPieceTokenizer(SPECIAL_TOKENS + WORDS, lowercase=True)


def _model(tok, seed=0):
    cfg = dict(vocab_size=tok.vocab_size, hidden_size=D, num_layers=1, num_heads=2, intermediate_size=32,
               max_position_embeddings=16, dropout=0.0, attention_dropout=0.0)
    return MiniBERT(cfg, seed=seed)


@pytest.fixture(scope="module")
def model(tok):
    return _model(tok)


def _id(tok, word):
    return tok.token_to_id(word)


def _write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _blimp_line(good, bad, uid, term, pid):
    return json.dumps({"sentence_good": good, "sentence_bad": bad, "field": "syntax", "linguistics_term": term,
                       "UID": uid, "pairID": str(pid)})


# ----------------------------------------------------------------------------------------------------------------
# Pseudo-log-likelihood and BLiMP


def test_pll_equals_hand_computation(tok, model):
    ids = tok.encode("the cat sat")
    assert len(ids) == 3
    by_hand = 0.0
    for i in range(3):
        row = np.array([[CLS_ID] + ids + [SEP_ID]])
        row[0, i + 1] = MASK_ID
        logits, _ = model.forward(row)                          # full (1, T, V) logits: a different code path
        z = logits[0, i + 1].astype(np.float64)
        by_hand += z[ids[i]] - (z.max() + np.log(np.exp(z - z.max()).sum()))
    got = K.pseudo_log_likelihoods(model, [ids])
    assert got.shape == (1,)
    np.testing.assert_allclose(got[0], by_hand, rtol=1e-5)


def test_pll_does_not_depend_on_batching(tok, model):
    sents = [tok.encode(s) for s in ["the cat sat", "a dog ran in paris", "king", "the queen is in rome", "cat"]]
    together = K.pseudo_log_likelihoods(model, sents, tokens_per_pass=10_000)      # padded into one pass
    alone = np.array([K.pseudo_log_likelihoods(model, [s])[0] for s in sents])
    np.testing.assert_allclose(together, alone, rtol=1e-5)
    small = K.pseudo_log_likelihoods(model, sents, tokens_per_pass=8)               # one sentence per pass
    np.testing.assert_allclose(small, alone, rtol=1e-5)
    assert np.all(together < 0)
    assert K.pseudo_log_likelihoods(model, [[]])[0] == 0.0


def test_identical_sentences_tie_exactly_and_ties_count_half(tok, model):
    s = tok.encode("the dog sat")
    pll = K.pseudo_log_likelihoods(model, [s, tok.encode("a cat"), s])
    assert pll[0] == pll[2]
    credit = K.pair_credit(np.array([-1.0, -3.0, -2.0]), np.array([-2.0, -1.0, -2.0]))
    np.testing.assert_array_equal(credit, [1.0, 0.0, 0.5])


def test_pll_rejects_a_sentence_longer_than_the_model(tok, model):
    with pytest.raises(ValueError, match="max_position_embeddings"):
        K.pseudo_log_likelihoods(model, [[_id(tok, "cat")] * 20])


def test_prepare_text_strips_final_punctuation_only_for_ptb_style():
    assert K.prepare_text("Who should Derek hug?", True) == "Who should Derek hug"
    assert K.prepare_text(" The cat sat . ", True) == "The cat sat"
    assert K.prepare_text("The cat sat.", False) == "The cat sat."
    assert K.prepare_text("[X] was born in [MASK] .", True) == "[X] was born in [MASK]"


def test_blimp_probe_prefers_the_word_the_model_favours(tok, tmp_path):
    """A large output bias for "cat" makes every sentence with "cat" likelier than the same one with "dog"."""
    model = _model(tok)
    model.params["b_decoder"][_id(tok, "cat")] = 8.0
    folder = tmp_path / "blimp" / "data"
    _write_lines(folder / "agree_1.jsonl", [
        _blimp_line("The cat sat.", "The dog sat.", "agree_1", "agreement", 0),
        _blimp_line("A cat ran.", "A dog ran.", "agree_1", "agreement", 1),
        _blimp_line("The king sat.", "The king sat.", "agree_1", "agreement", 2)])     # identical: skipped
    _write_lines(folder / "agree_2.jsonl", [
        _blimp_line("The dog ran.", "The cat ran.", "agree_2", "agreement", 0)])
    _write_lines(folder / "island_1.jsonl", [
        _blimp_line("Paris is in France.", "Paris is in France.", "island_1", "island_effects", 0),
        _blimp_line("The cat is in Rome.", "The dog is in Rome.", "island_1", "island_effects", 1)])
    r = K.probe_syntactic_knowledge(model, tok, data_dir=tmp_path)
    assert r["skipped_identical"] == 2
    assert r["paradigms"]["agree_1"] == {"pairs": 2, "accuracy": 1.0, "ties": 0, "term": "agreement"}
    assert r["paradigms"]["agree_2"]["accuracy"] == 0.0
    assert r["terms"]["agreement"]["pairs"] == 3 and r["terms"]["agreement"]["paradigms"] == 2
    assert r["terms"]["agreement"]["accuracy"] == pytest.approx(2 / 3)
    assert r["overall"]["pairs"] == 4 and r["overall"]["accuracy"] == pytest.approx(3 / 4)
    assert r["macro_accuracy"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert r["fields"]["syntax"]["pairs"] == 4

    one = K.probe_syntactic_knowledge(model, tok, data_dir=tmp_path, paradigms=["agree_1"],
                                      max_pairs_per_paradigm=1)
    assert one["overall"]["pairs"] == 1 and list(one["paradigms"]) == ["agree_1"]


def test_blimp_pll_matches_direct_scoring_of_prepared_text(tok, model, tmp_path):
    _write_lines(tmp_path / "blimp" / "data" / "p.jsonl",
                 [_blimp_line("The queen sat.", "The queen sat in.", "p", "t", 0)])
    pairs = kd.load_blimp(tmp_path)["p"]
    s = K.score_minimal_pairs(model, tok, pairs)
    direct = K.pseudo_log_likelihoods(model, [tok.encode("the queen sat"), tok.encode("the queen sat in")])
    np.testing.assert_allclose([s["good"][0], s["bad"][0]], direct)


# ----------------------------------------------------------------------------------------------------------------
# Word vectors, similarity, analogies


def _geometry_model(tok):
    """Input embeddings with known geometry: every word its own axis, except the analogy words, which are sums of
    shared axes (royal, male, female, capital, one per country)."""
    model = _model(tok)
    E = model.params["E_token"]
    E[...] = 0.0
    axis = {w: i for i, w in enumerate(["royal", "male", "female", "capital", "fr", "it", "de"])}
    basis = np.eye(D, dtype=np.float32)
    spec = {"king": ["royal", "male"], "queen": ["royal", "female"], "man": ["male"], "woman": ["female"],
            "paris": ["capital", "fr"], "france": ["fr"], "rome": ["capital", "it"], "italy": ["it"],
            "berlin": ["capital", "de"], "germany": ["de"]}
    free = len(axis)
    for i, tok_str in enumerate(tok.vocab):
        if tok_str in spec:
            E[i] = sum(basis[axis[a]] for a in spec[tok_str])
        elif i >= len(SPECIAL_TOKENS):
            E[i] = basis[free]
            free += 1
    return model


def test_embedding_vector_is_the_mean_of_subword_embeddings(tok, model):
    vecs, all_unk = K.word_vectors(model, tok, ["cats", "cat", "zebra"], "embedding")
    E = model.params["E_token"]
    np.testing.assert_allclose(vecs[0], (E[_id(tok, "cat")] + E[_id(tok, "##s")]) / 2, rtol=1e-6)
    np.testing.assert_allclose(vecs[1], E[_id(tok, "cat")])
    np.testing.assert_allclose(vecs[2], E[UNK_ID])
    assert all_unk.tolist() == [False, False, True]


def test_contextual_vector_is_the_mean_of_the_words_last_hidden_states(tok, model):
    words = ["cats", "king", "queen"]
    vecs, _ = K.word_vectors(model, tok, words, "contextual")       # different lengths: padded in one pass
    for w, v in zip(words, vecs):
        ids = tok.encode(w)
        h, _ = model.encode(np.array([[CLS_ID] + ids + [SEP_ID]]))
        np.testing.assert_allclose(v, h[0, 1:1 + len(ids)].mean(0), rtol=1e-5, atol=1e-6)


def test_spearman_of_a_monotone_set_is_one():
    x = np.arange(10.0)
    assert K._spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert K._spearman(x, -x ** 3) == pytest.approx(-1.0)
    assert K._spearman(x, np.ones(10)) is None
    assert K._spearman([1.0], [2.0]) is None


def test_word_similarity_known_cosine_order_and_coverage(tok):
    model = _geometry_model(tok)
    # cos(king, queen) = 0.5, cos(king, man) = 0.7071, cos(king, king) = 1, cos(king, dog) = 0
    pairs = [kd.WordPair("king", "queen", 5.0), kd.WordPair("King", "man", 7.0), kd.WordPair("king", "king", 9.0),
             kd.WordPair("king", "dog", 1.0), kd.WordPair("zebra", "king", 3.0),     # zebra -> [UNK]: not covered
             kd.WordPair("cats", "cat", 8.0)]                                        # covered, not in-vocab
    r = K.word_similarity(model, tok, pairs, ("embedding",))
    assert r["pairs"] == 6 and r["covered"] == 5 and r["coverage"] == pytest.approx(5 / 6)
    assert r["in_vocab"] == 4 and r["in_vocab_fraction"] == pytest.approx(4 / 6)
    assert r["spearman_in_vocab"]["embedding"] == pytest.approx(1.0)
    # cos(cats, cat) = mean(cat, ##s) . cat = 1/sqrt(2), tied with cos(king, man): rho < 1 only through that tie
    expected = spearmanr([5.0, 7.0, 9.0, 1.0, 8.0], [0.5, 2 ** -0.5, 1.0, 0.0, 2 ** -0.5]).statistic
    assert r["spearman"]["embedding"] == pytest.approx(expected) and expected < 1.0

    flipped = [kd.WordPair(p.word1, p.word2, -p.score) for p in pairs[:4]]
    assert K.word_similarity(model, tok, flipped, ("embedding",))["spearman"]["embedding"] == pytest.approx(-1.0)


def test_solve_analogies_3cosadd_excludes_question_words():
    # rows: 0 a=(1,0,0) 1 b=(1,1,0) 2 c=(0,0,1) 3 d=(0,1,1) 4 near-b=(1,1,0.1)
    V = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1], [1, 1, 0.1]], dtype=np.float32)
    answers = K.solve_analogies(V, np.array([[0, 1, 2], [2, 3, 0]]))
    assert answers.tolist() == [3, 1]         # b - a + c = (0,1,1); d - c + a = (1,1,0) -> b (rows 2, 3, 0 excluded)
    # b is nearly a, so b^ - a^ + c^ is nearly c^: c itself would win (cos ~0.995 vs 0.986) were it not excluded
    V = np.array([[1, 0, 0], [1, 0.1, 0], [0, 0, 1], [0, 0.3, 1]], dtype=np.float32)
    assert K.solve_analogies(V, np.array([[0, 1, 2]])).tolist() == [3]


def test_analogy_probe_on_known_geometry(tok, tmp_path):
    model = _geometry_model(tok)
    _write_lines(tmp_path / "word-analogy" / "questions-words.txt", [
        ": family", "man king woman queen", "king man queen woman", "man woman king dog",     # last: gold wrong
        "man king zebra queen",                                                              # OOV: not covered
        ": capital-world", "paris france rome italy", "france paris germany berlin",
        "Paris France Berlin Germany",                                                       # cased: lowercased
        ": gram8-plural", "cat cats dog dogs"])                                              # two-piece words
    r = K.probe_semantic_knowledge(model, tok, data_dir=tmp_path, tasks=("analogy",), representations=("embedding",))
    a = r["analogy"]
    assert a["candidates"] == len(WORDS) - 1                       # every word except "##s"
    fam, cap, gram = a["sections"]["family"], a["sections"]["capital-world"], a["sections"]["gram8-plural"]
    assert (fam["questions"], fam["covered"]) == (4, 3) and fam["accuracy"]["embedding"] == pytest.approx(2 / 3)
    assert (cap["covered"], cap["accuracy"]["embedding"]) == (3, 1.0)
    assert (gram["questions"], gram["covered"], gram["accuracy"]["embedding"]) == (1, 0, None)
    assert a["semantic"]["covered"] == 6 and a["semantic"]["accuracy"]["embedding"] == pytest.approx(5 / 6)
    assert a["syntactic"]["questions"] == 1 and a["syntactic"]["accuracy"]["embedding"] is None
    assert a["overall"]["questions"] == 8 and a["overall"]["coverage"] == pytest.approx(6 / 8)

    sub = K.probe_semantic_knowledge(model, tok, data_dir=tmp_path, tasks=("analogy",),
                                     representations=("embedding", "contextual"), max_questions_per_section=1)
    assert sub["analogy"]["sections"]["family"]["scored"] == 1
    assert sub["analogy"]["sections"]["family"]["covered"] == 3          # coverage still counts all questions
    assert set(sub["analogy"]["overall"]["accuracy"]) == {"embedding", "contextual"}


# ----------------------------------------------------------------------------------------------------------------
# Cloze ranks and LAMA


def _biased_model(tok, order):
    """Output bias dominates the logits: order[0] gets rank 0, order[1] rank 1, ...; [UNK] scores highest of all
    but is special, so it is never counted."""
    model = _model(tok)
    for k, w in enumerate(order):
        model.params["b_decoder"][_id(tok, w)] = 40.0 - 10.0 * k
    model.params["b_decoder"][UNK_ID] = 100.0
    return model


def test_cloze_ranks_follow_the_output_bias_and_skip_special_tokens(tok):
    model = _biased_model(tok, ["paris", "rome", "france"])
    rows = [[CLS_ID] + tok.encode("the king is in [MASK]") + [SEP_ID],
            [CLS_ID, MASK_ID, SEP_ID], [CLS_ID] + tok.encode("a [MASK] sat") + [SEP_ID]]
    ranks, top = K.cloze_ranks(model, rows, [_id(tok, "paris"), _id(tok, "rome"), _id(tok, "france")], top_k=3)
    assert ranks.tolist() == [0, 1, 2]
    assert tok.convert_ids_to_tokens(top[0]) == ["paris", "rome", "france"]
    with pytest.raises(ValueError, match="exactly one"):
        K.cloze_ranks(model, [[CLS_ID, MASK_ID, MASK_ID, SEP_ID]], [5])


def _write_lama(root):
    lama = root / "lama"
    _write_lines(lama / "relations.jsonl", [
        json.dumps({"relation": "P1", "template": "[X] is in [Y] .", "label": "located in"}),
        json.dumps({"relation": "P2", "template": "[Y] is a [X] .", "label": "reverse"})])
    _write_lines(lama / "trex_facts.tsv", [
        "predicate_id\tsub_label\tobj_label\tsub_uri\tobj_uri\tuuid",
        "P1\tThe King\tParis\tQ1\tQ2\tu1",            # rank 0
        "P1\tThe Queen\tRome\tQ1\tQ2\tu2",            # rank 1
        "P1\tA Dog\tZebra\tQ1\tQ2\tu3",               # object not in the vocabulary: does not qualify
        "P1\tA Cat\tNew York\tQ1\tQ2\tu4",            # two words: does not qualify
        "P2\tdog\tFrance\tQ1\tQ2\tu5"])               # rank 2
    _write_lines(lama / "google_re_facts.tsv", [
        "relation\tsub_label\tobj_label\tuuid\tn_masked_sentences\tfirst_masked_sentence",
        "place_of_birth\tThe King\tParis\tu\t1\tx", "place_of_death\tThe Queen\tFrance\tu\t1\tx",
        "date_of_birth\tThe King\t1840\tu\t1\tx"])
    _write_lines(lama / "squad_test.jsonl", [
        json.dumps({"masked_sentences": ["The king sat in [MASK]."], "obj_label": "Rome", "id": "s1"}),
        json.dumps({"masked_sentences": ["[MASK] is in [MASK]."], "obj_label": "Paris", "id": "s2"})])


def test_lama_probe_counts_qualifying_facts_and_precision(tok, tmp_path):
    _write_lama(tmp_path)
    model = _biased_model(tok, ["paris", "rome", "france"])
    r = K.probe_factual_knowledge(model, tok, data_dir=tmp_path)
    p1, p2 = r["trex"]["relations"]["P1"], r["trex"]["relations"]["P2"]
    assert (p1["items"], p1["qualifying"]) == (4, 2)
    assert (p1["p_at_1"], p1["p_at_10"], p1["mrr"]) == (0.5, 1.0, pytest.approx(0.75))
    assert p1["frequency_baseline_p_at_1"] == 0.5 and p1["label"] == "located in"
    assert p1["examples"][0]["query"] == "The King is in [MASK]"          # PTB-style: final " ." stripped
    assert (p2["qualifying"], p2["p_at_1"], p2["p_at_10"]) == (1, 0.0, 1.0)
    assert r["trex"]["qualifying"] == 3 and r["trex"]["items"] == 5
    assert r["trex"]["mean_p_at_1"] == pytest.approx(0.25)                  # mean over relations, as LAMA
    g = r["google_re"]["relations"]
    assert g["place_of_birth"]["p_at_1"] == 1.0 and g["place_of_death"]["p_at_1"] == 0.0
    assert g["date_of_birth"]["qualifying"] == 0 and g["date_of_birth"]["p_at_1"] is None
    assert r["google_re"]["mean_p_at_1"] == pytest.approx(0.5)
    assert (r["squad"]["items"], r["squad"]["qualifying"], r["squad"]["p_at_1"]) == (2, 1, 0.0)  # 2-[MASK] skipped

    only = K.probe_factual_knowledge(model, tok, data_dir=tmp_path, parts=("trex",), relations=["P2"])
    assert list(only["trex"]["relations"]) == ["P2"] and "squad" not in only


# ----------------------------------------------------------------------------------------------------------------
# All probes through the CLI, on a saved checkpoint


def test_cli_runs_every_probe_and_writes_json(tok, tmp_path, capsys):
    from mini_bert.config import RunConfig
    from mini_bert.training.checkpointing import save_checkpoint

    data = tmp_path / "data"
    _write_lama(data)
    _write_lines(data / "blimp" / "data" / "p.jsonl", [_blimp_line("The cat sat.", "The dog sat.", "p", "t", 0)])
    _write_lines(data / "word-analogy" / "questions-words.txt", [": family", "man king woman queen"])
    ws = data / "word-similarity"
    _write_lines(ws / "simlex-999" / "SimLex-999.txt", ["word1\tword2\tPOS\tSimLex999", "king\tqueen\tN\t8",
                                                         "cat\tdog\tN\t5", "man\tparis\tN\t1"])
    _write_lines(ws / "men" / "MEN_dataset_natural_form_full", ["word1 word2 score", "cat dog 40", "king rome 10"])
    _write_lines(ws / "wordsim353" / "combined.csv", ["Word 1,Word 2,Human (mean)", "cat,dog,7.0", "king,sat,1.0"])
    model = _model(tok)
    ckpt = save_checkpoint(tmp_path / "ckpt", RunConfig(model=model.config), model, tok)

    from mini_bert import cli
    out = tmp_path / "k.json"
    assert cli.main(["knowledge", "--checkpoint", str(ckpt), "--data-dir", str(data), "--output", str(out),
                     "--quick"]) == 0
    result = json.loads(out.read_text())
    assert result["what"] == list(K.WHAT) and result["quick"] is True
    assert result["blimp"]["overall"]["pairs"] == 1
    assert set(result["similarity"]) == {"simlex999", "men", "wordsim353"}
    assert result["analogy"]["overall"]["covered"] == 1
    assert result["lama"]["trex"]["qualifying"] == 3
    printed = capsys.readouterr().out
    assert "BLiMP" in printed and "Analogies" in printed and "LAMA" in printed


# ----------------------------------------------------------------------------------------------------------------
# Bad inputs


def test_missing_files_name_the_path_and_the_fix(tmp_path):
    for call in (lambda: kd.load_blimp(tmp_path), lambda: kd.load_word_similarity("simlex999", tmp_path),
                 lambda: kd.load_analogies(tmp_path), lambda: kd.load_trex(tmp_path),
                 lambda: kd.load_google_re(tmp_path), lambda: kd.load_lama_squad(tmp_path),
                 lambda: kd.load_lama_relations(tmp_path)):
        with pytest.raises(DataError, match="MINIBERT_DATA_DIR") as e:
            call()
        assert str(tmp_path) in str(e.value)


def test_malformed_files_name_file_and_line(tmp_path):
    _write_lines(tmp_path / "blimp" / "data" / "p.jsonl", [_blimp_line("a", "b", "p", "t", 0), "{not json"])
    with pytest.raises(DataError, match=r"p\.jsonl:2"):
        kd.load_blimp(tmp_path)
    _write_lines(tmp_path / "blimp" / "data" / "p.jsonl", [json.dumps({"sentence_good": "a"})])
    with pytest.raises(DataError, match="lacks field"):
        kd.load_blimp(tmp_path)
    with pytest.raises(DataError, match="unknown BLiMP paradigm"):
        kd.load_blimp(tmp_path, ["nope"])
    _write_lines(tmp_path / "word-analogy" / "questions-words.txt", [": s", "a b c"])
    with pytest.raises(DataError, match=r"questions-words\.txt:2.*4 words"):
        kd.load_analogies(tmp_path)
    _write_lines(tmp_path / "word-similarity" / "men" / "MEN_dataset_natural_form_full", ["h", "cat dog high"])
    with pytest.raises(DataError, match="not a number"):
        kd.load_word_similarity("men", tmp_path)
    with pytest.raises(DataError, match="unknown word-similarity set"):
        kd.load_word_similarity("simlex", tmp_path)
    _write_lama(tmp_path)
    _write_lines(tmp_path / "lama" / "relations.jsonl", [json.dumps({"relation": "P1", "template": "[X] only"})])
    with pytest.raises(DataError, match=r"\[Y\]"):
        kd.load_lama_relations(tmp_path)
    with pytest.raises(DataError, match="no T-REx facts for relation"):
        kd.load_trex(tmp_path, ["P999"])


def test_bad_arguments_raise_clear_value_errors(tok, model):
    with pytest.raises(ValueError, match="positive integer"):
        K.probe_syntactic_knowledge(model, tok, max_pairs_per_paradigm=0)
    with pytest.raises(ValueError, match="unknown probe"):
        K.parse_what("blimp,syntax")
    assert K.parse_what("lama, blimp") == ["blimp", "lama"] and K.parse_what("all") == list(K.WHAT)
    with pytest.raises(ValueError, match="unknown representation"):
        K.word_vectors(model, tok, ["cat"], "cls")
    with pytest.raises(ValueError, match="unknown LAMA part"):
        K.probe_factual_knowledge(model, tok, parts=("conceptnet",))
    with pytest.raises(ValueError, match="unknown limit"):
        K.run_knowledge_probes(model, tok, "lama", max_sentences=3)


# ----------------------------------------------------------------------------------------------------------------
# The real files (counts from each folder's SOURCES.md)

needs_data = pytest.mark.skipif(not data_root().is_dir(), reason=f"no data root at {data_root()}")


@needs_data
def test_real_blimp_has_67_paradigms_of_1000_pairs():
    data = kd.load_blimp()
    assert len(data) == 67 and all(len(v) == 1000 for v in data.values())
    pairs = [p for v in data.values() for p in v]
    assert len({p.term for p in pairs}) == 13
    assert sum(p.term == "subject_verb_agreement" for p in pairs) == 6000
    identical = sorted((p.paradigm, p.pair_id) for p in pairs if p.good == p.bad)
    assert identical == [("passive_1", 324), ("passive_1", 810)] + [("principle_A_case_2", i)
                                                                    for i in (105, 287, 372, 816, 967)]


@needs_data
def test_real_word_similarity_and_analogy_counts():
    counts = {"simlex999": 999, "men": 3000, "wordsim353": 353, "wordsim353-sim": 203, "wordsim353-rel": 252}
    for name, n in counts.items():
        assert len(kd.load_word_similarity(name)) == n, name
    simlex = kd.load_word_similarity("simlex999")
    assert (simlex[0].word1, simlex[0].word2, simlex[0].score) == ("old", "new", 1.58)
    sections = kd.load_analogies()
    assert len(sections) == 14 and sum(map(len, sections.values())) == 19544
    assert len(sections["capital-world"]) == 4524 and len(sections["gram6-nationality-adjective"]) == 1599
    assert sum(len(v) for k, v in sections.items() if not k.startswith("gram")) == 8869


@needs_data
def test_real_lama_counts_and_templates():
    facts = kd.load_trex()
    per = {}
    for f in facts:
        per[f.relation] = per.get(f.relation, 0) + 1
    assert len(facts) == 22881 and len(per) == 28
    assert (per["P19"], per["P20"], per["P101"], per["P1412"]) == (944, 953, 696, 969)
    templates = kd.load_lama_relations()
    assert len(templates) == 46 and set(per) <= set(templates)
    assert templates["P19"].template == "[X] was born in [Y] ."
    google = kd.load_google_re()
    assert len(google) == 5528 and sum(f.relation == "date_of_birth" for f in google) == 1825
    squad = kd.load_lama_squad()
    assert len(squad) == 305 and sum(c.sentence.count("[MASK]") == 1 for c in squad) == 302


@needs_data
def test_probes_run_end_to_end_on_the_real_files(tok, model):
    """Plumbing on the real formats with the tiny model (its numbers mean nothing; the counts must be right)."""
    b = K.probe_syntactic_knowledge(model, tok, paradigms=["passive_1", "anaphor_gender_agreement"],
                                    max_pairs_per_paradigm=3)
    assert b["overall"]["pairs"] == 6 and b["skipped_identical"] == 2
    assert set(b["terms"]) == {"argument_structure", "anaphor_agreement"}
    s = K.probe_semantic_knowledge(model, tok, similarity_sets=("simlex999",), max_pairs=20,
                                   max_questions_per_section=5)
    assert s["similarity"]["simlex999"]["pairs"] == 20
    assert s["analogy"]["overall"]["questions"] == 19544
    f = K.probe_factual_knowledge(model, tok, max_facts_per_relation=2)
    assert f["trex"]["items"] == 56 and len(f["trex"]["relations"]) == 28
    assert f["google_re"]["items"] == 6 and f["squad"]["items"] == 2
