"""distill.progress: a bar on a terminal, a bounded number of plain lines anywhere else."""

from __future__ import annotations

import io

from distill.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_it_writes_a_line_per_tenth_and_one_at_the_end():
    stream = io.StringIO()
    with Progress(1000, "Epoch 1/4", "steps", stream=stream) as bar:
        for step in range(1000):
            bar.update(1, loss=f"{1 / (step + 1):.4f}")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10  # 10%, 20%, ... 90%, then the end
    assert lines[0].startswith("Epoch 1/4: 100/1,000 (10%) steps") and "ETA" in lines[0]
    assert lines[-1].startswith("Epoch 1/4: 1,000/1,000 (100%) steps") and "done in" in lines[-1]
    assert lines[-1].endswith("loss=0.0010")
    assert "\r" not in stream.getvalue()


def test_a_few_big_jumps_and_a_resume_still_give_few_lines():
    stream = io.StringIO()
    with Progress(50, "scoring", "articles", stream=stream, initial=20) as bar:
        bar.advance_to(21)
        bar.advance_to(49)
        bar.advance_to(30)  # never backwards
        bar.advance_to(50)
    lines = stream.getvalue().splitlines()
    assert lines == [lines[0], lines[1]] and lines[0].startswith("scoring: 49/50 (98%)")
    assert lines[1].startswith("scoring: 50/50 (100%)")


def test_small_totals_and_unknown_totals_are_bounded():
    stream = io.StringIO()
    with Progress(3, "Epoch 2/2", "steps", stream=stream) as bar:
        for _ in range(3):
            bar.update()
    assert len(stream.getvalue().splitlines()) == 3  # 33%, 67%, the end

    stream = io.StringIO()
    with Progress(None, "labelling", "articles", stream=stream) as bar:
        for _ in range(500):
            bar.update(1, spend="$0.0100")
    assert stream.getvalue().splitlines() == [stream.getvalue().splitlines()[0]]
    assert stream.getvalue().startswith("labelling: 500 articles") and "spend=$0.0100" in stream.getvalue()


def test_disabled_writes_nothing_and_a_terminal_gets_the_bar():
    stream = io.StringIO()
    with Progress(10, "x", stream=stream, enabled=False) as bar:
        bar.update(10)
    assert stream.getvalue() == ""

    terminal = Terminal()
    with Progress(10, "Epoch 1/1", "steps", stream=terminal) as bar:
        for _ in range(10):
            bar.update(1, loss="0.5")
    assert "\r" in terminal.getvalue() and "10/10" in terminal.getvalue()  # tqdm redraws in place
