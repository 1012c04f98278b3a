"""`--plan`: what a run would send and cost, without calling anything.

Input tokens are estimated at 4 characters per token of the rendered prompt
(Gemini's rule of thumb for English); output tokens are the mean of answers
already in the journal, else `--expected-output-tokens`. Keys the journal
already holds a label for cost nothing and are counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distill.filter_spec import FilterSpec
from distill.label.active import make_chooser
from distill.label.journal import Journal, call_key
from distill.label.selection import SelectionStats, oracle_text, select_articles
from distill.label.settings import LabelSettings
from distill.records import read_ids

CHARS_PER_TOKEN = 4


@dataclass
class CostPlan:
    """What a run would send and what it would cost, sync and batch."""

    selection: SelectionStats = field(default_factory=SelectionStats)
    articles: int = 0
    in_journal: int = 0  # already paid for: written from the journal, free
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_tokens_per_call: float = 0.0
    sync_cost_usd: float = 0.0
    batch_cost_usd: float = 0.0
    words_truncated: int = 0  # articles cut to the filter's oracle word budget


def make_plan(spec: FilterSpec, settings: LabelSettings, rejects=None) -> CostPlan:
    settings.validate()
    output = Path(settings.output_dir)
    done_ids = read_ids(output / "labelled.jsonl")
    journal_path = output / "journal.sqlite"
    journal = Journal(journal_path) if journal_path.exists() else None
    config = settings.generation(spec)
    plan = CostPlan()
    mean_out = journal.mean_output_tokens() if journal else None
    plan.output_tokens_per_call = mean_out or float(settings.expected_output_tokens)
    seen_keys: set[str] = set()
    chooser = make_chooser(spec, settings, output, output / "labelled.jsonl", record=False)
    articles = select_articles(spec, settings.source_files(), done_ids, settings.target_count,
                               settings.random_sample, settings.seed, plan.selection, rejects, settings.strict,
                               chooser)
    for article in articles:
        plan.articles += 1
        text = oracle_text(spec, article)
        if len(text.split()) >= spec.truncation.oracle_words:
            plan.words_truncated += 1
        key = call_key(spec.prompt_sha256, text, config)
        if key in seen_keys or (journal and journal.label(key)):
            plan.in_journal += 1
            continue
        seen_keys.add(key)
        plan.calls += 1
        plan.input_tokens += -(-len(spec.render_prompt(text)) // CHARS_PER_TOKEN)
    if journal:
        journal.close()
    plan.output_tokens = round(plan.calls * plan.output_tokens_per_call)
    p_in, p_out = settings.prices(spec)
    plan.sync_cost_usd = (plan.input_tokens * p_in + plan.output_tokens * p_out) / 1e6
    plan.batch_cost_usd = plan.sync_cost_usd * spec.oracle.batch_discount
    return plan
