"""Scale-test corpora: N articles of JSONL (or Parquet, for an output named
*.parquet) with a realistic length mix.

With a source file, articles are drawn from it with replacement, given new
unique ids and lightly perturbed (a few words swapped for vocabulary words)
so that no two texts are identical and no cache can shortcut a run. Without
one, text is generated from a Zipf-weighted news vocabulary with a word-count
mix shaped like the shared real data: a fifth are short feed summaries (~30
words), the rest lognormal around 200 words, which puts the overall median
near 170 words, with a tail clipped at 2,000 words.

Everything is drawn from one seeded generator and written line by line, so
the same settings give the same bytes and memory stays flat in N.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.columnar import ParquetRowWriter, is_parquet
from distill.errors import ConfigError, DistillError
from distill.records import ReadStats, dumps_line, open_text, read_articles
from distill.settings import Settings

# Common English and news/sustainability words; Zipf weights make the first
# ones frequent, so token-per-word ratios look like prose rather than a list.
VOCABULARY = list(dict.fromkeys("""
the of and to in a is that for on with as was by it from at are be this have
has an which or its said not but were their will they more been new also one
would about after than two year first other when who there all up can out
into over last some could percent people government company million energy
climate says years such time while only world between new city state plans
report market billion new according power carbon emissions solar wind project
data research country most three public under against because project water
during since through both where officials before national first industry
global would high policy electric battery storage grid renewable hydrogen
investment costs price local support study scientists technology development
production capacity systems plant farmers change green program system region
supply chain small large economic growth environmental impact review council
european union funding program network transport vehicles charging heat pumps
buildings efficiency waste recycling forest land ocean river species biodiversity
drought flood rainfall temperature warming sea level coastal communities health
air pollution coal gas oil fossil fuels transition jobs workers union minister
agency court law rules standard targets net zero pledge commitment progress
pilot commercial scale startup firm shares investors revenue profit loss quarter
analysts estimate forecast expected increase decrease higher lower record half
week month early late north south east west central rural urban school students
hospital families residents households income prices inflation interest bank
loans bonds fund tax credit subsidy incentive auction contract tender permit
approval construction operation maintenance site area miles kilometres tonnes
megawatts gigawatts hours capacity output demand peak evening morning season
""".split()))

ZIPF_EXPONENT = 1.05


@dataclass
class CorpusSettings(Settings):
    count: int = field(default=99_000, metadata={"help": "articles to write"})
    source: Path | None = field(default=None, metadata={"help": "real articles (JSONL) to sample from; without it text is generated"})
    seed: int = field(default=0, metadata={"help": "seed of the one random generator; same seed, same file"})
    id_prefix: str = field(default="bench", metadata={"help": "ids are <prefix>-<index>, unique within the file"})
    perturb: float = field(default=0.05, metadata={"help": "share of words replaced in each sampled real article (at least one)"})
    short_share: float = field(default=0.2, metadata={"help": "generated text: share of short feed-summary articles"})
    short_median_words: int = field(default=30, metadata={"help": "generated text: median words of a short article"})
    median_words: int = field(default=200, metadata={"help": "generated text: median words of a full article"})
    sigma: float = field(default=0.6, metadata={"help": "generated text: lognormal sigma of full-article word counts"})
    min_words: int = field(default=15, metadata={"help": "generated text: fewest words an article gets"})
    max_words: int = field(default=2000, metadata={"help": "generated text: most words an article gets"})

    def problems(self) -> list[str]:
        problems = []
        if self.count < 1:
            problems.append(f"--count: must be at least 1 (got {self.count})")
        if self.source is not None and not Path(self.source).is_file():
            problems.append(f"--source: {self.source}: no such file")
        if not 0 <= self.perturb <= 1:
            problems.append(f"--perturb: must be between 0 and 1 (got {self.perturb})")
        if not 0 <= self.short_share <= 1:
            problems.append(f"--short-share: must be between 0 and 1 (got {self.short_share})")
        if not 1 <= self.min_words <= self.max_words:
            problems.append(f"--min-words/--max-words: need 1 <= min <= max (got {self.min_words}, {self.max_words})")
        if self.sigma <= 0:
            problems.append(f"--sigma: must be positive (got {self.sigma})")
        return problems


@dataclass
class CorpusStats:
    path: Path
    count: int
    seconds: float
    words: np.ndarray  # word count of every written article

    def summary_rows(self) -> list[dict]:
        words = self.words
        return [{
            "articles": self.count,
            "median words": float(np.median(words)),
            "mean words": float(words.mean()),
            "p10 words": float(np.percentile(words, 10)),
            "p90 words": float(np.percentile(words, 90)),
            "p99 words": float(np.percentile(words, 99)),
            "max words": int(words.max()),
            "seconds": self.seconds,
            "articles/s": self.count / self.seconds if self.seconds else None,
        }]


class _TextGenerator:
    """Sentences of Zipf-weighted vocabulary words, drawn in chunks for speed."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.words = np.array(VOCABULARY, dtype=object)
        weights = 1.0 / np.arange(1, len(VOCABULARY) + 1) ** ZIPF_EXPONENT
        self.p = weights / weights.sum()

    def draw(self, total: int) -> list[str]:
        return self.words[self.rng.choice(len(self.words), size=total, p=self.p)].tolist()

    def text(self, words: list[str]) -> str:
        """Words into capitalised sentences of 8–28 words, paragraphs of 2–5 sentences."""
        out: list[str] = []
        i = 0
        sentence_no = 0
        paragraph_len = int(self.rng.integers(2, 6))
        while i < len(words):
            n = int(self.rng.integers(8, 29))
            sentence = words[i:i + n]
            i += n
            sentence[0] = sentence[0].capitalize()
            out.append(" ".join(sentence) + ".")
            sentence_no += 1
            if sentence_no % paragraph_len == 0 and i < len(words):
                out.append("\n\n")
            else:
                out.append(" ")
        return "".join(out).strip()

    def title(self) -> str:
        words = self.draw(int(self.rng.integers(5, 13)))
        return " ".join(words).capitalize()


