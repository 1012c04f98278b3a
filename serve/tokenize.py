"""Student tokenisation, in the main process or in worker processes ahead of the model.

An article becomes `article_text(title, body)` and then token ids through
the student's own `distill.student.encode.encode_texts` (one batch call of
`tokenizers` over the folder's tokenizer.json, so scoring needs no
transformers; head + tail cut to the student's `max_tokens` counting special
tokens), so the scorer can never drift from what the student was trained on.
Text past a generous character bound is cut first (`clip_chars`), which leaves the ids
unchanged and keeps a 50 MB article from taking minutes and gigabytes.

Workers are spawned (not forked: the parent may hold torch and OpenMP
threads) and each loads the tokenizer once. `TokenizerPool.submit` returns a
future; the runner keeps a bounded number in flight, which is the bounded
queue between reading and the model.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from distill.errors import DistillError
from distill.student.encode import encode_texts
from distill.student.fast_tokenizer import has_fast_tokenizer, load_fast_tokenizer
from distill.truncation import clip_chars


class StudentEncoder:
    """Texts -> token id lists exactly as the student saw them in training."""

    def __init__(self, tokenizer_dir: str | Path, max_tokens: int, head_share: float):
        self.tokenizer = student_tokenizer(tokenizer_dir)
        self.max_tokens = max_tokens
        self.head_share = head_share

    def encode(self, texts: list[str]) -> list[list[int]]:
        # A huge article is cut to a character bound first: the ids come out the same, in bounded time.
        clipped = [clip_chars(text, self.max_tokens, self.head_share) for text in texts]
        return encode_texts(self.tokenizer, clipped, self.max_tokens, self.head_share)


def student_tokenizer(folder: str | Path) -> Any:
    """tokenizer.json through `tokenizers` (no transformers needed), else AutoTokenizer."""
    if has_fast_tokenizer(folder):
        return load_fast_tokenizer(folder)
    from distill.student.load import load_tokenizer

    tokenizer = load_tokenizer(folder)
    # Whole articles are tokenised before the head + tail cut; silence the
    # "longer than the model's maximum" warning that this would trigger.
    tokenizer.model_max_length = 1 << 30
    return tokenizer


_worker_encoder: StudentEncoder | None = None


def _init_worker(tokenizer_dir: str, max_tokens: int, head_share: float) -> None:
    global _worker_encoder
    _worker_encoder = StudentEncoder(tokenizer_dir, max_tokens, head_share)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    # A SIGKILLed runner cannot shut its pool down, and a worker blocked on the
    # task queue would wait forever: leave as soon as the parent is gone.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _encode_in_worker(texts: list[str]) -> tuple[list[list[int]], float]:
    start = time.perf_counter()
    ids = _worker_encoder.encode(texts)
    return ids, time.perf_counter() - start


class TokenizerPool:
    """`submit(texts)` -> Future of (token ids, seconds spent tokenising)."""

    def __init__(self, tokenizer_dir: str | Path, max_tokens: int, head_share: float, workers: int):
        self.workers = workers
        args = (str(tokenizer_dir), max_tokens, head_share)
        if workers == 0:
            self._inline = StudentEncoder(*args)
            self._pool = None
        else:
            self._inline = None
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=args,
            )
            # Workers spawn on the first task: start them now, while the model loads.
            for _ in range(workers):
                self._pool.submit(_encode_in_worker, ["warm up"])

    def submit(self, texts: list[str]) -> Future:
        if self._pool is not None:
            return self._pool.submit(_encode_in_worker, texts)
        future: Future = Future()
        start = time.perf_counter()
        future.set_result((self._inline.encode(texts), time.perf_counter() - start))
        return future

    @staticmethod
    def result(future: Future) -> tuple[list[list[int]], float]:
        try:
            return future.result()
        except BrokenProcessPool:
            raise DistillError("a tokenizer worker process died (out of memory?); rerun to resume") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> TokenizerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
