"""Custom prefilter for sustainability_tech_deployment/v1.

Trusted code: distill runs this file as is when the filter loads, so only use
filter packages from people you trust. Return a block reason, or None to pass.
"""

import re

# Listicles ("10 best solar panels to buy") describe products, not deployments.
_SHOPPING = re.compile(r"^\s*(the\s+)?\d+\s+best\b|\bbuying guide\b|\bdeals? of the day\b", re.IGNORECASE)


def prefilter(article) -> str | None:
    if _SHOPPING.search(article.title or ""):
        return "shopping_guide"
    return None