def word_counts(settings: CorpusSettings, rng: np.random.Generator, n: int) -> np.ndarray:
    """Word counts for n generated articles from the two-part lognormal mix."""
    short = rng.random(n) < settings.short_share
    medians = np.where(short, settings.short_median_words, settings.median_words)
    sigmas = np.where(short, 0.3, settings.sigma)
    counts = np.exp(np.log(medians) + sigmas * rng.standard_normal(n))
    return np.clip(np.rint(counts), settings.min_words, settings.max_words).astype(np.int64)


def _generated_records(settings: CorpusSettings, rng: np.random.Generator, words_out: np.ndarray):
    generator = _TextGenerator(rng)
    chunk = 2000
    for start in range(0, settings.count, chunk):
        n = min(chunk, settings.count - start)
        counts = word_counts(settings, rng, n)
        pool = generator.draw(int(counts.sum()))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        for j in range(n):
            index = start + j
            words_out[index] = counts[j]
            yield {
                "id": f"{settings.id_prefix}-{index:06d}",
                "title": generator.title(),
                "content": generator.text(pool[offsets[j]:offsets[j + 1]]),
            }


def _load_source(settings: CorpusSettings) -> tuple[list[tuple[str, str, str]], ReadStats]:
    """(id, title, text) of every valid source article; bad lines are skipped.

    The source is held in memory (it is sampled with replacement); only the
    output streams."""
    stats = ReadStats()
    articles = [(a.id, a.title, a.text) for a in read_articles([settings.source], rejects=[], stats=stats)]
    if not articles:
        raise DistillError(f"--source {settings.source}: no valid articles (lines rejected: {stats.rejected})")
    return articles, stats


def perturb_text(text: str, share: float, rng: np.random.Generator, vocabulary: list[str]) -> str:
    """Replace `share` of the space-separated words (at least one) by vocabulary words.

    Splitting on single spaces keeps newlines inside words, so paragraphs and
    the word count survive; only the chosen words change.
    """
    words = text.split(" ")
    if share <= 0:
        return text
    k = min(len(words), max(1, int(round(len(words) * share))))
    for position in rng.choice(len(words), size=k, replace=False):
        words[position] = vocabulary[int(rng.integers(len(vocabulary)))]
    return " ".join(words)


def _sampled_records(settings: CorpusSettings, rng: np.random.Generator, source, words_out: np.ndarray):
    picks = rng.integers(0, len(source), size=settings.count)
    for index, pick in enumerate(picks):
        origin_id, title, text = source[pick]
        content = perturb_text(text, settings.perturb, rng, VOCABULARY)
        words_out[index] = len(content.split())
        yield {
            "id": f"{settings.id_prefix}-{index:06d}",
            "title": title,
            "content": content,
            "origin_id": origin_id,
        }


def iter_corpus(settings: CorpusSettings, words_out: np.ndarray | None = None) -> Iterator[dict]:
    """The corpus records one by one; `words_out[i]` receives article i's word count."""
    settings.validate()
    rng = np.random.default_rng(settings.seed)
    words = words_out if words_out is not None else np.zeros(settings.count, dtype=np.int64)
    if settings.source is None:
        return _generated_records(settings, rng, words)
    source, _ = _load_source(settings)
    return _sampled_records(settings, rng, source, words)


def write_corpus(settings: CorpusSettings, output: str | Path) -> CorpusStats:
    """Write the corpus to a temporary file beside `output`, then rename it into place."""
    output = Path(output)
    if settings.source is not None and output.resolve() == Path(settings.source).resolve():
        raise ConfigError("--output: must not be the source file")
    start = time.perf_counter()
    words = np.zeros(settings.count, dtype=np.int64)
    records = iter_corpus(settings, words)
    output.parent.mkdir(parents=True, exist_ok=True)
    if is_parquet(output):
        _write_parquet(settings, output, records)
        return CorpusStats(output, settings.count, time.perf_counter() - start, words)
    partial = output.with_name(output.stem + ".partial" + output.suffix)  # keeps .gz last
    with open_text(partial, "w") as handle:
        for record in records:
            handle.write(dumps_line(record))
    os.replace(partial, output)
    return CorpusStats(output, settings.count, time.perf_counter() - start, words)


def _write_parquet(settings: CorpusSettings, output: Path, records: Iterator[dict]) -> None:
    """The same records as Parquet, a row group at a time (renamed into place when whole)."""
    columns = ["id", "title", "content"] + (["origin_id"] if settings.source is not None else [])
    writer = ParquetRowWriter(output, columns)
    for record in records:
        writer.append(record)
    writer.close()
