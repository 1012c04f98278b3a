"""distill-prepare on the real labelled sustainability articles, and the
word-budget truncation checked against the real Qwen tokenizer."""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import islice
from pathlib import Path

from distill.filter_spec import load_filter
from distill.prepare.dedup import normalise
from distill.prepare.pipeline import run_prepare
from distill.prepare.settings import PrepareSettings
from distill.prepare.truncate import StudentTruncation
from distill.splits import SPLITS
from distill.truncation import article_text, truncate_token_ids

SPEC = load_filter("sustainability/v1")


def test_real_labels_split_without_leaks_with_every_tier_everywhere(tmp_path, shared_labelled):
    def run(out: str) -> dict:
        settings = PrepareSettings(inputs=[shared_labelled], filter="sustainability/v1", output_dir=tmp_path / out)
        return run_prepare(settings).report

    report = run("a")
    run("b")
    for name in [f"{s}.jsonl" for s in SPLITS]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    rows = {s: [json.loads(x) for x in (tmp_path / "a" / f"{s}.jsonl").read_text().splitlines()] for s in SPLITS}
    home: dict[str, str] = {}
    for split, items in rows.items():
        for row in items:
            assert home.setdefault(row["id"], split) == split  # no id in two splits
    assert len(home) == 6689 == report["counts"]["examples"]
    # near-duplicates, recomputed from the source bodies: one split per group
    groups = defaultdict(set)
    with open(shared_labelled, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            groups[normalise(record["content"])].add(home[record["id"]])
    assert all(len(splits) == 1 for splits in groups.values())
    assert report["near_duplicates"]["groups"] > 0
    totals = {t: sum(report["splits"][s]["tiers"][t] for s in SPLITS) for t in SPEC.tier_names}
    for tier, total in totals.items():
        if total >= 3:
            assert all(report["splits"][s]["tiers"][tier] > 0 for s in SPLITS), tier
    promising = {s: report["splits"][s]["tiers"]["promising"] for s in SPLITS}
    assert report["splits"]["train"]["tiers_written"]["promising"] > promising["train"]  # oversampled
    assert 0.06 < promising["test"] / report["splits"]["test"]["examples"] < 0.09  # natural (~7%)


def test_word_budget_keeps_exactly_the_student_token_cut(shared_labelled, qwen_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir))
    budget, share = SPEC.truncation.student_tokens, SPEC.truncation.head_share
    words = StudentTruncation(budget, share)
    texts = []
    with open(shared_labelled, encoding="utf-8") as handle:
        for line in islice(handle, 2000):
            record = json.loads(line)
            text = article_text(record["title"], record["content"])
            if len(text.split()) > budget:
                texts.append(text)
    assert len(texts) >= 50
    cut = words.apply(texts)
    for full, short in zip(texts, cut, strict=True):
        direct = truncate_token_ids(tokenizer.encode(full), budget, share)
        # The seam could in theory shift one tail token ("\nword" vs " word");
        # on the real articles it never does.
        assert truncate_token_ids(tokenizer.encode(short), budget, share) == direct


def test_tokenizer_flag_cuts_in_tokens(tmp_path, qwen_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir))
    text = "Solar\n\n" + " ".join(f"panel{k}, efficiency" for k in range(400))
    cut = StudentTruncation(100, 0.8, Path(qwen_tokenizer_dir))
    [short] = cut.apply([text])
    ids = tokenizer.encode(text)
    assert short == tokenizer.decode(ids[:80] + ids[-20:])
    assert cut.describe()["unit"] == "tokens" and cut.truncated == 1
    assert cut.apply(["short text"]) == ["short text"]
