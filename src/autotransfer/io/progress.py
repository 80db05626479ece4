"""When to show a progress bar: only for work that takes more than a couple of seconds."""


def bar_disabled(progress: bool | None, n: int, threshold: int = 2000) -> bool | None:
    """tqdm's ``disable``: ``progress`` None means automatic (a bar on a terminal, for big jobs)."""
    if progress is None:
        return None if n > threshold else True  # None: tqdm shows the bar only on a terminal
    return not progress
