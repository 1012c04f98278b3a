"""Shared fixtures: real small files from PyPI packages, tiny random models, shared data and articles."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

# Two cores are shared by everything: keep each test process to one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# `auto` backends as on a CPU without bf16 units, in this process and in every
# distill-score it starts, so results do not depend on the machine the suite runs
# on (an AMX Xeon would get bf16); tests of the per-machine choice set their own.
os.environ.setdefault("DISTILL_CPU_FLAGS", "avx2")

SHARED_LABELLED = Path(__file__).resolve().parents[2] / "shared/data/sustainability-v1/labelled.jsonl"


@pytest.fixture(scope="session")
def shared_labelled() -> Path:
    """The real labelled sustainability articles; tests needing them skip without."""
    if not SHARED_LABELLED.is_file():
        pytest.skip(f"real labelled data not present at {SHARED_LABELLED}")
    return SHARED_LABELLED


EXAMPLES = Path(__file__).resolve().parents[1] / "examples/corpus.jsonl"
FALLBACK_ROWS = 200  # the most rows any test reads from `real_articles`
COPY_SHIFT = 9  # words each further copy of an example starts later; the shortest kept has 96


@pytest.fixture(scope="session")
def real_articles(tmp_path_factory) -> Path:
    """Article records (id, title, content, url) for tests that need realistic text but no labels:
    the shared labelled file when present, else FALLBACK_ROWS rows built from examples/corpus.jsonl,
    so those tests still run on machines without ../shared."""
    if SHARED_LABELLED.is_file():
        return SHARED_LABELLED
    return write_jsonl(tmp_path_factory.mktemp("articles") / "articles.jsonl", example_rows(FALLBACK_ROWS))


def example_rows(count: int) -> list[dict]:
    """`count` rows cycling through the example articles; the n-th copy of one gets the id `ID~n`
    and its words rotated by COPY_SHIFT per copy, since a verbatim repeat would score exactly like
    its original and tests check that per-article outputs differ."""
    articles = example_articles()
    rows = []
    for index in range(count):
        copy, position = divmod(index, len(articles))
        article = articles[position]
        words = article["content"].split(" ")  # single spaces: paragraph breaks survive the rotation
        shift = copy * COPY_SHIFT
        row = dict(article, content=" ".join(words[shift:] + words[:shift]))
        if copy:
            row["id"] = f"{article['id']}~{copy + 1}"
        row.setdefault("url", f"https://example.org/articles/{row['id']}")
        rows.append(row)
    return rows


def example_articles() -> list[dict]:
    """The valid examples that sustainability/v1's prefilter passes: the labelled file holds only
    articles distill-label let through, and tests count the blocked ones as those they add."""
    from distill.filter_spec import load_filter
    from distill.prefilter import PASSED, Prefilter
    from distill.records import Article

    prefilter = Prefilter(load_filter("sustainability/v1"))
    articles, seen = [], set()
    for line in EXAMPLES.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the examples hold an empty and a malformed line on purpose
        if not record.get("content") or record["id"] in seen:
            continue
        seen.add(record["id"])
        if prefilter.check(Article(record["id"], record["content"], record.get("title", ""))) == PASSED:
            articles.append(record)
    return articles


@pytest.fixture(scope="session")
def qwen_tokenizer_dir() -> Path:
    pytest.importorskip("transformers")
    from distill.local_models import qwen_tokenizer_dir

    return qwen_tokenizer_dir()


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    pytest.importorskip("transformers")
    from distill.local_models import minilm_dir

    return minilm_dir()


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory, qwen_tokenizer_dir) -> Path:
    """A 2-layer, hidden-64 random Qwen2 with the real Qwen tokenizer, saved as an HF folder."""
    import shutil

    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-qwen")
    config = Qwen2Config(
        vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, pad_token_id=151643, num_labels=8, problem_type="regression",
    )
    Qwen2ForSequenceClassification(config).save_pretrained(folder)
    for item in Path(qwen_tokenizer_dir).iterdir():
        shutil.copy(item, folder / item.name)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_dir) -> Path:
    """A 2-layer, hidden-64 random BERT with the real MiniLM tokenizer."""
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=512, num_labels=8, problem_type="regression",
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(minilm_dir) / name).exists():
            shutil.copy(Path(minilm_dir) / name, folder / name)
    return folder


def first_rows(path: Path, count: int) -> list[dict]:
    """The first `count` records of a JSONL file, parsed."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in itertools.islice(handle, count)]


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows may be dicts (dumped) or raw strings (written as is, for bad-line tests)."""
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def tiny_student(tmp_path_factory, tiny_bert_dir: Path, info, name: str = "student") -> Path:
    """A student folder: the tiny random BERT from `tiny_bert_dir` with `info` as its distill.json."""
    import shutil

    from distill.artifact import write_info

    folder = tmp_path_factory.mktemp(name)
    shutil.copytree(tiny_bert_dir, folder, dirs_exist_ok=True)
    write_info(folder, info)
    return folder


def move_from_init(model, head_shift: float) -> None:
    """Shift the regression head and draw LoRA B (zero at init) as training would, so a
    test can tell a saved or merged model from a fresh one."""
    import torch

    from distill.student.heads import head_state

    with torch.no_grad():
        for tensor in head_state(model).values():
            tensor.add_(head_shift)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
