"""BPE tokenizers from tokenizer.json (bertlab.text.bpe) against transformers'
PreTrainedTokenizerFast on real SST-2 and MRPC sentences, with a small byte-level BPE trained
here on a shared public-domain text (ModernBERT's special tokens, placed after the merges as in
ModernBERT's tokenizer.json, and a [CLS] a [SEP] b [SEP] post-processor). No download."""

from __future__ import annotations

import csv
import pathlib
import pickle
import shutil

import numpy as np
import pytest

from bertlab.text.bpe import BpeTokenizer, is_tokenizer_json, load_tokenizer
from bertlab.text.tokenizer import Tokenizer
from bertlab.text.vocab import VocabError

DATA = pathlib.Path("/work/shared/data")
CORPUS = DATA / "text" / "nltk_state_union" / "1945-Truman.txt"
SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]

pytestmark = pytest.mark.skipif(not CORPUS.is_file(), reason="shared data not mounted")


def build_tokenizer_json(path: pathlib.Path, specials=SPECIALS) -> pathlib.Path:
    from tokenizers import Tokenizer as Backend, decoders, models, pre_tokenizers, processors, trainers

    backend = Backend(models.BPE(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train([str(CORPUS)], trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    backend.add_special_tokens(specials)
    if "[CLS]" in specials:
        cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    backend.save(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory) -> pathlib.Path:
    return build_tokenizer_json(tmp_path_factory.mktemp("bpe") / "tokenizer.json")


@pytest.fixture(scope="module")
def reference(tokenizer_json):
    transformers = pytest.importorskip("transformers")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json), unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]")


def glue_column(task: str, columns: tuple[int, ...], rows: int) -> list[tuple[str, ...]]:
    with open(DATA / "glue_data" / task / "dev.tsv", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [tuple(row[c] for c in columns) for _, row in zip(range(rows), reader)]


def test_special_ids_and_the_pair_layout_by_hand(tokenizer_json):
    tokenizer = BpeTokenizer.from_file(tokenizer_json)
    vocab = tokenizer.vocab
    # The specials come after the 600 merges' tokens, in the order they were added.
    assert [vocab.unk_id, vocab.cls_id, vocab.sep_id, vocab.pad_id, vocab.mask_id] == \
        [600, 601, 602, 603, 604]
    assert len(vocab) == 605 and not tokenizer.lower_case
    a, b = tokenizer.encode("the war"), tokenizer.encode("peace")
    packed = tokenizer.pack(["the war"], ["peace"], max_length=len(a) + len(b) + 5)
    expected = [601, *a, 602, *b, 602, 603, 603]
    np.testing.assert_array_equal(packed["token_ids"][0], expected)
    np.testing.assert_array_equal(packed["segment_ids"][0],
                                  [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0, 0])
    np.testing.assert_array_equal(packed["attention_mask"][0], [1] * (len(expected) - 2) + [0, 0])
    assert tokenizer.decode(tokenizer.encode("The war is over.")) == "The war is over."


def test_sst2_singles_match_transformers(tokenizer_json, reference):
    tokenizer = BpeTokenizer.from_file(tokenizer_json)
    texts = [row[0] for row in glue_column("SST-2", (0,), 200)]
    assert tokenizer.encode_batch(texts) == [reference(t, add_special_tokens=False)["input_ids"]
                                             for t in texts]
    for length in (8, 32, 128):
        ours = tokenizer.pack(texts, max_length=length)
        theirs = reference(texts, truncation=True, max_length=length, padding="max_length",
                           return_tensors="np")
        np.testing.assert_array_equal(ours["token_ids"], theirs["input_ids"])
        np.testing.assert_array_equal(ours["attention_mask"], theirs["attention_mask"])


@pytest.mark.parametrize("max_length", [17, 25, 49, 129])
def test_mrpc_pairs_match_transformers_longest_first(tokenizer_json, reference, max_length):
    """Pairs truncated longest-first. An even budget (max_length - 3) is split the same way
    by both; see the next test for the one case where they differ."""
    tokenizer = BpeTokenizer.from_file(tokenizer_json)
    pairs = glue_column("MRPC", (3, 4), 200)
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    ours = tokenizer.pack(a, b, max_length=max_length)
    theirs = reference(a, b, truncation="longest_first", max_length=max_length,
                       padding="max_length", return_tensors="np")
    np.testing.assert_array_equal(ours["token_ids"], theirs["input_ids"])
    np.testing.assert_array_equal(ours["attention_mask"], theirs["attention_mask"])


def test_odd_budget_ties_follow_the_original_bert_not_the_rust_library(tokenizer_json, reference):
    """With both texts longer than half of an odd budget, the original BERT's _truncate_seq_pair
    (our pack_ids) pops from the longer side, the second on ties, so the first keeps
    ceil(budget / 2) when it is not the longer one; the Rust library gives the shorter side (the
    first on ties) floor(budget / 2). They differ exactly when the first text is not longer
    than the second. Everything else is equal."""
    tokenizer = BpeTokenizer.from_file(tokenizer_json)
    pairs = glue_column("MRPC", (3, 4), 200)
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    ours = tokenizer.pack(a, b, max_length=128)  # budget 125
    theirs = reference(a, b, truncation="longest_first", max_length=128, padding="max_length",
                       return_tensors="np")["input_ids"]
    lengths = [(len(x), len(y)) for x, y in zip(tokenizer.encode_batch(a), tokenizer.encode_batch(b))]
    tie = np.array([62 < x <= y for x, y in lengths])
    assert tie.any() and (~tie).any()
    np.testing.assert_array_equal(ours["token_ids"][~tie], theirs[~tie])
    sep = tokenizer.vocab.sep_id
    for row in np.nonzero(tie)[0]:
        assert list(ours["token_ids"][row]).index(sep) == 1 + 63  # [CLS] + 63 of A
        assert list(theirs[row]).index(sep) == 1 + 62


def test_load_tokenizer_dispatches_on_content(tokenizer_json, tmp_path):
    renamed = tmp_path / "vocab.txt"  # what a fine-tuning export calls its vocabulary
    shutil.copyfile(tokenizer_json, renamed)
    assert is_tokenizer_json(renamed)
    assert isinstance(load_tokenizer(renamed), BpeTokenizer)
    wordpiece = tmp_path / "words.txt"
    wordpiece.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]) + "\n")
    assert isinstance(load_tokenizer(wordpiece), Tokenizer)
    tokenizer = load_tokenizer(renamed)
    again = pickle.loads(pickle.dumps(tokenizer))  # worker processes get a copy
    assert again.encode("state of the union") == tokenizer.encode("state of the union")


def test_a_tokenizer_json_without_bert_specials_is_refused(tmp_path):
    path = build_tokenizer_json(tmp_path / "tokenizer.json", specials=["<s>", "</s>", "<pad>"])
    with pytest.raises(VocabError, match=r"no \[CLS\], \[SEP\], \[PAD\], \[MASK\] token"):
        BpeTokenizer.from_file(path)
    with pytest.raises(ValueError, match="lower_case=True"):
        BpeTokenizer.from_file(path, lower_case=True)
