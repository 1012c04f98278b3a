"""distill-bench corpus: count, unique ids, length mix, determinism, sampling from real text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_jsonl

from distill.benchmarks.cli import main
from distill.benchmarks.corpus import CorpusSettings, write_corpus
from distill.errors import ConfigError
from distill.records import read_articles


def read_back(path: Path) -> list:
    rejects: list = []
    articles = list(read_articles([path], rejects=rejects))
    assert rejects == []
    return articles


def test_generated_corpus_has_the_count_unique_ids_and_a_news_length_mix(tmp_path):
    stats = write_corpus(CorpusSettings(count=6000, seed=1), tmp_path / "c.jsonl")
    articles = read_back(tmp_path / "c.jsonl")
    assert len(articles) == 6000 == stats.count
    assert len({a.id for a in articles}) == 6000
    words = np.array([len(a.text.split()) for a in articles])
    assert (words == stats.words).all()
    assert 140 <= np.median(words) <= 200  # news-like median near 170 words
    assert 0.1 <= np.mean(words < 60) <= 0.3  # the short feed-summary share
    assert words.max() <= 2000 and np.percentile(words, 99) > 600  # a long tail, clipped
    assert all(a.title for a in articles[:50])


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        write_corpus(CorpusSettings(count=300, seed=seed), tmp_path / f"{name}.jsonl")
    a, b, c = ((tmp_path / f"{n}.jsonl").read_bytes() for n in "abc")
    assert a == b
    assert a != c


def test_gzip_output_reads_back(tmp_path):
    write_corpus(CorpusSettings(count=50), tmp_path / "c.jsonl.gz")
    assert len(read_back(tmp_path / "c.jsonl.gz")) == 50
    assert not list(tmp_path.glob("*partial*"))


def test_sampling_real_articles_gives_new_ids_and_perturbed_texts(tmp_path):
    source_rows = [
        {"id": f"src-{i}", "title": f"Title {i}", "content": " ".join(f"w{i}x{j}" for j in range(30 + 10 * i))}
        for i in range(5)
    ]
    source = write_jsonl(tmp_path / "src.jsonl", source_rows + ["not json"])
    write_corpus(CorpusSettings(count=200, source=source, seed=3), tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 200 and len({r["id"] for r in rows}) == 200
    originals = {r["id"]: r for r in source_rows}
    assert {r["origin_id"] for r in rows} == set(originals)  # every source article drawn
    for row in rows:
        original = originals[row["origin_id"]]["content"]
        assert row["content"] != original
        assert len(row["content"].split()) == len(original.split())
        changed = sum(a != b for a, b in zip(row["content"].split(), original.split(), strict=True))
        assert 1 <= changed <= 0.1 * len(original.split()) + 1


def test_cli_writes_the_corpus_and_a_stats_table(tmp_path, capsys):
    main(["corpus", "-o", str(tmp_path / "c.jsonl"), "--count", "120",
          "--output-dir", str(tmp_path / "results"), "--tag", "t"])
    assert len(read_back(tmp_path / "c.jsonl")) == 120
    result = json.loads((tmp_path / "results/corpus-t.json").read_text())
    assert result["rows"][0]["articles"] == 120
    assert result["machine"]["cores"] >= 1 and result["machine"]["cpu"]
    assert "--count 120" in result["command"]
    assert "| articles |" in (tmp_path / "results/corpus-t.md").read_text()
    assert "median words" in capsys.readouterr().out


def test_bad_settings_are_reported_together(tmp_path):
    with pytest.raises(ConfigError) as error:
        CorpusSettings(count=0, perturb=2, source=tmp_path / "missing.jsonl").validate()
    message = str(error.value)
    assert "--count" in message and "--perturb" in message and "--source" in message


def test_cli_turns_a_bad_setting_into_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["corpus", "-o", str(tmp_path / "c.jsonl"), "--count", "0", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--count: must be at least 1" in capsys.readouterr().err
